"""What every read route shares: the paged-list parameters of the contract, and answering one
entity or one page from the read model through the cache (read_through, read_api/deps.py)."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import orjson
from fastapi import Query
from psycopg import AsyncConnection
from starlette.responses import Response

from beeoclock.ids import entity_id
from beeoclock.text import printable
from commands.errors import FieldError, InvalidCommand, NotFound
from events.base import EntityState
from projections import customers, services
from projections.cache import generation_key
from projections.paging import Page, PageQuery
from read_api.deps import Reading, read_through

#: the fields some list may be ordered by (a list given another of them falls back itself)
SORT_KEYS = frozenset(customers.SORT_COLUMNS) | frozenset(services.SORT_COLUMNS)

FindOne = Callable[[AsyncConnection[Any], str, str], Awaitable[str | None]]
FindPage = Callable[[AsyncConnection[Any], str, PageQuery], Awaitable[Page]]


class PageParams:
    """The contract's paged-list parameters as a dependency; unknown parameters are ignored."""

    def __init__(self, default_size: int) -> None:
        self.default_size = default_size

    async def __call__(
        self,
        page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
        page_size: Annotated[int | None, Query(alias="pageSize", ge=1, le=1000)] = None,
        size: Annotated[int | None, Query(ge=1, le=1000)] = None,
        order_by: Annotated[str, Query(alias="orderBy")] = "updatedAt",
        order_dir: Annotated[Literal["asc", "desc"], Query(alias="orderDir")] = "desc",
        phrase: Annotated[str | None, Query(max_length=200)] = None,
        state: Annotated[list[EntityState] | None, Query()] = None,
        updated_since: Annotated[datetime | None, Query(alias="updatedSince")] = None,
        cursor: Annotated[str | None, Query(max_length=512)] = None,
    ) -> PageQuery:
        if phrase is not None:
            try:
                printable(phrase)
            except ValueError as exc:
                raise InvalidCommand(f"phrase {exc}", [FieldError("phrase", str(exc))]) from None
        if updated_since is not None and updated_since.tzinfo is None:
            updated_since = updated_since.replace(tzinfo=UTC)
        return PageQuery(
            page=page,
            page_size=page_size or size or self.default_size,
            # any other field is ignored (the contract): one cache key for all of them
            order_by=order_by if order_by in SORT_KEYS else "updatedAt",
            order_dir=order_dir,
            phrase=phrase.strip() or None if phrase else None,
            states=tuple(sorted(set(state or ()))),
            updated_since=updated_since,
            cursor=cursor,
        )


def _json(body: bytes, headers: dict[str, str] | None = None) -> Response:
    return Response(body, 200, headers, media_type="application/json")


async def one(stream: str, raw_id: str, find: FindOne, reading: Reading) -> Response:
    """One entity's DTO with its ETag; 404 when this tenant never had it."""
    key = entity_id(raw_id, stream)
    tenant = reading.tenant_id

    async def compute() -> bytes:
        async with reading.pool.connection(tenant) as conn:
            doc = await find(conn, tenant, key)
        if doc is None:
            msg = f"{stream} {key} not found"
            raise NotFound(msg)
        return doc.encode()

    body = await read_through(
        reading.cache,
        reading.gate,
        generation_key(tenant, stream, key),
        f"{tenant}:{stream}:{key}",
        reading.settings.cache_entity_ttl_s,
        compute,
    )
    return _json(body, {"ETag": f'"{_version_of(body)}"'})


def _version_of(body: bytes) -> str:
    """The `_version` of a DTO, without parsing all of it (it is a short string field)."""
    start = body.find(b'"_version":"')
    if start < 0:
        return str(orjson.loads(body)["_version"])
    start += len(b'"_version":"')
    return body[start : body.index(b'"', start)].decode()


async def page(stream: str, query: PageQuery, find: FindPage, reading: Reading) -> Response:
    """`{items, totalSize[, nextCursor]}`, cached per query under the tenant's list generation."""
    tenant = reading.tenant_id
    digest = hashlib.blake2b(repr(query).encode(), digest_size=16).hexdigest()

    async def compute() -> bytes:
        async with reading.pool.connection(tenant) as conn:
            return (await find(conn, tenant, query)).to_json()

    return _json(
        await read_through(
            reading.cache,
            reading.gate,
            generation_key(tenant, stream),
            f"{tenant}:{stream}:page:{digest}",
            reading.settings.cache_page_ttl_s,
            compute,
        )
    )
