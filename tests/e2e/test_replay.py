"""`beeoclock replay` against the running system: a rebuild equals the live read models, finds
and repairs damage (whole tables or one tenant), resumes after being killed, and the APIs
answer all along; `beeoclock audit export` streams a tenant's events."""

from __future__ import annotations

import csv
import io
import json
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import psycopg
import pytest

from beeoclock.settings import Settings
from tests.e2e.test_service_api import body as service_body
from tests.support import (
    Stack,
    Tenant,
    cli,
    env_of,
    eventually,
    isolated,
    new_tenant,
    running,
    wait_until_projecting,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def system(servers: dict[str, str]) -> Iterator[tuple[Settings, Stack, list[Tenant]]]:
    with (
        isolated(servers) as settings,
        running(settings, "api", "relay", "projector") as stack,
        httpx.Client(base_url=stack.base_url, timeout=30) as client,
    ):
        wait_until_projecting(stack)
        tenants = [new_tenant(client, settings) for _ in range(3)]
        for n, tenant in enumerate(tenants):
            for i in range(40):
                made = tenant.post(
                    "/api/v1/customer",
                    json={"firstName": f"F{i}", "email": f"c{i}.{n}@example.com"},
                )
                assert made.status_code == 201, made.text
                if i % 4 == 0:
                    path = f"/api/v1/customer/{made.json()['_id']}"
                    assert tenant.put(path, json={"firstName": f"G{i}"}).status_code == 200
                if i % 10 == 0:
                    assert (
                        tenant.delete(f"/api/v1/customer/{made.json()['_id']}").status_code == 200
                    )
            for i in range(8):
                assert tenant.post("/api/v1/service", json=service_body(f"S{i}")).status_code == 201
        for tenant in tenants:  # every write projected
            assert tenant.get("/api/v1/customer/paged").status_code == 200
        yield settings, stack, tenants


def checks(settings: Settings, *args: str) -> tuple[int, list[dict[str, Any]]]:
    done = cli(settings, "replay", "--check", "--quiet", *args, check=False)
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, [json.loads(line) for line in done.stdout.splitlines()]


def table(settings: Settings, name: str) -> dict[tuple[str, str], tuple[Any, ...]]:
    with psycopg.connect(settings.database_url) as conn:
        rows = conn.execute(f"SELECT * FROM {name} ORDER BY tenant_id, id").fetchall()
    return {(r[0], r[1]): r for r in rows}


def count(settings: Settings, statement: str, *params: str) -> int:
    with psycopg.connect(settings.database_url) as conn:
        row = conn.execute(statement, params).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def many_customers(settings: Settings, n: int) -> str:
    """`n` customers of a new tenant, registered by the command handler itself (no HTTP, for
    speed); the running relay and projector project them. Returns the tenant."""
    from beeoclock.bootstrap import panel_application
    from commands import handlers
    from commands.context import Meta
    from commands.customer import RegisterCustomer

    tenant = f"many-{time.monotonic_ns()}"
    app = panel_application(settings, pool_size=2)
    try:
        for i in range(n):
            meta = Meta(tenant, "user-1", f"r{i}", datetime.now(UTC))
            personal = {"firstName": f"M{i}", "email": f"m{i}@example.com"}
            customer = RegisterCustomer(meta, f"m{i:05d}", personal, "regular", "active", [], None)
            handlers.register_customer(app, customer)
    finally:
        app.close()
    return tenant


def damage(settings: Settings, tenant: str) -> None:
    """One row changed, one removed, one invented, in a tenant's customers."""
    with psycopg.connect(settings.database_url) as conn:
        ids = [
            r[0]
            for r in conn.execute(
                "SELECT id FROM customers WHERE tenant_id = %s ORDER BY id LIMIT 2", (tenant,)
            )
        ]
        conn.execute(
            "UPDATE customers SET doc = replace(doc, '\"regular\"', '\"anonymous\"') "
            "WHERE tenant_id = %s AND id = %s",
            (tenant, ids[0]),
        )
        conn.execute("DELETE FROM customers WHERE tenant_id = %s AND id = %s", (tenant, ids[1]))
        conn.execute(
            "INSERT INTO customers SELECT tenant_id, 'invented', version, state, created_at, "
            "updated_at, search, doc FROM customers WHERE tenant_id = %s AND id = %s",
            (tenant, ids[0]),
        )


def test_a_check_finds_no_difference_between_the_live_read_models_and_a_rebuild(
    system: tuple[Settings, Stack, list[Tenant]],
) -> None:
    settings, _, _ = system
    code, reports = checks(settings)
    assert code == 0, reports
    assert [r["projection"] for r in reports] == ["customers", "services"]
    assert reports[0]["events"] >= 3 * (40 + 10 + 4)
    assert reports[1]["events"] >= 3 * 8


def test_damage_is_found_and_a_replay_repairs_it_while_the_apis_answer(
    system: tuple[Settings, Stack, list[Tenant]],
) -> None:
    settings, stack, tenants = system
    before = table(settings, "customers")
    damage(settings, tenants[0].tenant_id)
    code, reports = checks(settings, "--projection", "customers")
    assert code == 1
    found = reports[0]
    assert (found["missing"]["count"], found["extra"]["count"], found["different"]["count"]) == (
        1,
        1,
        1,
    )
    assert found["extra"]["examples"] == [[tenants[0].tenant_id, "invented"]]

    statuses: Counter[int] = Counter()
    stop = threading.Event()

    def read_all_along() -> None:
        with httpx.Client(base_url=stack.base_url, timeout=30) as client:
            readers = [Tenant(client, t.tenant_id, t.token) for t in tenants]
            while not stop.is_set():
                for reader in readers:
                    statuses[reader.get("/api/v1/customer/paged").status_code] += 1
                    statuses[reader.get("/api/v1/service/paged").status_code] += 1
                    # the search functions (migration 010) name the table the swap replaces
                    found = reader.get("/api/v1/customer/paged?phrase=anna")
                    statuses[found.status_code] += 1

    reader = threading.Thread(target=read_all_along)
    reader.start()
    try:
        time.sleep(0.3)
        replayed = cli(settings, "replay", "--batch", "50")
        time.sleep(0.3)
    finally:
        stop.set()
        reader.join()
    assert "replay rebuild:customers" in replayed.stderr  # the progress line
    assert statuses[200] > 20
    assert set(statuses) == {200}, statuses
    assert table(settings, "customers") == before
    assert checks(settings)[0] == 0

    # the swapped-in tables are complete: indexes, row-level security, the reader's grant
    with psycopg.connect(settings.database_url) as conn:
        indexes = {
            r[0]
            for r in conn.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'customers'")
        }
        policies = {
            (r[0], tuple(r[1]))
            for r in conn.execute(
                "SELECT policyname, roles FROM pg_policies WHERE tablename = 'customers'"
            )
        }
        granted = conn.execute(
            "SELECT has_table_privilege('beeoclock_reader', 'customers', 'SELECT')"
        ).fetchone()
        # and each partition of both vacuumed and analyzed by the replay (statistics, the
        # visibility map)
        settled = conn.execute(
            "SELECT count(*) FILTER (WHERE s.last_vacuum IS NOT NULL "
            "AND s.last_analyze IS NOT NULL), count(*) FROM pg_inherits i "
            "JOIN pg_stat_user_tables s ON s.relid = i.inhrelid "
            "WHERE i.inhparent IN ('customers'::regclass, 'services'::regclass)"
        ).fetchone()
    assert settled is not None
    assert settled[1] > 1
    assert settled[0] == settled[1]
    assert {
        "customers_pkey",
        "customers_updated",
        "customers_created",
        "customers_search",
    } <= indexes
    assert policies == {
        ("tenant_rows", ("beeoclock_reader",)),
        ("audit_rows", ("beeoclock_auditor",)),
    }
    assert granted == (True,)
    # and the projector goes on writing to them
    tenant = tenants[1]
    made = tenant.post("/api/v1/customer", json={"firstName": "After"})
    assert tenant.get(f"/api/v1/customer/{made.json()['_id']}").status_code == 200
    # and a phrase search finds what it wrote, through the search function (migration 010)
    found = tenant.get("/api/v1/customer/paged?phrase=after").json()
    assert [c["_id"] for c in found["items"]] == [made.json()["_id"]]
    assert found["totalSize"] == 1


def test_a_rebuild_in_worker_processes_equals_one_in_a_single_process(
    system: tuple[Settings, Stack, list[Tenant]],
) -> None:
    settings, _, tenants = system
    damage(settings, tenants[2].tenant_id)
    before = table(settings, "services")
    done = cli(settings, "replay", "--workers", "2", "--batch", "20", "--quiet")
    reports = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["events"] >= 20 for r in reports] == [True, True]
    assert reports[0]["rows"] >= 3 * 40
    assert checks(settings)[0] == 0
    assert table(settings, "services") == before


