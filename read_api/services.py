"""Service queries: GET /api/v1/service/{id} and /paged, from the read model via the cache."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response

from projections import services
from projections.paging import PageQuery
from read_api import history, queries
from read_api.deps import READ_HEADERS, Reader, Reading

router = APIRouter(prefix="/api/v1/service", tags=["service"])
STREAM = services.STREAM
ReadingDep = Annotated[Reading, Depends(Reader(STREAM))]
QueryDep = Annotated[PageQuery, Depends(queries.PageParams(default_size=10))]


@router.get("/paged", openapi_extra=READ_HEADERS)
async def page_services(query: QueryDep, reading: ReadingDep) -> Response:
    """`phrase` searches every language version's title and description; `orderBy` is
    `updatedAt` (default), `createdAt` or `order` (services without one come last ascending)."""
    return await queries.page(STREAM, query, services.page_services, reading)


@router.get("/{service_id}", openapi_extra=READ_HEADERS)
async def get_service(
    service_id: str,
    reading: ReadingDep,
    request: Request,
    version: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    as_of: Annotated[datetime | None, Query(alias="asOf")] = None,
) -> Response:
    """The service now, from the read model; `version` or `asOf` (READ_AUDIT): as it was then,
    from the event store."""
    if version is not None or as_of is not None:
        moment = as_of.replace(tzinfo=UTC) if as_of and as_of.tzinfo is None else as_of
        panel = request.app.state.panel
        return await history.time_travel(
            panel, history.SERVICE, reading.tenant_id, service_id, version, moment
        )
    return await queries.one(STREAM, service_id, services.find_service, reading)
