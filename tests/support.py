"""Test support: real servers, fresh databases, and the system's processes as children."""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg

from beeoclock.auth import mint_token
from beeoclock.embedded import free_port, wait_for_port
from beeoclock.permissions import ALL_PERMISSIONS, LIMIT_CLASSES
from beeoclock.settings import Settings

LOG_DIR = Path(os.environ.get("BEEOCLOCK_TEST_LOGS", "/tmp/beeoclock-test-logs"))


def create_database(server_url: str) -> str:
    """A fresh, migrated database on the server; returns its URL."""
    from beeoclock.migrations import migrate

    name = f"bt_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = with_database(server_url, name)
    migrate(Settings(database_url=url))
    return url


def drop_database(server_url: str, url: str) -> None:
    name = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def with_database(server_url: str, name: str) -> str:
    parts = urlsplit(server_url)
    return urlunsplit(parts._replace(path=f"/{name}"))


#: Tests make many requests as one user; the rate-limit tests set their own limits.
NO_RATE_LIMITS = {f"rate_limit_{c.name}": "off" for c in LIMIT_CLASSES}


def settings_for(database_url: str, kafka: str, redis_url: str, **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "kafka_bootstrap_servers": kafka,
        "redis_url": redis_url,
        "jwt_secret": secrets.token_urlsafe(32),
        "master_key": base64.b64encode(secrets.token_bytes(32)).decode(),
        "kafka_topic_prefix": f"t{uuid.uuid4().hex[:8]}.",
        "projector_group": f"g{uuid.uuid4().hex[:8]}",
        "projector_rebalance_timeout_ms": 3000,
        **NO_RATE_LIMITS,
    }
    return Settings(**(values | extra))


def offline_settings() -> Settings:
    """Settings an app can be built from that point at no running server."""
    return settings_for(
        "postgresql://unused@127.0.0.1:1/unused", "127.0.0.1:1", "redis://127.0.0.1:1/0"
    )


def env_of(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BEEOCLOCK_")}
    for name, value in settings.model_dump().items():
        env[f"BEEOCLOCK_{name.upper()}"] = str(value)
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class Stack:
    """The system's processes (api, relay, projector) as real child processes."""

    settings: Settings
    port: int = field(default_factory=free_port)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:6])

    def start(self, name: str, kind: str | None = None, **env: str) -> subprocess.Popen[bytes]:
        kind = kind or name
        args = [sys.executable, "-m", "beeoclock.cli", kind]
        if kind in {"api", "write-api", "read-api"}:
            args += ["--port", str(self.port)]
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        log = (LOG_DIR / f"{self.tag}-{name}.log").open("ab")
        proc = subprocess.Popen(
            args,
            env={**env_of(self.settings), **env},
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        self.procs[name] = proc
        if kind in {"api", "write-api", "read-api"}:
            wait_for_port(self.port, 60)
        return proc

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs.pop(name)
        proc.send_signal(sig)
        proc.wait(30)

    def stop(self) -> None:
        for name in list(self.procs):
            proc = self.procs[name]
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for name in list(self.procs):
            proc = self.procs.pop(name)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self, name: str) -> str:
        return (LOG_DIR / f"{self.tag}-{name}.log").read_text(errors="replace")


@contextlib.contextmanager
def isolated(
    servers: dict[str, str], kafka_address: str | None = None, **extra: Any
) -> Iterator[Settings]:
    """Settings of a system of its own: a fresh database (dropped afterwards), fresh topics
    and a fresh consumer group."""
    database = create_database(servers["postgres"])
    try:
        yield settings_for(database, kafka_address or servers["kafka"], servers["redis"], **extra)
    finally:
        drop_database(servers["postgres"], database)


@contextlib.contextmanager
def running(settings: Settings, *names: str) -> Iterator[Stack]:
    stack = Stack(settings)
    try:
        for name in names:
            stack.start(name)
        yield stack
    finally:
        stack.stop()


