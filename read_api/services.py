"""Service queries: GET /api/v1/service/{id} and /paged, from the read model via the cache."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from starlette.responses import Response

from beeoclock.deps import PrincipalDep, SettingsDep
from projections import services
from projections.paging import PageQuery
from read_api import history, queries
from read_api.deps import CacheDep, Consistent, PoolDep, ReadGate

router = APIRouter(prefix="/api/v1/service", tags=["service"])
STREAM = services.STREAM
GateDep = Annotated[ReadGate, Depends(Consistent(STREAM))]
QueryDep = Annotated[PageQuery, Depends(queries.PageParams(default_size=10))]


@router.get("/paged")
async def page_services(
    query: QueryDep,
    principal: PrincipalDep,
    gate: GateDep,
    pool: PoolDep,
    cache: CacheDep,
    settings: SettingsDep,
) -> Response:
    """`phrase` searches every language version's title and description; `orderBy` is
    `updatedAt` (default), `createdAt` or `order` (services without one come last ascending)."""
    return await queries.page(
        STREAM, query, services.page_services, principal, gate, pool, cache, settings
    )


@router.get("/{service_id}")
async def get_service(
    service_id: str,
    principal: PrincipalDep,
    gate: GateDep,
    pool: PoolDep,
    cache: CacheDep,
    settings: SettingsDep,
    panel: history.PanelDep,
    version: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    as_of: Annotated[datetime | None, Query(alias="asOf")] = None,
) -> Response:
    """The service now, from the read model; `version` or `asOf` (READ_AUDIT): as it was then,
    from the event store."""
    if version is not None or as_of is not None:
        moment = as_of.replace(tzinfo=UTC) if as_of and as_of.tzinfo is None else as_of
        return await history.time_travel(
            panel, history.SERVICE, principal.tenant_id, service_id, version, moment
        )
    return await queries.one(
        STREAM, service_id, services.find_service, principal, gate, pool, cache, settings
    )
