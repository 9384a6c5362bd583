"""The customer read model: the projection that writes it and the queries that read it.

Rows are version-gated per customer: an event not newer than the row is a duplicate and is
skipped; an event that skips versions first folds the missing ones, read from the event store.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Protocol

import orjson
import psycopg
from psycopg import AsyncConnection

from events.base import PanelEvent, split_stream_id
from events.customer import PERSONAL_FIELDS, CustomerState, evolve
from events.timefmt import parse_iso
from projections.paging import Page, PageQuery, fetch_page

STREAM = "customer"


class MissingEvents(Protocol):
    def __call__(self, originator_id: str, after: int, before: int) -> Sequence[PanelEvent]:
        """The stored events of one entity with after < version < before, in order."""
        ...


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
    states: dict[tuple[str, str], CustomerState | None] = {}
    by_tenant: dict[str, set[str]] = {}
    for event in events:
        _, tenant_id, entity_id = split_stream_id(event.originator_id)
        by_tenant.setdefault(tenant_id, set()).add(entity_id)
    for tenant_id, ids in sorted(by_tenant.items()):
        for entity_id in ids:
            states[(tenant_id, entity_id)] = None
        for entity_id, doc in cur.execute(_LOAD, (tenant_id, sorted(ids)), prepare=True):
            states[(tenant_id, entity_id)] = CustomerState.from_dto(tenant_id, orjson.loads(doc))

    changed: set[tuple[str, str]] = set()
    for event in events:
        _, tenant_id, entity_id = split_stream_id(event.originator_id)
        key = (tenant_id, entity_id)
        state = states[key]
        version = state.version if state else 0
        if event.originator_version <= version:
            continue  # a duplicate: already applied
        if event.originator_version > version + 1:
            for earlier in missing(event.originator_id, version, event.originator_version):
                state = evolve(state, earlier)
        states[key] = evolve(state, event)
        changed.add(key)

    cur.executemany(_UPSERT, [_row(s) for k in sorted(changed) if (s := states[k])])
    return changed


def _row(state: CustomerState) -> tuple[Any, ...]:
    search = " ".join(v for f in PERSONAL_FIELDS if (v := state.personal.get(f))).lower()
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


def search_phrase(phrase: str) -> str:
    """Phones are kept as digits only, so `+48 512-345` searches for `48512345`."""
    if not _PHONE_LIKE.match(phrase):
        return phrase
    digits = re.sub(r"\D", "", phrase)
    return digits if phrase.startswith("+") or len(digits) >= 7 else phrase


async def page_customers(conn: AsyncConnection[Any], tenant_id: str, query: PageQuery) -> Page:
    if query.phrase:
        query = replace(query, phrase=search_phrase(query.phrase))
    return await fetch_page(conn, "customers", tenant_id, query, SORT_COLUMNS)
