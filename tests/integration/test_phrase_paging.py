"""A `phrase` page is answered three ways (projections/paging.py `_phrase_page`): sorted out of
the matches the trigram search found, read in the sort index's order when many rows match, or
read with LIKE alone when the phrase has no trigram. Each way gives the same totals, pages and
cursors, read as the read API reads: as `beeoclock_reader`, walled in by row-level security."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import psycopg
import pytest

from beeoclock.settings import Settings
from projections import customers, paging
from projections.paging import PageQuery
from projections.tenant_pool import TenantPool, reader_pool

NAMES = ("anna kowalska", "jan kowalski", "ewa nowak", "piotr kowal", "zofia mazur")
START = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def tenant(settings: Settings) -> str:
    """45 customers (every fifth name alike, some updated at the same instant, a few
    archived) in one tenant, and a neighbour with the same names that must never show."""
    tenant, neighbour = uuid.uuid4().hex, uuid.uuid4().hex
    with psycopg.connect(settings.database_url) as conn:
        for owner in (tenant, neighbour):
            for i in range(45):
                at = START + timedelta(minutes=i // 2)  # pairs share updated_at: ties by id
                state = "archived" if i % 7 == 0 else "active"
                conn.execute(
                    "INSERT INTO customers (tenant_id, id, version, state, created_at, "
                    "updated_at, search, doc) VALUES (%s, %s, 1, %s, %s, %s, %s, %s)",
                    (
                        owner,
                        f"c{i:03d}",
                        state,
                        START - timedelta(minutes=i),
                        at,
                        f"{NAMES[i % 5]}\n{i}@example.com",
                        orjson.dumps({"_id": f"c{i:03d}", "owner": owner}).decode(),
                    ),
                )
    return tenant


def expected(
    phrase: str, states: tuple[str, ...], order_by: str, order_dir: str, since: datetime | None
) -> list[str]:
    rows = []
    for i in range(45):
        state = "archived" if i % 7 == 0 else "active"
        recent = since is None or START + timedelta(minutes=i // 2) >= since
        if (
            phrase in f"{NAMES[i % 5]}\n{i}@example.com"
            and (not states or state in states)
            and recent
        ):
            key = START + timedelta(minutes=i // 2) if order_by == "updatedAt" else -i
            rows.append((key, f"c{i:03d}"))
    rows.sort(reverse=order_dir == "desc")
    return [entity_id for _, entity_id in rows]


def walk(settings: Settings, tenant: str, query: PageQuery, by_cursor: bool) -> list[Any]:
    """Every page of the query, by page number or by cursor: (total, ids) of each."""

    async def scenario() -> list[Any]:
        async with reader_pool(settings.database_url, max_size=1) as pool:
            tenants, pages, q = TenantPool(pool), [], query
            while True:
                async with tenants.connection(tenant) as conn:
                    page = await customers.page_customers(conn, tenant, q)
                ids = [orjson.loads(d)["_id"] for d in page.docs]
                assert all(orjson.loads(d)["owner"] == tenant for d in page.docs)
                pages.append((page.total, ids))
                if by_cursor and page.next_cursor:
                    q = PageQuery(**(vars(query) | {"cursor": page.next_cursor}))
                elif not by_cursor and ids:
                    q = PageQuery(**(vars(query) | {"page": q.page + 1}))
                else:
                    return pages

    return asyncio.run(scenario())


WAYS = {
    "sorted out of the matches": {},
    "in the sort index's order": {"SORT_MATCHES_UP_TO": -1},
    "with LIKE alone": {"_TRIGRAM": paging.re.compile(r"(?!)")},
}
QUERIES = [
    ("kowal", (), "updatedAt", "desc", None),
    ("kowal", ("active",), "updatedAt", "asc", None),
    ("anna", (), "createdAt", "desc", None),
    ("kowal", (), "updatedAt", "desc", START + timedelta(minutes=9)),
    ("nobody", (), "updatedAt", "desc", None),
]


@pytest.mark.parametrize("way", list(WAYS))
@pytest.mark.parametrize(("phrase", "states", "order_by", "order_dir", "since"), QUERIES)
def test_each_way_pages_a_phrase_alike(
    settings: Settings,
    tenant: str,
    monkeypatch: pytest.MonkeyPatch,
    way: str,
    phrase: str,
    states: tuple[str, ...],
    order_by: str,
    order_dir: str,
    since: datetime | None,
) -> None:
    for name, value in WAYS[way].items():
        monkeypatch.setattr(paging, name, value)
    query = PageQuery(
        page_size=4,
        phrase=phrase,
        states=states,
        order_by=order_by,
        order_dir=order_dir,
        updated_since=since,
    )
    want = expected(phrase, states, order_by, order_dir, since)
    for by_cursor in (False, True):
        pages = walk(settings, tenant, query, by_cursor)
        assert {total for total, _ in pages} == {len(want)}
        assert [i for _, ids in pages for i in ids] == want
        assert all(len(ids) == 4 for _, ids in pages[:-2])
