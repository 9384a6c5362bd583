"""The read API's second wall: as `beeoclock_reader` a session sees only the read models, only
the rows of the tenant it named, nothing at all before it names one, and can change nothing."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import errors

from beeoclock.settings import Settings
from projections.tenant_pool import READER_ROLE, TenantPool, reader_pool

DOC = '{"_id": "x"}'


@pytest.fixture(scope="module")
def two_tenants(settings: Settings) -> tuple[str, str]:
    a, b = uuid.uuid4().hex, uuid.uuid4().hex
    with psycopg.connect(settings.database_url) as conn:
        for tenant, count in ((a, 3), (b, 2)):
            for i in range(count):
                conn.execute(
                    "INSERT INTO customers (tenant_id, id, version, state, created_at, "
                    "updated_at, search, doc) VALUES (%s, %s, 1, 'active', now(), now(), '', %s)",
                    (tenant, f"c{i}", DOC),
                )
    return a, b


def reader(url: str) -> psycopg.Connection[Any]:
    conn = psycopg.connect(url, autocommit=True)
    conn.execute(f"SET ROLE {READER_ROLE}")
    return conn


def count(conn: psycopg.Connection[Any], sql: str = "SELECT count(*) FROM customers") -> int:
    row = conn.execute(sql).fetchone()
    return int(row[0]) if row else -1


def test_a_query_without_a_tenant_sees_nothing(
    settings: Settings, two_tenants: tuple[str, str]
) -> None:
    with reader(settings.database_url) as conn:
        assert count(conn) == 0
        conn.execute("SELECT set_config('beeoclock.tenant_id', %s, false)", (two_tenants[0],))
        assert count(conn) == 3, "a query that forgot its tenant filter sees one tenant only"
        conn.execute("SELECT set_config('beeoclock.tenant_id', %s, false)", (two_tenants[1],))
        assert count(conn) == 2


def test_the_reader_can_change_nothing_and_read_nothing_but_the_read_models(
    settings: Settings, two_tenants: tuple[str, str]
) -> None:
    forbidden = [
        "INSERT INTO customers (tenant_id, id, version, state, created_at, updated_at, search, "
        "doc) VALUES ('t', 'x', 1, 'active', now(), now(), '', '{}')",
        "UPDATE customers SET version = 99",
        "DELETE FROM customers",
        "SELECT count(*) FROM panel_events",
        "SELECT count(*) FROM panel_keys",
        "SELECT count(*) FROM projector_offsets",
        "SELECT count(*) FROM customers_p0",  # a partition, around the policy
        "UPDATE applied_positions SET position = 0",
    ]
    with reader(settings.database_url) as conn:
        for sql in forbidden:
            with pytest.raises(errors.InsufficientPrivilege):
                conn.execute(sql)
    with psycopg.connect(settings.database_url) as owner:
        assert count(owner) >= 5, "the rows are still all there"


def test_the_read_api_pool_sets_the_tenant_on_every_checkout(
    settings: Settings, two_tenants: tuple[str, str]
) -> None:
    async def scenario() -> list[int]:
        # one connection: the second tenant reuses the first one's session
        async with reader_pool(settings.database_url, max_size=1) as pool:
            tenants = TenantPool(pool)
            seen = []
            for tenant in (*two_tenants, "nobody"):
                async with tenants.connection(tenant) as conn:
                    cur = await conn.execute("SELECT count(*) FROM customers")
                    row = await cur.fetchone()
                    seen.append(int(row[0]) if row else -1)
            return seen

    assert asyncio.run(scenario()) == [3, 2, 0]


@pytest.fixture
def login_role(settings: Settings) -> Iterator[str]:
    """A production-style login role: a member of beeoclock_reader, with nothing of its own."""
    name = f"panel_read_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {name} LOGIN IN ROLE {READER_ROLE}")
    parts = urlsplit(settings.database_url)
    netloc = parts.netloc.rpartition("@")[2]
    try:
        yield urlunsplit(parts._replace(netloc=f"{name}@{netloc}"))
    finally:
        with psycopg.connect(settings.database_url, autocommit=True) as conn:
            conn.execute(f"DROP ROLE {name}")


def test_a_login_role_in_the_reader_role_gets_the_same_walls(
    login_role: str, two_tenants: tuple[str, str]
) -> None:
    with reader(login_role) as conn:
        assert count(conn) == 0
        conn.execute("SELECT set_config('beeoclock.tenant_id', %s, false)", (two_tenants[1],))
        assert count(conn) == 2
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("DELETE FROM customers")
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("RESET ROLE; SELECT count(*) FROM panel_events")


def test_the_auditor_sees_the_customers_read_model(
    settings: Settings, two_tenants: tuple[str, str]
) -> None:
    """The GDPR export, made as the auditor, says whether the customer has a row: with no
    policy of its own, row-level security hid every row from it, and the export said none."""
    a, _ = two_tenants
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute("SET ROLE beeoclock_auditor")
        assert count(conn, f"SELECT count(*) FROM customers WHERE tenant_id = '{a}'") == 3


def test_the_auditor_reads_the_event_store_and_changes_nothing(settings: Settings) -> None:
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute("SET ROLE beeoclock_auditor")
        for table in ("panel_events", "panel_snapshots", "pii_keys", "customers"):
            conn.execute(f"SELECT count(*) FROM {table}")
        for sql in (
            "INSERT INTO panel_events (originator_id, originator_version) VALUES ('x', 1)",
            "UPDATE pii_keys SET wrapped = NULL",
            "DELETE FROM customers",
            "SELECT count(*) FROM projector_offsets",
        ):
            with pytest.raises(errors.InsufficientPrivilege):
                conn.execute(sql)


@pytest.fixture(scope="module")
def searchable(settings: Settings) -> tuple[str, str]:
    """Two tenants with the same searchable names, and a service each."""
    a, b = uuid.uuid4().hex, uuid.uuid4().hex
    with psycopg.connect(settings.database_url) as conn:
        for tenant in (a, b):
            for i, name in enumerate(("anna kowalska", "jan nowak", "anna nowak")):
                conn.execute(
                    "INSERT INTO customers (tenant_id, id, version, state, created_at, "
                    "updated_at, search, doc) VALUES (%s, %s, 1, 'active', now(), now(), %s, %s)",
                    (tenant, f"{tenant[:4]}{i}", name, DOC),
                )
            conn.execute(
                "INSERT INTO services (tenant_id, id, version, state, created_at, updated_at, "
                "sort_order, search, doc) VALUES (%s, 's1', 1, 'active', now(), now(), 1, "
                "'haircut', '{}')",
                (tenant,),
            )
    return a, b


def matches(conn: psycopg.Connection[Any], *patterns: str) -> list[str]:
    rows = conn.execute("SELECT id FROM customer_matches(%s) ORDER BY id", (list(patterns),))
    return [r[0] for r in rows.fetchall()]


def test_the_phrase_search_functions_keep_the_policys_wall(
    settings: Settings, searchable: tuple[str, str]
) -> None:
    """They read as their owner (so LIKE may use the trigram index), and return what the
    policy would show: the session's tenant's rows, none before it names a tenant."""
    a, b = searchable
    with reader(settings.database_url) as conn:
        assert matches(conn, "%anna%") == [], "no tenant named, nothing found"
        conn.execute("SELECT set_config('beeoclock.tenant_id', %s, false)", (a,))
        assert matches(conn, "%anna%") == [f"{a[:4]}0", f"{a[:4]}2"]
        assert matches(conn, "%kowal%", "%jan %") == [f"{a[:4]}0", f"{a[:4]}1"]
        services = conn.execute("SELECT id FROM service_matches(ARRAY['%hair%'])").fetchall()
        assert services == [("s1",)]
        conn.execute("SELECT set_config('beeoclock.tenant_id', %s, false)", (b,))
        assert matches(conn, "%anna%") == [f"{b[:4]}0", f"{b[:4]}2"]
        with pytest.raises(errors.RaiseException):
            matches(conn, *["%a%"] * 5)


def test_only_the_reader_may_search(settings: Settings) -> None:
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute("SET ROLE beeoclock_auditor")
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("SELECT * FROM customer_matches(ARRAY['%a%'])")


def test_no_temporary_table_stands_in_for_the_read_model(
    settings: Settings, searchable: tuple[str, str]
) -> None:
    """The functions run with their owner's rights: a caller's temporary `customers` must not
    be what they read (their search_path puts pg_temp last)."""
    a, _ = searchable
    with reader(settings.database_url) as conn:
        conn.execute("SELECT set_config('beeoclock.tenant_id', %s, false)", (a,))
        conn.execute("CREATE TEMP TABLE customers (LIKE public.customers)")
        conn.execute(
            "INSERT INTO pg_temp.customers VALUES (%s, 'planted', 1, 'active', now(), now(), "
            "'anna planted', '{}')",
            (a,),
        )
        assert matches(conn, "%anna%") == [f"{a[:4]}0", f"{a[:4]}2"]