def test_a_tenant_replay_repairs_that_tenant_only(
    system: tuple[Settings, Stack, list[Tenant]],
) -> None:
    settings, _, tenants = system
    damage(settings, tenants[0].tenant_id)
    damage(settings, tenants[1].tenant_id)
    cli(
        settings, "replay", "--projection", "customers", "--tenant", tenants[0].tenant_id, "--quiet"
    )
    code, reports = checks(settings, "--projection", "customers", "--tenant", tenants[0].tenant_id)
    assert code == 0, reports
    code, reports = checks(settings, "--projection", "customers", "--tenant", tenants[1].tenant_id)
    assert code == 1
    cli(
        settings, "replay", "--projection", "customers", "--tenant", tenants[1].tenant_id, "--quiet"
    )
    assert checks(settings)[0] == 0


def test_a_replay_killed_midway_resumes_where_it_stopped(
    system: tuple[Settings, Stack, list[Tenant]],
) -> None:
    """Killed in its bulk phase (two worker processes), a replay leaves the rows it wrote;
    its workers end with it; run again, it goes on after the last entity each part wrote
    (rows copied twice would break the staging table's primary key) and ends equal to the
    live table."""
    settings, _, _ = system
    more = many_customers(settings, 1500)  # so that the kill lands in the bulk phase
    eventually(
        lambda: (
            count(settings, "SELECT count(*) FROM customers WHERE tenant_id = %s", more) == 1500
        ),
        timeout_s=120,
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "beeoclock.cli",
            "replay",
            "--projection",
            "customers",
            "--batch",
            "5",
            "--workers",
            "2",
        ],
        env=env_of(settings),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def staged() -> int:
        try:
            return count(settings, "SELECT count(*) FROM customers__rebuild")
        except psycopg.errors.UndefinedTable:
            return 0

    try:
        eventually(lambda: staged() > 40, timeout_s=60, interval_s=0.01)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    time.sleep(0.5)  # the workers see their parent gone within 0.1 s
    stopped_at = staged()
    time.sleep(0.5)
    assert staged() == stopped_at, "a worker wrote on after its replay was killed"
    total = count(
        settings, "SELECT count(*) FROM panel_events WHERE starts_with(topic, 'events.customer:')"
    )
    assert 40 < stopped_at < count(settings, "SELECT count(*) FROM customers")

    resumed = cli(settings, "replay", "--projection", "customers", "--batch", "50", "--quiet")
    report = json.loads(resumed.stdout)
    assert report["resumedFrom"] > 0
    assert 0 < report["events"] < total  # the rows staged before the kill were not redone
    assert (
        count(settings, "SELECT count(*) FROM replay_runs") == 0
    )  # the run and its parts are over
    assert checks(settings)[0] == 0


