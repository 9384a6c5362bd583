"""Customer queries: GET /api/v1/customer/{id} and /paged, from the read model via the cache."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from starlette.responses import Response

from beeoclock.deps import PrincipalDep, SettingsDep
from projections import customers
from projections.paging import PageQuery
from read_api import history, queries
from read_api.deps import CacheDep, Consistent, PoolDep, ReadGate

router = APIRouter(prefix="/api/v1/customer", tags=["customer"])
STREAM = customers.STREAM
GateDep = Annotated[ReadGate, Depends(Consistent(STREAM))]
QueryDep = Annotated[PageQuery, Depends(queries.PageParams(default_size=20))]


@router.get("/paged")
async def page_customers(
    query: QueryDep,
    principal: PrincipalDep,
    gate: GateDep,
    pool: PoolDep,
    cache: CacheDep,
    settings: SettingsDep,
) -> Response:
    """`phrase` searches first and last name, email, phone and note; `orderBy` is `updatedAt`
    (default) or `createdAt`; without `state`, every state is listed (deleted too)."""
    return await queries.page(
        STREAM, query, customers.page_customers, principal, gate, pool, cache, settings
    )


@router.get("/{customer_id}")
async def get_customer(
    customer_id: str,
    principal: PrincipalDep,
    gate: GateDep,
    pool: PoolDep,
    cache: CacheDep,
    settings: SettingsDep,
    panel: history.PanelDep,
    version: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    as_of: Annotated[datetime | None, Query(alias="asOf")] = None,
) -> Response:
    """The customer now, from the read model; `version` or `asOf` (READ_AUDIT): as it was then,
    from the event store."""
    if version is not None or as_of is not None:
        moment = as_of.replace(tzinfo=UTC) if as_of and as_of.tzinfo is None else as_of
        return await history.time_travel(
            panel, history.CUSTOMER, principal.tenant_id, customer_id, version, moment
        )
    return await queries.one(
        STREAM, customer_id, customers.find_customer, principal, gate, pool, cache, settings
    )
