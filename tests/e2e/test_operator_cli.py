"""The operator tools (`beeoclock replay`, `audit export`, `gdpr ...`) as an operator runs
them, as real processes against a real database: their exit status says what happened (1 only
for damage a check found), and an ordinary fault is one line on stderr, not a traceback."""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Iterator

import psycopg
import pytest

from beeoclock.settings import Settings
from tests.support import cli, isolated, register_customer

DAMAGE, USAGE, FAILED, NOT_FOUND = 1, 2, 3, 4


@pytest.fixture(scope="module")
def system(servers: dict[str, str]) -> Iterator[tuple[Settings, str, str]]:
    """A database of its own holding one tenant with one customer: (settings, tenant,
    customer). No relay or projector runs: the read models stay empty (behind, not damaged)."""
    with isolated(servers) as settings:
        tenant = "cli-tenant"
        customer = register_customer(settings, tenant)
        yield settings, tenant, customer


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    """The one line a failed command says on stderr (and no traceback)."""
    assert "Traceback" not in done.stderr, done.stderr
    said = [line for line in done.stderr.splitlines() if line.startswith("beeoclock: ")]
    assert len(said) == 1, done.stderr
    return said[0]


def run_lock(run_name: str) -> tuple[int, int]:
    """The advisory lock a replay of that name holds while it runs (workers/replay.py)."""
    from workers.replay import _LOCK_CLASS

    key = int.from_bytes(hashlib.blake2b(run_name.encode(), digest_size=4).digest())
    return _LOCK_CLASS, key - 2**31


def test_a_check_exits_1_only_for_damage(system: tuple[Settings, str, str]) -> None:
    settings, _, _ = system
    tenant = "cli-damaged"
    register_customer(settings, tenant)
    check = ("replay", "--check", "--quiet", "--projection", "customers", "--tenant", tenant)
    assert cli(settings, *check, check=False).returncode == 0  # behind, not damaged
    with psycopg.connect(settings.database_url) as conn:
        conn.execute(
            "INSERT INTO customers (tenant_id, id, version, state, created_at, updated_at, "
            "search, doc) VALUES (%s, 'invented', 1, 'active', now(), now(), '', '{}')",
            (tenant,),
        )
    try:
        assert cli(settings, *check, check=False).returncode == DAMAGE
    finally:
        with psycopg.connect(settings.database_url) as conn:
            conn.execute("DELETE FROM customers WHERE tenant_id = %s", (tenant,))


def test_a_check_that_cannot_run_exits_3_not_1(system: tuple[Settings, str, str]) -> None:
    settings, tenant, _ = system
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s, %s)", run_lock(f"check:customers:{tenant}"))
        done = cli(
            settings,
            *("replay", "--check", "--quiet", "--projection", "customers", "--tenant", tenant),
            check=False,
        )
    assert done.returncode == FAILED, done.stderr
    assert "already running" in one_line(done)


def test_an_unexpected_error_exits_3_with_its_traceback(servers: dict[str, str]) -> None:
    with isolated(servers) as settings:
        tenant = "cli-broken"
        register_customer(settings, tenant)
        with psycopg.connect(settings.database_url) as conn:
            conn.execute(
                "UPDATE panel_events SET state = 'not json' WHERE starts_with(originator_id, %s)",
                (f"customer:{tenant}:",),
            )
        done = cli(settings, "audit", "export", "--tenant", tenant, check=False)
    assert done.returncode == FAILED, done.stderr
    assert "Traceback" in done.stderr  # a bug: the details are for whoever fixes it
    assert done.stderr.splitlines()[-1].startswith("beeoclock: ")


def test_an_unknown_customer_exits_4(system: tuple[Settings, str, str]) -> None:
    settings, tenant, _ = system
    for action in (("export",), ("erase", "--reason", "request 1")):
        done = cli(
            settings,
            "gdpr",
            action[0],
            "--tenant",
            tenant,
            "--customer",
            "nobody",
            *action[1:],
            check=False,
        )
        assert done.returncode == NOT_FOUND, done.stderr
        assert "customer nobody not found" in one_line(done)
