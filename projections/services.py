"""The service read model: the projection that writes it and the queries that read it.

Rows are version-gated per service (projections/versioned.py), like customers. Beside the
served DTO a row keeps the sort key of `order` (never NULL, see migration 005), the searchable
text of every language version, and the content hash of each banner, which the media route
looks up to find the bytes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import orjson
import psycopg
from psycopg import AsyncConnection, sql
from psycopg.types.json import Jsonb

from events.base import PanelEvent
from events.service import ServiceState, evolve
from events.timefmt import parse_iso
from projections.paging import Page, PageQuery, fetch_page
from projections.versioned import (
    Key,
    MissingEvents,
    RowLayout,
    fold_batch,
    keys_param,
)

STREAM = "service"
#: The sort key of a service without an `order`: after every order a client can give.
NO_ORDER = 2_147_483_647

TABLE = "services"

#: the batch's rows, locked, one index probe per key (see `keys_param`)
_LOAD = (
    "SELECT k.tenant_id, k.id, s.doc, s.media "
    "FROM unnest(%b::text[], %b::text[]) AS k(tenant_id, id) "
    "CROSS JOIN LATERAL (SELECT doc, media FROM {table} WHERE tenant_id = k.tenant_id "
    "AND id = k.id LIMIT 1 FOR UPDATE) s"
)
#: a row's columns, in the order of `_row`, and their types
ROW = RowLayout(
    (
        "tenant_id", "id", "version", "state", "created_at", "updated_at", "sort_order",
        "search", "media", "doc",
    ),
    (
        "text", "text", "int4", "text", "timestamptz", "timestamptz", "int4", "text", "jsonb",
        "text",
    ),
)  # fmt: skip


def project(
    cur: psycopg.Cursor[Any],
    events: Sequence[PanelEvent],
    missing: MissingEvents,
    table: str = TABLE,
    *,
    fresh: bool = False,
) -> set[tuple[str, str]]:
    """Apply a batch of service events inside the caller's transaction (to `table`, or a
    rebuild of it).

    `fresh`: none of the batch's services has a row in `table` yet (a replay's bulk phase,
    which reads each service's whole history at once): no row is read or locked, and the rows
    are written with COPY.

    Returns the (tenant, id) of every service whose row changed."""
    name = sql.Identifier(table)

    def load(keys: list[Key]) -> Iterator[tuple[Key, ServiceState]]:
        if fresh:
            return
        rows = cur.execute(sql.SQL(_LOAD).format(table=name), keys_param(keys), prepare=True)
        for tenant_id, entity_id, doc, media in rows.fetchall():
            yield (tenant_id, entity_id), ServiceState.from_dto(tenant_id, orjson.loads(doc), media)

    changed = fold_batch(events, load, evolve, missing)
    if changed:
        ROW.write(cur, table, [_row(state) for state in changed.values()], fresh=fresh)
    return set(changed)


def search_text(state: ServiceState) -> str:
    parts = []
    for version in state.details["languageVersions"]:
        parts += [version["title"], version["description"]]
    return "\n".join(p for p in parts if p).lower()  # a phrase can't span two fields


def _row(state: ServiceState) -> tuple[Any, ...]:
    order = state.order
    return (
        state.tenant_id,
        state.id,
        state.version,
        state.state,
        parse_iso(state.created_at),
        parse_iso(state.updated_at),
        NO_ORDER if order is None else order,
        search_text(state),
        Jsonb(state.media_hashes()),
        orjson.dumps(state.to_dto()).decode(),
    )


SORT_COLUMNS = {"updatedAt": "updated_at", "createdAt": "created_at", "order": "sort_order"}


async def find_service(conn: AsyncConnection[Any], tenant_id: str, entity_id: str) -> str | None:
    cur = await conn.execute(
        "SELECT doc FROM services WHERE tenant_id = %s AND id = %s",
        (tenant_id, entity_id),
        prepare=True,
    )
    row = await cur.fetchone()
    return str(row[0]) if row else None


async def find_media_hash(
    conn: AsyncConnection[Any], tenant_id: str, service_id: str, media_id: str
) -> str | None:
    """The content hash of a service's banner, if the service has that banner."""
    cur = await conn.execute(
        "SELECT media ->> %s FROM services WHERE tenant_id = %s AND id = %s",
        (media_id, tenant_id, service_id),
        prepare=True,
    )
    row = await cur.fetchone()
    return str(row[0]) if row and row[0] is not None else None


async def page_services(conn: AsyncConnection[Any], tenant_id: str, query: PageQuery) -> Page:
    return await fetch_page(conn, "services", tenant_id, query, SORT_COLUMNS)