def wait_until_projecting(stack: Stack, timeout_s: float = 60) -> None:
    """Until a write is readable: the projector has joined its group and applies events."""
    with httpx.Client(base_url=stack.base_url, timeout=10) as client:
        probe = new_tenant(client, stack.settings)
        created = probe.post("/api/v1/customer", json={"firstName": "Probe"})
        assert created.status_code == 201, created.text
        path = f"/api/v1/customer/{created.json()['_id']}"
        eventually(lambda: probe.get(path).status_code == 200, timeout_s=timeout_s)


def token(
    settings: Settings, tenants: dict[str, list[str]], sub: str = "user-1", ttl: int = 600
) -> str:
    return mint_token(settings.jwt_secret, sub, tenants, ttl)


@dataclass
class Tenant:
    """An HTTP client acting as one user of one fresh tenant."""

    client: httpx.Client
    tenant_id: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", "x-business-tenant-id": self.tenant_id}

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {**self.headers, **kwargs.pop("headers", {})}
        return self.client.request(method, path, headers=headers, **kwargs)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("PUT", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("DELETE", path, **kwargs)


def new_tenant(
    client: httpx.Client,
    settings: Settings,
    permissions: list[str] | None = None,
    sub: str = "user-1",
) -> Tenant:
    tenant_id = uuid.uuid4().hex[:24]
    perms = list(ALL_PERMISSIONS) if permissions is None else permissions
    return Tenant(client, tenant_id, token(settings, {tenant_id: perms}, sub))


def eventually(check: Callable[[], Any], timeout_s: float = 30.0, interval_s: float = 0.05) -> Any:
    """Retry `check` until it returns a truthy value without raising; then return it."""
    deadline = time.monotonic() + timeout_s
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except AssertionError as exc:
            last = exc
        time.sleep(interval_s)
    if last:
        raise last
    msg = f"condition not met within {timeout_s}s"
    raise AssertionError(msg)


def cli(settings: Settings, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run `beeoclock <args>` as an operator would, with the system's settings."""
    done = subprocess.run(
        [sys.executable, "-m", "beeoclock.cli", *args],
        env=env_of(settings),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if check:
        assert done.returncode == 0, done.stderr
    return done


def register_customer(
    settings: Settings,
    tenant: str,
    customer_id: str | None = None,
    *,
    after: threading.Event | None = None,
) -> str:
    """A new customer saved through the application (the write API's own code, in this
    process), once `after` is set (if given); its id."""
    from beeoclock.bootstrap import panel_application
    from commands import handlers
    from commands.context import Meta
    from commands.customer import RegisterCustomer

    app = panel_application(settings, pool_size=1)
    try:
        customer_id = customer_id or uuid.uuid4().hex[:24]
        meta = Meta(tenant, "u1", uuid.uuid4().hex, datetime.now(UTC))
        command = RegisterCustomer(
            meta, customer_id, {"firstName": "Ola"}, "regular", "active", [], None
        )
        if after is not None:
            assert after.wait(20)
        handlers.register_customer(app, command)
        return customer_id
    finally:
        app.close()


def projected(settings: Settings, tenant: str, customer_id: str) -> bool:
    """Whether the customer has a row in the read model."""
    with psycopg.connect(settings.database_url) as conn:
        row = conn.execute(
            "SELECT 1 FROM customers WHERE tenant_id = %s AND id = %s", (tenant, customer_id)
        ).fetchone()
    return row is not None


@contextlib.contextmanager
def relay_and_projector(settings: Settings, projector: Any = None) -> Iterator[Any]:
    """The relay and a projector (`projector`, or a new one) running in threads of the test;
    yields the projector once it has joined its group and has its partitions (tansu completes
    a join only after the rebalance timeout). Both are stopped and joined at the end."""
    from workers.projector import Projector
    from workers.relay import Relay

    relay, projector = Relay(settings), projector or Projector(settings)
    threads = [threading.Thread(target=w.run, daemon=True) for w in (relay, projector)]
    for thread in threads:
        thread.start()
    try:
        eventually(lambda: projector.in_group, 60)
        yield projector
    finally:
        relay.stop()
        projector.stop()
        for thread in threads:
            thread.join(timeout=70)
