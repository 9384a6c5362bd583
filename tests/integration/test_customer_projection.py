"""The customer projection against real PostgreSQL and the real event store: version-gated,
idempotent, and it fills version gaps from the store."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import orjson
import psycopg
import pytest

from beeoclock.bootstrap import panel_application
from beeoclock.settings import Settings
from commands.application import PanelApplication
from commands.context import Meta
from commands.customer import Customer, RegisterCustomer, UpdateCustomer
from events.base import PanelEvent
from projections import customers

T0 = datetime(2025, 1, 1, tzinfo=UTC)


@pytest.fixture
def app(settings: Settings) -> Iterator[PanelApplication]:
    application = panel_application(settings)
    yield application
    application.close()


def history(app: PanelApplication, tenant: str, updates: int) -> tuple[str, list[PanelEvent]]:
    """A customer with 1 + `updates` events in the store; returns its stream id and events."""
    meta = Meta(tenant, "u1", "r1", T0)
    customer = Customer.register(
        RegisterCustomer(meta, "c1", {"firstName": "v0"}, "regular", "active", [], None)
    )
    app.save(customer)
    for i in range(1, updates + 1):
        later = Meta(tenant, "u1", f"r{i}", T0 + timedelta(seconds=i))
        customer.update(
            UpdateCustomer(later, "c1", {"firstName": f"v{i}"}, "regular", "active", [], None)
        )
        app.save(customer)
    events = [e for e in app.events.get(customer.id) if isinstance(e, PanelEvent)]
    return customer.id, events


def project(
    settings: Settings, app: PanelApplication, events: list[PanelEvent], *, fresh: bool = False
) -> tuple[set[tuple[str, str]], list[tuple[str, int, int]]]:
    """Apply events in one transaction; returns what changed and which gaps were fetched."""
    fetched: list[tuple[str, int, int]] = []

    def missing(originator_id: str, after: int, before: int) -> list[PanelEvent]:
        fetched.append((originator_id, after, before))
        found = app.events.get(originator_id, gt=after, lte=before - 1)
        return [e for e in found if isinstance(e, PanelEvent)]

    with psycopg.connect(settings.database_url) as conn, conn.cursor() as cur:
        changed = customers.project(cur, events, missing, fresh=fresh)
    return changed, fetched


def row(settings: Settings, tenant: str) -> dict[str, object]:
    with psycopg.connect(settings.database_url) as conn:
        found = conn.execute(
            "SELECT version, doc FROM customers WHERE tenant_id = %s AND id = 'c1'", (tenant,)
        ).fetchone()
    assert found is not None
    doc: dict[str, object] = orjson.loads(found[1])
    assert doc["_version"] == str(found[0])
    return doc


def test_events_in_order_build_the_aggregates_state(
    settings: Settings, app: PanelApplication
) -> None:
    tenant = uuid.uuid4().hex
    stream, events = history(app, tenant, updates=3)
    assert project(settings, app, events) == ({(tenant, "c1")}, [])
    assert row(settings, tenant) == app.repository.get(stream).state.to_dto()


def test_duplicates_and_older_events_change_nothing(
    settings: Settings, app: PanelApplication
) -> None:
    tenant = uuid.uuid4().hex
    _, events = history(app, tenant, updates=2)
    project(settings, app, events)
    before = row(settings, tenant)
    assert project(settings, app, [events[2], events[0], events[1], events[2]]) == (set(), [])
    assert row(settings, tenant) == before


def test_a_version_gap_is_filled_from_the_event_store(
    settings: Settings, app: PanelApplication
) -> None:
    tenant = uuid.uuid4().hex
    stream, events = history(app, tenant, updates=4)
    project(settings, app, [events[0]])
    _, fetched = project(settings, app, [events[4]])  # versions 2..4 never arrived
    assert fetched == [(stream, 1, 5)]
    assert row(settings, tenant) == app.repository.get(stream).state.to_dto()
    assert row(settings, tenant)["_version"] == "5"


def test_a_stream_whose_start_was_lost_is_rebuilt_whole(
    settings: Settings, app: PanelApplication
) -> None:
    tenant = uuid.uuid4().hex
    stream, events = history(app, tenant, updates=2)
    _, fetched = project(settings, app, [events[2]])
    assert fetched == [(stream, 0, 3)]
    assert row(settings, tenant) == app.repository.get(stream).state.to_dto()


def test_a_tombstone_wins_over_a_row_built_before_the_erasure(
    settings: Settings, app: PanelApplication
) -> None:
    """A row built from events opened before an erasure (by a replay's staging table, or a
    projector batch that raced the erasure) goes as soon as any of the customer's events
    comes by, and the change is reported (so cached answers go too)."""
    tenant = uuid.uuid4().hex
    _, events = history(app, tenant, 1)
    project(settings, app, events)
    with psycopg.connect(settings.database_url) as conn:
        conn.execute(
            "INSERT INTO customer_tombstones (tenant_id, id, version, erased_at) "
            "VALUES (%s, 'c1', 3, now())",
            (tenant,),
        )
    changed, _ = project(settings, app, events[-1:])  # a redelivered event: a duplicate
    assert changed == {(tenant, "c1")}
    with psycopg.connect(settings.database_url) as conn:
        rows = conn.execute("SELECT id FROM customers WHERE tenant_id = %s", (tenant,)).fetchall()
    assert rows == []


def test_a_fresh_batch_of_whole_histories_builds_the_same_rows_by_copy(
    settings: Settings, app: PanelApplication
) -> None:
    """A replay's bulk phase hands over each customer's whole history at once, for rows that
    don't exist yet: nothing is read, the row is copied in, and it is the one the events
    build, as the version-gated path builds it."""
    tenant, other = uuid.uuid4().hex, uuid.uuid4().hex
    stream, events = history(app, tenant, updates=3)
    assert project(settings, app, events, fresh=True) == ({(tenant, "c1")}, [])
    assert row(settings, tenant) == app.repository.get(stream).state.to_dto()
    _, incremental = history(app, other, updates=3)
    project(settings, app, incremental)
    with psycopg.connect(settings.database_url) as conn:
        rows = conn.execute(
            "SELECT tenant_id, version, state, created_at, updated_at, search FROM customers "
            "WHERE tenant_id = ANY(%s) ORDER BY tenant_id = %s",
            ([tenant, other], other),
        ).fetchall()
    assert [r[1:3] + r[5:] for r in rows] == [(4, "active", "v3")] * 2


def test_a_fresh_batch_leaves_a_tombstoned_customer_out(
    settings: Settings, app: PanelApplication
) -> None:
    tenant = uuid.uuid4().hex
    _, events = history(app, tenant, 1)
    with psycopg.connect(settings.database_url) as conn:
        conn.execute(
            "INSERT INTO customer_tombstones (tenant_id, id, version, erased_at) "
            "VALUES (%s, 'c1', 3, now())",
            (tenant,),
        )
    assert project(settings, app, events, fresh=True) == (set(), [])
    with psycopg.connect(settings.database_url) as conn:
        rows = conn.execute("SELECT id FROM customers WHERE tenant_id = %s", (tenant,)).fetchall()
    assert rows == []


def test_a_large_batch_reads_its_rows_by_index_probes(settings: Settings) -> None:
    """A batch of 5,000 customers (a replay's catch-up, a projector far behind) locks and
    reads its rows one index probe each, never by hashing the whole table."""
    table = f"load_plan_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(settings.database_url) as conn:
        conn.execute(f"CREATE TABLE {table} (LIKE customers INCLUDING ALL)")
        try:
            conn.execute(
                f"INSERT INTO {table} (tenant_id, id, version, state, created_at, updated_at, "
                "search, doc) SELECT 't', 'c' || n, 1, 'active', now(), now(), '', '{}' "
                "FROM generate_series(1, 30000) AS n"
            )
            conn.execute(f"ANALYZE {table}")
            ids = [f"c{n}" for n in range(1, 30000, 6)]
            statement = psycopg.sql.SQL(customers._LOAD).format(table=psycopg.sql.Identifier(table))
            plan = "\n".join(
                line
                for (line,) in conn.execute(
                    psycopg.sql.SQL("EXPLAIN {}").format(statement), (["t"] * len(ids), ids)
                ).fetchall()
            )
            found = conn.execute(statement, (["t"] * len(ids), ids)).fetchall()
        finally:
            conn.rollback()
    assert "Index Scan" in plan, plan
    assert "Seq Scan" not in plan, plan
    assert sorted(i for _, i, _ in found) == sorted(ids)
