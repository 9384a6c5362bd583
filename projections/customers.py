"""The customer read model: the projection that writes it and the queries that read it.

Rows are version-gated per customer (projections/versioned.py): an event not newer than the
row is a duplicate and is skipped; an event that skips versions first folds the missing ones,
read from the event store.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Any

import orjson
import psycopg
from psycopg import AsyncConnection, sql

from events.base import PanelEvent
from events.customer import CustomerState, evolve
from events.timefmt import parse_iso
from projections.paging import Page, PageQuery, fetch_page
from projections.versioned import (
    Key,
    MissingEvents,
    RowLayout,
    fold_batch,
    keys_param,
)

__all__ = ["STREAM", "MissingEvents", "find_customer", "page_customers", "project"]

STREAM = "customer"


TABLE = "customers"
#: shared by the live table and every rebuild of it: an erasure is never undone
TOMBSTONES = "customer_tombstones"

#: the batch's rows, locked, one index probe per key (see `keys_param`)
_LOAD = (
    "SELECT k.tenant_id, k.id, c.doc FROM unnest(%b::text[], %b::text[]) AS k(tenant_id, id) "
    "CROSS JOIN LATERAL (SELECT doc FROM {table} WHERE tenant_id = k.tenant_id AND id = k.id "
    "LIMIT 1 FOR UPDATE) c"
)
_LOAD_TOMBSTONES = (
    "SELECT t.tenant_id, t.id, t.version FROM customer_tombstones t "
    "JOIN unnest(%b::text[], %b::text[]) AS k(tenant_id, id) USING (tenant_id, id)"
)
#: a row's columns, in the order of `_row`, and their types
ROW = RowLayout(
    ("tenant_id", "id", "version", "state", "created_at", "updated_at", "search", "doc"),
    ("text", "text", "int4", "text", "timestamptz", "timestamptz", "text", "text"),
)
_REMOVE = (
    "DELETE FROM {table} c USING unnest(%b::text[], %b::text[]) AS k(tenant_id, id) "
    "WHERE c.tenant_id = k.tenant_id AND c.id = k.id RETURNING c.tenant_id, c.id"
)
_BURY = (
    "INSERT INTO customer_tombstones (tenant_id, id, version, erased_at) VALUES (%s, %s, %s, %s) "
    "ON CONFLICT (tenant_id, id) DO UPDATE SET version = GREATEST("
    "customer_tombstones.version, EXCLUDED.version)"
)


def tombstone(tenant_id: str, entity_id: str, version: int) -> CustomerState:
    """What the read model remembers of an erased customer: that it was, up to `version`."""
    return CustomerState(tenant_id, entity_id, version, {}, "", "deleted", erased=True)


def project(
    cur: psycopg.Cursor[Any],
    events: Sequence[PanelEvent],
    missing: MissingEvents,
    table: str = TABLE,
    *,
    fresh: bool = False,
) -> set[tuple[str, str]]:
    """Apply a batch of customer events inside the caller's transaction (to `table`, or a
    rebuild of it). An erased customer leaves the table for a tombstone, and a tombstone
    always wins: a row of a tombstoned customer (built before the erasure, by a replay or a
    projector that raced it) is removed as soon as any event of theirs comes by.

    `fresh`: none of the batch's customers has a row in `table` yet (a replay's bulk phase,
    which reads each customer's whole history at once): no row is read or locked, and the
    rows are written with COPY.

    Returns the (tenant, id) of every customer whose row changed."""
    name = sql.Identifier(table)
    buried: set[Key] = set()

    def load(keys: list[Key]) -> Iterator[tuple[Key, CustomerState]]:
        arrays = keys_param(keys)
        if not fresh:
            for tenant_id, entity_id, doc in cur.execute(
                sql.SQL(_LOAD).format(table=name), arrays, prepare=True
            ).fetchall():
                yield (tenant_id, entity_id), CustomerState.from_dto(tenant_id, orjson.loads(doc))
        for tenant_id, entity_id, version in cur.execute(
            _LOAD_TOMBSTONES, arrays, prepare=True
        ).fetchall():
            buried.add((tenant_id, entity_id))
            yield (tenant_id, entity_id), tombstone(tenant_id, entity_id, version)

    changed = fold_batch(events, load, evolve, missing)
    live = [state for state in changed.values() if not state.erased]
    erased = [state for key, state in changed.items() if state.erased and key not in buried]
    if live:
        ROW.write(cur, table, [_row(s) for s in live], fresh=fresh)
    removed: set[Key] = set()
    gone = sorted(buried | {(s.tenant_id, s.id) for s in erased})
    if gone and not fresh:
        removed = {
            (t, i)
            for t, i in cur.execute(
                sql.SQL(_REMOVE).format(table=name), keys_param(gone), prepare=True
            ).fetchall()
        }
    if erased:
        cur.executemany(
            _BURY, [(s.tenant_id, s.id, s.version, parse_iso(s.updated_at)) for s in erased]
        )
    return set(changed) | removed


def search_text(state: CustomerState) -> str:
    """What `phrase` searches: the full name on one line (so "anna nowak" finds Anna Nowak),
    then email, phone and note one per line, so a phrase (never multi-line) matches within
    one of them, not across two."""
    personal = state.personal
    first, last = personal.get("firstName"), personal.get("lastName")
    name = f"{first} {last}" if first and last else first or last
    lines = (name, personal.get("email"), personal.get("phone"), personal.get("note"))
    return "\n".join([v for v in lines if v]).lower()


def _row(state: CustomerState) -> tuple[Any, ...]:
    search = search_text(state)
    return (
        state.tenant_id,
        state.id,
        state.version,
        state.state,
        parse_iso(state.created_at),
        parse_iso(state.updated_at),
        search,
        orjson.dumps(state.to_dto()).decode(),
    )


SORT_COLUMNS = {"updatedAt": "updated_at", "createdAt": "created_at"}


async def find_customer(conn: AsyncConnection[Any], tenant_id: str, entity_id: str) -> str | None:
    cur = await conn.execute(
        "SELECT doc FROM customers WHERE tenant_id = %s AND id = %s",
        (tenant_id, entity_id),
        prepare=True,
    )
    row = await cur.fetchone()
    return str(row[0]) if row else None


#: a phone as people type one, whole or its start: `+48`, `(48) 512`, `+48 512-345`
_PHONE_LIKE = re.compile(r"^[+(]{0,2}[0-9][0-9 ().-]*$")


def phone_variants(phrase: str) -> tuple[str, ...]:
    """Phones are kept as digits only, so `+48 512-345` also searches for `48512345`, and
    `+48` for `48`."""
    if not _PHONE_LIKE.fullmatch(phrase):
        return ()
    digits = re.sub(r"\D", "", phrase)
    return (digits,) if digits != phrase else ()


async def page_customers(conn: AsyncConnection[Any], tenant_id: str, query: PageQuery) -> Page:
    variants = phone_variants(query.phrase) if query.phrase else ()
    return await fetch_page(conn, "customers", tenant_id, query, SORT_COLUMNS, variants)