def test_the_audit_export_streams_a_tenants_events_with_filters(
    system: tuple[Settings, Stack, list[Tenant]],
) -> None:
    settings, _, tenants = system
    tenant = tenants[2].tenant_id
    lines = cli(settings, "audit", "export", "--tenant", tenant).stdout.splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) >= 40 + 10 + 4 + 8
    assert [r["position"] for r in records] == sorted(r["position"] for r in records)
    assert {r["entityType"] for r in records} == {"customer", "service"}
    first = next(r for r in records if r["type"] == "CustomerRegistered")
    assert first["actor"] == "user-1"
    assert first["data"]["personal"]["email"].endswith("@example.com")
    assert all(r["entityId"] for r in records)

    one = first["entityId"]
    mine = cli(settings, "audit", "export", "--tenant", tenant, "--entity", one).stdout.splitlines()
    assert {json.loads(line)["entityId"] for line in mine} == {one}

    middle = records[len(records) // 2]["at"]
    since = cli(settings, "audit", "export", "--tenant", tenant, "--since", middle).stdout
    until = cli(settings, "audit", "export", "--tenant", tenant, "--until", middle).stdout
    assert len(since.splitlines()) + len(until.splitlines()) == len(records)
    assert all(json.loads(line)["at"] >= middle for line in since.splitlines())

    as_csv = cli(settings, "audit", "export", "--tenant", tenant, "--format", "csv").stdout
    rows = list(csv.DictReader(io.StringIO(as_csv)))
    assert len(rows) == len(records)
    assert rows[0]["type"] == records[0]["type"]
    assert json.loads(rows[0]["data"]) == records[0]["data"]
    others = cli(settings, "audit", "export", "--tenant", tenants[0].tenant_id).stdout
    assert tenant not in others
