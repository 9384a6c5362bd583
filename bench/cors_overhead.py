"""What CORS costs a request, in process: the API app as `create_app` composes it, called as
an ASGI app (no server, no network, no database: `GET /healthz`, which passes the request gate
to a route, and an API call without a token, which the gate refuses with 401), in interleaved
rounds, with BEEOCLOCK_CORS_ORIGINS empty (no CORS middleware at all) and set (a request
without `Origin`, as from a non-browser client or the same origin, and one from the allowed
origin).

    python -m bench.cors_overhead [--requests 20000] [--rounds 5]

Run it from another checkout (`PYTHONPATH=<checkout> python <this file> --modes off`) to
compare with code from before CORS existed: `off` there and `off` here are the same stack.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import logging
import secrets
import statistics
import time
from typing import Any

from beeoclock.app import create_app
from beeoclock.settings import Settings

ORIGIN = "http://localhost:4200"
PATHS = {"healthz": "/healthz", "api-401": "/api/v1/customer/paged"}


def _settings(origins: str) -> Settings:
    values: dict[str, Any] = {
        "database_url": "postgresql://unused@127.0.0.1:1/unused",
        "kafka_bootstrap_servers": "127.0.0.1:1",
        "redis_url": "redis://127.0.0.1:1/0",
        "jwt_secret": secrets.token_urlsafe(32),
        "master_key": base64.b64encode(secrets.token_bytes(32)).decode(),
        "log_level": "WARNING",
    }
    if origins:
        values["cors_origins"] = origins
    return Settings(**values)


def _scope(path: str, origin: str | None) -> dict[str, Any]:
    headers = [(b"host", b"127.0.0.1:8000"), (b"accept", b"*/*")]
    if origin:
        headers.append((b"origin", origin.encode()))
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


async def _round(app: Any, path: str, origin: str | None, requests: int) -> float:
    """Microseconds per request."""
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    started = time.perf_counter()
    for _ in range(requests):
        await app(_scope(path, origin), receive, send)
    elapsed = time.perf_counter() - started
    assert len(statuses) == requests, "every request answered"
    return elapsed / requests * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20000, help="requests per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--modes", default="off,on-no-origin,on-origin")
    args = parser.parse_args()

    logging.disable(logging.CRITICAL)  # the access log would be most of what is measured
    modes = {
        "off": ("", None),
        "on-no-origin": (ORIGIN, None),
        "on-origin": (ORIGIN, ORIGIN),
    }
    chosen = [m for m in args.modes.split(",") if m]
    apps = {m: create_app(_settings(modes[m][0])) for m in chosen}
    results: dict[tuple[str, str], list[float]] = {}

    async def run() -> None:
        for path in PATHS.values():  # warm-up: builds each middleware stack
            for mode in chosen:
                await _round(apps[mode], path, modes[mode][1], 500)
        for _ in range(args.rounds):
            for name, path in PATHS.items():
                for mode in chosen:
                    took = await _round(apps[mode], path, modes[mode][1], args.requests)
                    results.setdefault((name, mode), []).append(took)

    asyncio.run(run())
    print(f"{args.rounds} interleaved rounds of {args.requests} requests; us per request")
    print(f"{'request':<10} {'mode':<14} {'median':>8} {'min':>8} {'max':>8}")
    for (name, mode), took in results.items():
        print(
            f"{name:<10} {mode:<14} {statistics.median(took):8.1f} {min(took):8.1f} "
            f"{max(took):8.1f}"
        )
    for mode in chosen:
        layers = [getattr(m.cls, "__name__", "?") for m in apps[mode].user_middleware]
        print(f"middleware with {mode}: {layers}")


if __name__ == "__main__":
    main()
