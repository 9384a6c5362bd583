"""Service queries: GET /api/v1/service/{id} and /paged, from the read model via the cache."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Annotated, Literal

import orjson
from fastapi import APIRouter, Depends, Query
from starlette.responses import Response

from beeoclock.deps import PrincipalDep, SettingsDep
from beeoclock.ids import entity_id
from beeoclock.text import printable
from commands.errors import FieldError, InvalidCommand, NotFound
from projections import services
from projections.cache import generation_key
from projections.paging import PageQuery
from read_api.deps import CacheDep, Consistent, PoolDep, ReadGate, read_through

router = APIRouter(prefix="/api/v1/service", tags=["service"])
STREAM = services.STREAM
GateDep = Annotated[ReadGate, Depends(Consistent(STREAM))]
State = Literal["active", "inactive", "archived", "deleted"]
DEFAULT_PAGE_SIZE = 10


def _json(body: bytes, headers: dict[str, str] | None = None) -> Response:
    return Response(body, 200, headers, media_type="application/json")


@router.get("/paged")
async def page_services(
    principal: PrincipalDep,
    gate: GateDep,
    pool: PoolDep,
    cache: CacheDep,
    settings: SettingsDep,
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
    page_size: Annotated[int | None, Query(alias="pageSize", ge=1, le=1000)] = None,
    size: Annotated[int | None, Query(ge=1, le=1000)] = None,
    order_by: Annotated[str, Query(alias="orderBy", max_length=40)] = "updatedAt",
    order_dir: Annotated[Literal["asc", "desc"], Query(alias="orderDir")] = "desc",
    phrase: Annotated[str | None, Query(max_length=200)] = None,
    state: Annotated[list[State] | None, Query()] = None,
    updated_since: Annotated[datetime | None, Query(alias="updatedSince")] = None,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> Response:
    """`phrase` searches every language version's title and description; `orderBy` is
    `updatedAt` (default), `createdAt` or `order` (services without one come last ascending)."""
    if phrase is not None:
        try:
            printable(phrase)
        except ValueError as exc:
            raise InvalidCommand(f"phrase {exc}", [FieldError("phrase", str(exc))]) from None
    query = PageQuery(
        page=page,
        page_size=page_size or size or DEFAULT_PAGE_SIZE,
        order_by=order_by,
        order_dir=order_dir,
        phrase=phrase.strip() or None if phrase else None,
        states=tuple(sorted(set(state or ()))),
        updated_since=(
            updated_since.replace(tzinfo=UTC)
            if updated_since and updated_since.tzinfo is None
            else updated_since
        ),
        cursor=cursor,
    )
    tenant = principal.tenant_id
    digest = hashlib.blake2b(repr(query).encode(), digest_size=16).hexdigest()
    value_key = f"{tenant}:{STREAM}:page:{digest}"

    async def compute() -> bytes:
        async with pool.connection() as conn:
            return (await services.page_services(conn, tenant, query)).to_json()

    return _json(
        await read_through(
            cache,
            gate,
            generation_key(tenant, STREAM),
            value_key,
            settings.cache_page_ttl_s,
            compute,
        )
    )


@router.get("/{service_id}")
async def get_service(
    service_id: str,
    principal: PrincipalDep,
    gate: GateDep,
    pool: PoolDep,
    cache: CacheDep,
    settings: SettingsDep,
) -> Response:
    entity_id(service_id, "service")
    tenant = principal.tenant_id
    value_key = f"{tenant}:{STREAM}:{service_id}"

    async def compute() -> bytes:
        async with pool.connection() as conn:
            doc = await services.find_service(conn, tenant, service_id)
        if doc is None:
            msg = f"service {service_id} not found"
            raise NotFound(msg)
        return doc.encode()

    body = await read_through(
        cache,
        gate,
        generation_key(tenant, STREAM, service_id),
        value_key,
        settings.cache_entity_ttl_s,
        compute,
    )
    version = orjson.loads(body)["_version"]
    return _json(body, {"ETag": f'"{version}"'})
