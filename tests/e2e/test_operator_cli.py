"""The operator tools (`beeoclock replay`, `audit export`, `gdpr ...`) as an operator runs
them, as real processes against a real database: their exit status says what happened (1 only
for damage a check found), and an ordinary fault is one line on stderr, not a traceback."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import secrets
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from beeoclock.settings import Settings
from tests.support import cli, env_of, isolated, register_customer, with_database

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


@contextlib.contextmanager
def forged_row(settings: Settings, tenant: str, customer_id: str) -> Iterator[None]:
    """A read-model row no event stands behind, while the block runs: damage a check finds."""
    with psycopg.connect(settings.database_url) as conn:
        conn.execute(
            "INSERT INTO customers (tenant_id, id, version, state, created_at, updated_at, "
            "search, doc) VALUES (%s, %s, 1, 'active', now(), now(), '', '{}')",
            (tenant, customer_id),
        )
    try:
        yield
    finally:
        with psycopg.connect(settings.database_url) as conn:
            conn.execute("DELETE FROM customers WHERE tenant_id = %s", (tenant,))


def test_a_check_exits_1_only_for_damage(system: tuple[Settings, str, str]) -> None:
    settings, _, _ = system
    tenant = "cli-damaged"
    register_customer(settings, tenant)
    check = ("replay", "--check", "--quiet", "--projection", "customers", "--tenant", tenant)
    assert cli(settings, *check, check=False).returncode == 0  # behind, not damaged
    with forged_row(settings, tenant, "invented"):
        assert cli(settings, *check, check=False).returncode == DAMAGE


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


def test_an_unknown_customer_exits_4(system: tuple[Settings, str, str], tmp_path: Path) -> None:
    settings, tenant, _ = system
    target = tmp_path / "export.json"
    done = cli(
        settings,
        "gdpr",
        "export",
        "--tenant",
        tenant,
        "--customer",
        "nobody",
        "--output",
        str(target),
        check=False,
    )
    assert done.returncode == NOT_FOUND, done.stderr
    assert not target.exists()  # a failed export leaves no file behind
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


def other_master_key() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


def faults(settings: Settings, tenant: str, customer: str) -> Iterator[tuple[str, ...]]:
    """Each operator command, as the fault tests run it."""
    yield "replay", "--quiet", "--tenant", tenant
    yield "replay", "--check", "--quiet"
    yield "audit", "export", "--tenant", tenant
    yield "gdpr", "export", "--tenant", tenant, "--customer", customer
    yield "gdpr", "erase", "--tenant", tenant, "--customer", customer, "--reason", "request 2"
    yield "gdpr", "seal-legacy", "--tenant", tenant


@pytest.mark.parametrize("database", ["a database that does not exist", "no server"])
def test_an_unknown_or_unreachable_database_is_one_line_in_seconds(
    system: tuple[Settings, str, str], database: str
) -> None:
    settings, tenant, customer = system
    password = "never-printed-password"
    if database == "no server":  # nothing listens on port 9
        url = f"postgresql://postgres:{password}@127.0.0.1:9/nothing"
    else:  # the server trusts the machine: any password is fine
        parts = urlsplit(with_database(settings.database_url, "beeoclock_no_such_database"))
        host = parts.netloc.rpartition("@")[2]  # "" for a socket (?host=/tmp/...)
        url = urlunsplit(parts._replace(netloc=f"{parts.username}:{password}@{host}"))
    wrong = settings.model_copy(update={"database_url": url})
    for args in faults(settings, tenant, customer):
        started = time.monotonic()
        done = cli(wrong, *args, check=False)
        assert done.returncode == FAILED, (args, done.stderr)
        line = one_line(done)
        assert "database" in line, line
        assert password not in done.stderr + done.stdout
        assert time.monotonic() - started < 15, args  # not the event store pool's 30 s wait


def test_a_wrong_master_key_is_one_line_and_is_not_printed(
    system: tuple[Settings, str, str],
) -> None:
    settings, tenant, _ = system
    customer = register_customer(settings, tenant)  # a wrong key must not erase it either
    key = other_master_key()
    wrong = settings.model_copy(update={"master_key": key})
    for args in faults(settings, tenant, customer):
        done = cli(wrong, *args, check=False)
        assert done.returncode == FAILED, (args, done.stderr)
        assert "BEEOCLOCK_MASTER_KEY" in one_line(done), args
        assert key not in done.stderr + done.stdout
        assert settings.master_key not in done.stderr + done.stdout
    exported = cli(settings, "gdpr", "export", "--tenant", tenant, "--customer", customer)
    assert '"firstName": "Ola"' in exported.stdout  # still there, still readable


@pytest.mark.parametrize("command", ["audit", "gdpr"])
def test_an_output_file_that_cannot_be_written_is_one_line(
    system: tuple[Settings, str, str], command: str, tmp_path: Path
) -> None:
    settings, tenant, customer = system
    target = str(tmp_path / "no such folder" / "export.json")
    args = ["export", "--tenant", tenant, "--output", target]
    if command == "gdpr":
        args += ["--customer", customer]
    done = cli(settings, command, *args, check=False)
    assert done.returncode == FAILED, done.stderr
    assert target in one_line(done)


def test_an_export_whose_reader_goes_away_ends_quietly(servers: dict[str, str]) -> None:
    """`beeoclock audit export ... | head -1`: no traceback, ended by SIGPIPE as `cat` is."""
    from beeoclock.bootstrap import panel_application
    from commands import handlers
    from commands.context import Meta
    from commands.customer import RegisterCustomer

    with isolated(servers) as settings:
        tenant = "cli-many"
        app = panel_application(settings, pool_size=1)
        try:  # more than a pipe holds (64 KiB)
            for i in range(400):
                meta = Meta(tenant, "u1", f"r{i}", datetime.now(UTC))
                handlers.register_customer(
                    app,
                    RegisterCustomer(
                        meta, f"c{i:04d}", {"firstName": f"N{i}"}, "regular", "active", [], None
                    ),
                )
        finally:
            app.close()
        proc = subprocess.Popen(
            [sys.executable, "-m", "beeoclock.cli", "audit", "export", "--tenant", tenant],
            env=env_of(settings),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert proc.stdout is not None
        assert proc.stderr is not None
        assert proc.stdout.readline().startswith(b"{")
        proc.stdout.close()
        stderr = proc.stderr.read().decode()
        assert proc.wait(60) == -signal.SIGPIPE, stderr
    assert stderr == ""


def test_a_lock_not_granted_in_time_is_one_line(system: tuple[Settings, str, str]) -> None:
    settings, tenant, _ = system
    with psycopg.connect(settings.database_url) as conn:
        conn.execute("LOCK TABLE customers IN ACCESS EXCLUSIVE MODE")
        done = subprocess.run(
            [sys.executable, "-m", "beeoclock.cli", "replay", "--quiet", "--tenant", tenant],
            env=env_of(settings) | {"PGOPTIONS": "-c lock_timeout=1s"},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        conn.rollback()
    assert done.returncode == FAILED, done.stderr
    assert "lock" in one_line(done)


@pytest.mark.parametrize("command", ["audit", "gdpr"])
def test_an_export_file_is_its_owners_only_and_replaces_a_file_only_with_force(
    system: tuple[Settings, str, str], command: str, tmp_path: Path
) -> None:
    settings, tenant, customer = system
    target = tmp_path / "export.out"
    args = [command, "export", "--tenant", tenant, "--output", str(target)]
    if command == "gdpr":
        args += ["--customer", customer]
    umask = os.umask(0o022)  # what most logins have: new files readable by everyone
    try:
        cli(settings, *args)
        assert stat.S_IMODE(target.stat().st_mode) == 0o600
        exported = target.read_text()
        assert customer in exported

        target.write_text("an earlier export, kept")
        target.chmod(0o644)
        refused = cli(settings, *args, check=False)
        assert refused.returncode == FAILED, refused.stderr
        assert "--force" in one_line(refused)
        assert target.read_text() == "an earlier export, kept"

        cli(settings, *args, "--force")
    finally:
        os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    replaced = target.read_text()
    assert customer in replaced
    if command == "gdpr":
        assert json.loads(replaced)["events"] == json.loads(exported)["events"]
    else:
        assert replaced == exported
    assert sorted(tmp_path.iterdir()) == [target]  # nothing half-written left beside it


def test_a_failed_export_leaves_the_earlier_file_as_it_was_even_with_force(
    system: tuple[Settings, str, str], tmp_path: Path
) -> None:
    """The export is written under a temporary name and renamed once complete: a failure
    (here a customer who is not there) used to leave the replaced file truncated or half
    written."""
    settings, tenant, _ = system
    target = tmp_path / "export.json"
    target.write_text("an earlier export, kept")
    failed = cli(
        settings,
        *("gdpr", "export", "--tenant", tenant, "--customer", "nobody"),
        *("--output", str(target), "--force"),
        check=False,
    )
    assert failed.returncode == NOT_FOUND, failed.stderr
    assert target.read_text() == "an earlier export, kept"
    assert sorted(tmp_path.iterdir()) == [target]


def test_a_tenant_or_entity_without_events_is_not_found(
    system: tuple[Settings, str, str],
) -> None:
    settings, tenant, _ = system
    for args in (
        ("audit", "export", "--tenant", "cli-nobody"),
        ("audit", "export", "--tenant", tenant, "--entity", "nothing-here"),
        ("replay", "--quiet", "--tenant", "cli-nobody"),
        ("replay", "--check", "--quiet", "--tenant", "cli-nobody"),
        ("gdpr", "export", "--tenant", "cli-nobody", "--customer", "c1"),
        ("gdpr", "seal-legacy", "--tenant", "cli-nobody"),
    ):
        done = cli(settings, *args, check=False)
        assert done.returncode == NOT_FOUND, (args, done.stderr)
        line = one_line(done)
        assert "not found" in line, args
        assert "no events" in line, args
        assert done.stdout == ""


def test_an_empty_period_of_a_known_tenant_is_exported_as_empty(
    system: tuple[Settings, str, str],
) -> None:
    settings, tenant, _ = system
    done = cli(settings, "audit", "export", "--tenant", tenant, "--since", "2999-01-01T00:00:00Z")
    assert done.stdout == ""
    assert "exported 0 events" in done.stderr


def test_read_model_rows_of_a_tenant_without_events_are_still_checked(
    system: tuple[Settings, str, str],
) -> None:
    """Rows no event stands behind (forged, or left over) are damage a check must report."""
    settings, _, _ = system
    ghost = "cli-ghost"
    with forged_row(settings, ghost, "forged"):
        done = cli(settings, "replay", "--check", "--quiet", "--tenant", ghost, check=False)
        assert done.returncode == DAMAGE, done.stderr
        assert "has no events" in done.stderr
        extra = {
            json.loads(line)["projection"]: json.loads(line)["extra"]["count"]
            for line in done.stdout.splitlines()
        }
        assert extra == {"customers": 1, "services": 0}
