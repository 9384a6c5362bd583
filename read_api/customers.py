"""Customer queries: GET /api/v1/customer/{id} and /paged, from the read model via the cache."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response

from projections import customers
from projections.paging import PageQuery
from read_api import history, queries
from read_api.deps import READ_HEADERS, Reader, Reading

router = APIRouter(prefix="/api/v1/customer", tags=["customer"])
STREAM = customers.STREAM
ReadingDep = Annotated[Reading, Depends(Reader(STREAM))]
QueryDep = Annotated[PageQuery, Depends(queries.PageParams(default_size=20))]


@router.get("/paged", openapi_extra=READ_HEADERS)
async def page_customers(query: QueryDep, reading: ReadingDep) -> Response:
    """`phrase` searches first and last name, email, phone and note; `orderBy` is `updatedAt`
    (default) or `createdAt`; without `state`, every state is listed (deleted too)."""
    return await queries.page(STREAM, query, customers.page_customers, reading)


@router.get("/{customer_id}", openapi_extra=READ_HEADERS)
async def get_customer(
    customer_id: str,
    reading: ReadingDep,
    request: Request,
    version: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    as_of: Annotated[datetime | None, Query(alias="asOf")] = None,
) -> Response:
    """The customer now, from the read model; `version` or `asOf` (READ_AUDIT): as it was then,
    from the event store."""
    if version is not None or as_of is not None:
        moment = as_of.replace(tzinfo=UTC) if as_of and as_of.tzinfo is None else as_of
        return await history.time_travel(
            request.app.state.panel,
            history.CUSTOMER,
            reading.tenant_id,
            customer_id,
            version,
            moment,
        )
    return await queries.one(STREAM, customer_id, customers.find_customer, reading)
