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
from psycopg import AsyncConnection

from events.base import PanelEvent
from events.customer import CustomerState, evolve
from events.timefmt import parse_iso
from projections.paging import Page, PageQuery, fetch_page
from projections.versioned import MissingEvents, fold_batch

__all__ = ["STREAM", "MissingEvents", "find_customer", "page_customers", "project"]

STREAM = "customer"


_LOAD = "SELECT id, doc FROM customers WHERE tenant_id = %s AND id = ANY(%s) FOR UPDATE"
_UPSERT = (
    "INSERT INTO customers (tenant_id, id, version, state, created_at, updated_at, search, doc) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (tenant_id, id) DO UPDATE SET "
    "version = EXCLUDED.version, state = EXCLUDED.state, created_at = EXCLUDED.created_at, "
    "updated_at = EXCLUDED.updated_at, search = EXCLUDED.search, doc = EXCLUDED.doc "
    "WHERE customers.version < EXCLUDED.version"
)


def project(
    cur: psycopg.Cursor[Any], events: Sequence[PanelEvent], missing: MissingEvents
) -> set[tuple[str, str]]:
    """Apply a batch of customer events inside the caller's transaction.

    Returns the (tenant, id) of every customer whose row changed."""

    def load(tenant_id: str, ids: list[str]) -> Iterator[tuple[str, CustomerState]]:
        for entity_id, doc in cur.execute(_LOAD, (tenant_id, ids), prepare=True):
            yield entity_id, CustomerState.from_dto(tenant_id, orjson.loads(doc))

    changed = fold_batch(events, load, evolve, missing)
    cur.executemany(_UPSERT, [_row(state) for state in changed.values()])
    return set(changed)


def search_text(state: CustomerState) -> str:
    """What `phrase` searches: the full name on one line (so "anna nowak" finds Anna Nowak),
    then email, phone and note one per line, so a phrase (never multi-line) matches within
    one of them, not across two."""
    personal = state.personal
    name = " ".join(v for f in ("firstName", "lastName") if (v := personal.get(f)))
    lines = [name, *(personal.get(f) for f in ("email", "phone", "note"))]
    return "\n".join(v for v in lines if v).lower()


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


_PHONE_LIKE = re.compile(r"^\+?[0-9][0-9 ().-]*[0-9]$")


def phone_variants(phrase: str) -> tuple[str, ...]:
    """Phones are kept as digits only, so `+48 512-345` also searches for `48512345`."""
    if not _PHONE_LIKE.match(phrase):
        return ()
    digits = re.sub(r"\D", "", phrase)
    return (digits,) if digits != phrase and len(digits) >= 3 else ()


async def page_customers(conn: AsyncConnection[Any], tenant_id: str, query: PageQuery) -> Page:
    variants = phone_variants(query.phrase) if query.phrase else ()
    return await fetch_page(conn, "customers", tenant_id, query, SORT_COLUMNS, variants)
