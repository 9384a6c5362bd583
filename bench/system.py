"""The system under test, as in production: separate processes (write API, read API, relay,
projector) against a real PostgreSQL (a fresh database `bench_<random>`, dropped at the end),
a tansu broker and a Redis server of the bench's own (so FLUSHALL is safe).

Every process the bench starts is recorded here by its pid and stopped at the end.
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg

from beeoclock.embedded import free_port, wait_for_port

DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
ROOT = Path(__file__).resolve().parent.parent


class BenchError(RuntimeError):
    """Something the bench needs did not work; the message says what."""


def all_permissions() -> list[str]:
    """Every permission a token can hold (the list moved between modules over time)."""
    for module in ("beeoclock.permissions", "beeoclock.cli"):
        with contextlib.suppress(ImportError, AttributeError):
            mod = __import__(module, fromlist=["ALL_PERMISSIONS"])
            return list(mod.ALL_PERMISSIONS)
    return ["READ_CUSTOMER", "CREATE_CUSTOMER", "EDIT_CUSTOMER", "DELETE_CUSTOMER"]


def rate_limits_off() -> dict[str, str]:
    """Every `rate_limit_*` setting set to `off` (unlimited), so nothing throttles the load."""
    names = {
        "rate_limit_customer_read",
        "rate_limit_customer_write",
        "rate_limit_service_read",
        "rate_limit_service_write",
        "rate_limit_media_upload",
    }
    with contextlib.suppress(ImportError, AttributeError):
        from beeoclock.settings import Settings

        names |= {n for n in Settings.model_fields if n.startswith("rate_limit_")}
    names.discard("rate_limit_without_redis")  # a list of request kinds, not a rate
    return dict.fromkeys(sorted(names), "off")


def with_database(server_url: str, name: str) -> str:
    parts = urlsplit(server_url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def postgres_reachable(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error:
        return False
    return True


@contextlib.contextmanager
def fresh_database(server_url: str) -> Iterator[str]:
    """A database `bench_<random>` on the server for the block; dropped afterwards."""
    name = f"bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield with_database(server_url, name)
    finally:
        with (
            contextlib.suppress(psycopg.Error),
            psycopg.connect(server_url, autocommit=True) as conn,
        ):
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, lines: int = 30) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class Children:
    """The processes the bench started, by pid; `stop_all` ends each of them."""

    log_dir: Path
    children: dict[str, Child] = field(default_factory=dict)

    def start(
        self,
        name: str,
        args: list[str],
        env: dict[str, str],
        port: int | None = None,
        ready_timeout_s: float = 60.0,
    ) -> Child:
        if name in self.children and self.children[name].alive():
            msg = f"process {name} is already running"
            raise BenchError(msg)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_dir / f"{name}.log"
        with log.open("ab") as out:
            proc = subprocess.Popen(
                args,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=ROOT,
                start_new_session=True,
            )
        child = Child(name, proc, log)
        self.children[name] = child
        if port is not None:
            try:
                _wait_port_or_exit(child, port, ready_timeout_s)
            except BaseException:
                self.stop(name)
                raise
        return child

    def stop(self, name: str, timeout_s: float = 15.0) -> None:
        child = self.children.pop(name, None)
        if child is not None:
            _terminate(child.proc, timeout_s)

    def stop_all(self) -> None:
        for child in self.children.values():
            if child.alive():
                with contextlib.suppress(ProcessLookupError):
                    child.proc.send_signal(signal.SIGTERM)
        for name in list(self.children):
            self.stop(name)

    def check_alive(self, *names: str) -> None:
        for name in names:
            child = self.children.get(name)
            if child is None or not child.alive():
                tail = child.tail() if child else ""
                msg = f"process {name} is not running; its log ends with:\n{tail}"
                raise BenchError(msg)


def _wait_port_or_exit(child: Child, port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not child.alive():
            msg = f"{child.name} exited ({child.proc.returncode}) before listening:\n{child.tail()}"
            raise BenchError(msg)
        with contextlib.suppress(TimeoutError):
            wait_for_port(port, 0.5)
            return
    msg = f"{child.name} does not listen on {port} after {timeout_s}s:\n{child.tail()}"
    raise BenchError(msg)


def _terminate(proc: subprocess.Popen[Any], timeout_s: float) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(10)


def run_child(
    args: list[str],
    env: dict[str, str],
    timeout_s: float,
    log: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a short-lived child to completion (bounded); its stdout is returned."""
    if log:
        log.parent.mkdir(parents=True, exist_ok=True)
    err = log.open("ab") if log else subprocess.DEVNULL
    try:
        proc = subprocess.Popen(
            args,
            env=env,
            stdout=subprocess.PIPE,
            stderr=err,
            stdin=subprocess.DEVNULL,
            cwd=ROOT,
            start_new_session=True,
            text=True,
        )
        try:
            out, _ = proc.communicate(timeout=timeout_s)
        except BaseException:
            _terminate(proc, 5)
            raise
    finally:
        if log and not isinstance(err, int):
            err.close()
    return subprocess.CompletedProcess(args, proc.returncode, out, "")


