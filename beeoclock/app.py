"""Composition root of the HTTP processes: the write API, the read API, or both on one port
(the panel client has one base URL)."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
import psycopg
import redis.asyncio as aredis
from fastapi import APIRouter, FastAPI, Request
from psycopg_pool import ConnectionPool
from starlette.responses import Response

from beeoclock import consistency, errors, kafka, migrations
from beeoclock.blobs import PostgresBlobReader, PostgresBlobStore
from beeoclock.bodylimit import BodySizeLimit
from beeoclock.bootstrap import panel_application
from beeoclock.cors import Cors
from beeoclock.gate import RequestGate
from beeoclock.ratelimit import RateLimiter
from beeoclock.settings import Settings, SettingsError
from projections.cache import ReadCache
from projections.tenant_pool import TenantPool, reader_pool

log = logging.getLogger(__name__)

#: Routes that bound their own (multipart) bodies: write_api/service_media.py.
UPLOAD_PATHS = (r"^/api/v1/service/[^/]+/media/?$", r"^/api/v1/service-media/[^/]+/banners/?$")


def freeze_startup_objects() -> None:
    """Move every object alive once the process is up (modules, the app and its routes and
    models, pools, the application) out of the garbage collector's generations: a full
    collection then walks only what requests made, not the whole start-up heap each time.
    Measured: the write API's p99 at 32 clients was 149, 147 and 198 ms before, 92, 88 and
    84 ms after (three interleaved pairs of `python -m bench --only writes --duration 10`)."""
    gc.collect()
    gc.freeze()


def create_app(settings: Settings, *, write: bool = True, read: bool = True) -> FastAPI:
    settings.require("database_url", "kafka_bootstrap_servers", "redis_url", "master_key")
    problem = settings.token_settings_problem()
    if problem:
        raise SettingsError(problem)
    for warning in settings.token_settings_warnings():
        log.warning(warning)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.settings = settings
        closers: list[Any] = []
        try:
            await _open(app, settings, closers, write=write, read=read)
            freeze_startup_objects()
            yield
        finally:
            for close in reversed(closers):
                result = close()
                if asyncio.iscoroutine(result):
                    await result

    parts = [name for name, on in (("write", write), ("read", read)) if on]
    app = FastAPI(
        title="Bee O'clock panel service",
        version="1.0.0",
        summary=f"Customers and bookable services of business tenants ({' + '.join(parts)} API).",
        lifespan=lifespan,
        # the access log is the request record; FastAPI's own OpenTelemetry, unconfigured
        # here, would still look for global providers on every request
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    errors.install(app)
    # outermost last: CORS (preflights answered before anything else; only when origins are
    # set, so none costs nothing) -> the gate (request id, auth, permissions, rate limits,
    # access log, unexpected errors) -> body size limit -> the routes
    app.add_middleware(BodySizeLimit, exempt=UPLOAD_PATHS)
    app.add_middleware(RequestGate, routes=app.router.routes, settings=settings)
    if settings.cors_origin_list:
        app.add_middleware(Cors, origins=settings.cors_origin_list)
    for router in _routers(write=write, read=read):
        # the routes themselves, not an included router: FastAPI matches a request against
        # included routers through a slower path (their routes carry their full paths)
        app.router.routes.extend(router.routes)

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> Response:
        """Alive: the process answers."""
        return Response(b'{"status":"ok"}', media_type="application/json")

    @app.get("/readyz", tags=["ops"])
    async def readyz(request: Request) -> Response:
        """Ready: database reachable and migrated, broker and cache reachable."""
        broker = await asyncio.to_thread(kafka.reachable, settings)
        checks = {
            "database": await asyncio.to_thread(_database_ready, settings),
            "broker": "ok" if broker else "unreachable",
            "cache": "ok" if await request.app.state.cache.ping() else "unreachable",
        }
        ok = all(v == "ok" for v in checks.values())
        body = {"status": "ok" if ok else "unavailable", "checks": checks}
        return Response(orjson.dumps(body), 200 if ok else 503, media_type="application/json")

    return app


async def _open(
    app: FastAPI, settings: Settings, closers: list[Any], *, write: bool, read: bool
) -> None:
    """The process's connections, on `app.state`; each one's closer on `closers`."""
    # the event store: commands (write); history, time travel and export (read), which a
    # read-only process does as the auditor role when one is configured
    if write:
        panel = panel_application(settings)
    else:
        audit_url = settings.audit_database_url or settings.database_url
        panel = panel_application(settings, pool_size=4, database_url=audit_url)
    app.state.panel = panel
    closers.append(panel.close)
    if write:
        # Uploaded media bytes (content-addressed), written by the synchronous routes.
        blob_pool: ConnectionPool[Any] = ConnectionPool(
            settings.database_url, min_size=1, max_size=4, open=False
        )
        blob_pool.open()
        app.state.blob_store = PostgresBlobStore(blob_pool)
        closers.append(blob_pool.close)
    if read:
        pool = reader_pool(
            settings.read_database_url or settings.database_url,
            min_size=2,
            max_size=settings.db_pool_size,
        )
        await pool.open()
        app.state.read_models = TenantPool(pool)
        app.state.positions = consistency.Positions(app.state.read_models)
        app.state.blob_reader = PostgresBlobReader(pool)
        closers.append(pool.close)
        closers.append(app.state.positions.close)  # closed first: it reads from the pool
    client = aredis.Redis.from_url(
        settings.redis_url, socket_timeout=0.5, socket_connect_timeout=0.5
    )
    app.state.cache = ReadCache(client)
    app.state.rate_limiter = RateLimiter(client)
    closers.append(client.aclose)


def _routers(*, write: bool, read: bool) -> list[APIRouter]:
    routers = []
    if write:
        from write_api.customers import router as write_customers
        from write_api.service_media import router as write_service_media
        from write_api.services import router as write_services

        routers += [write_customers, write_services, write_service_media]
    if read:
        from read_api.customers import router as read_customers
        from read_api.history import router as read_history
        from read_api.service_media import router as read_service_media
        from read_api.services import router as read_services

        routers += [read_customers, read_services, read_service_media, read_history]
    return routers


def _database_ready(settings: Settings) -> str:
    try:
        with psycopg.connect(settings.database_url, connect_timeout=2) as conn:
            current = migrations.applied_version(conn)
    except psycopg.Error as exc:
        return f"unreachable: {type(exc).__name__}"
    latest = migrations.latest_version()
    return "ok" if current >= latest else f"schema at {current}, expected {latest}"