@dataclass
class System:
    """Settings of the running system and the handles to reach it."""

    values: dict[str, Any]
    children: Children
    server_url: str
    write_port: int = 0
    read_port: int = 0

    @property
    def database_url(self) -> str:
        return str(self.values["database_url"])

    @property
    def redis_url(self) -> str:
        return str(self.values["redis_url"])

    @property
    def jwt_secret(self) -> str:
        return str(self.values["jwt_secret"])

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BEEOCLOCK_")}
        for name, value in self.values.items():
            env[f"BEEOCLOCK_{name.upper()}"] = str(value)
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        return env | extra

    def settings(self) -> Any:
        from beeoclock.settings import Settings

        known = set(Settings.model_fields)
        return Settings(**{k: v for k, v in self.values.items() if k in known})

    def application(self, pool_size: int | None = None) -> Any:
        from bench.data import application

        return application(self.settings(), pool_size)

    def token(self, tenants: list[str], sub: str = "bench-user", ttl_s: int = 6 * 3600) -> str:
        from beeoclock.auth import mint_token

        perms = all_permissions()
        return mint_token(self.jwt_secret, sub, dict.fromkeys(tenants, perms), ttl_s)

    def cli(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "beeoclock.cli", *args]

    def start_api(self, kind: str) -> int:
        port = free_port()
        workers = int(os.environ.get("BENCH_API_WORKERS", "1"))
        extra = ["--workers", str(workers)] if workers > 1 else []
        self.children.start(kind, [*self.cli(kind, "--port", str(port), *extra)], self.env(), port)
        return port

    def start_worker(self, kind: str) -> None:
        self.children.start(kind, self.cli(kind), self.env())

    def pids(self) -> dict[str, int]:
        return {name: child.pid for name, child in self.children.children.items()}


def new_values(database_url: str, kafka: str, redis_url: str, log_level: str) -> dict[str, Any]:
    return {
        "database_url": database_url,
        "kafka_bootstrap_servers": kafka,
        "redis_url": redis_url,
        "jwt_secret": secrets.token_urlsafe(32),
        # the personal-data vault's master key (settings that don't exist yet are ignored)
        "master_key": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
        "kafka_topic_prefix": f"bench{uuid.uuid4().hex[:6]}.",
        "projector_group": f"bench-{uuid.uuid4().hex[:6]}",
        "projector_rebalance_timeout_ms": 3000,
        "log_level": log_level,
        **rate_limits_off(),
    }


def migrate(system: System, log: Path) -> None:
    done = run_child(system.cli("migrate"), system.env(), 180, log)
    if done.returncode != 0:
        msg = f"`beeoclock migrate` failed ({done.returncode}); see {log}"
        raise BenchError(msg)


def wait_until(check: Callable[[], bool], timeout_s: float, what: str, poll_s: float = 0.1) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(poll_s)
    msg = f"{what}: not within {timeout_s:.0f}s"
    raise BenchError(msg)


_BEHIND = (
    "SELECT count(*) FROM written_positions w LEFT JOIN applied_positions a "
    "USING (tenant_id, stream) WHERE a.position IS NULL OR a.position < w.position"
)


def applied_everything(database_url: str) -> bool:
    """Every tenant's latest write is applied by the projections."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(_BEHIND).fetchone()
    return bool(row and row[0] == 0)


def store_size(database_url: str) -> int:
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute("SELECT COALESCE(max(notification_id), 0) FROM panel_events").fetchone()
    return int(row[0]) if row else 0


def count_events(database_url: str) -> dict[str, int]:
    """Events in the store: all, and those of the customer streams."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE originator_id LIKE 'customer:%%') "
            "FROM panel_events"
        ).fetchone()
    assert row is not None
    return {"all": int(row[0]), "customer": int(row[1])}
