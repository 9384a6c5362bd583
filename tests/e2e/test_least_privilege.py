"""The deployment the README describes: write API and read API apart, the read API logged in
as two least-privilege roles, one that reads the read models (row-level security) and one
that reads the event store; it answers reads, history, time travel and exports as usual."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
import pytest

from beeoclock.settings import Settings
from tests.support import Stack, Tenant, eventually, isolated, new_tenant, running

pytestmark = pytest.mark.slow


def login_url(settings: Settings, role: str) -> str:
    parts = urlsplit(settings.database_url)
    return urlunsplit(parts._replace(netloc=f"{role}@{parts.netloc.rpartition('@')[2]}"))


@pytest.fixture
def roles(servers: dict[str, str], database_url: str) -> Iterator[tuple[str, str]]:
    """Login roles in the two group roles (which migrating `database_url` made)."""
    reader, auditor = (f"panel_{kind}_{uuid.uuid4().hex[:8]}" for kind in ("read", "audit"))
    with psycopg.connect(servers["postgres"], autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {reader} LOGIN IN ROLE beeoclock_reader")
        conn.execute(f"CREATE ROLE {auditor} LOGIN IN ROLE beeoclock_auditor")
    try:
        yield reader, auditor
    finally:
        with psycopg.connect(servers["postgres"], autocommit=True) as conn:
            conn.execute(f"DROP ROLE {reader}")
            conn.execute(f"DROP ROLE {auditor}")


def test_a_read_api_with_least_privilege_roles_answers_everything(
    servers: dict[str, str], roles: tuple[str, str]
) -> None:
    reader, auditor = roles
    with isolated(servers) as settings:
        read_settings = settings.model_copy(
            update={
                "read_database_url": login_url(settings, reader),
                "audit_database_url": login_url(settings, auditor),
            }
        )
        read_side = Stack(read_settings)
        with running(settings, "write-api", "relay", "projector") as write_side:
            try:
                read_side.start("read-api")
                with (
                    httpx.Client(base_url=write_side.base_url, timeout=30) as writes,
                    httpx.Client(base_url=read_side.base_url, timeout=30) as reads,
                ):
                    writer = new_tenant(writes, settings)
                    reading = Tenant(reads, writer.tenant_id, writer.token)
                    made = writer.post("/api/v1/customer", json={"firstName": "Ala"})
                    assert made.status_code == 201, made.text
                    path = f"/api/v1/customer/{made.json()['_id']}"
                    eventually(lambda: reading.get(path).status_code == 200)
                    assert reading.get(path).json()["firstName"] == "Ala"
                    assert reading.get("/api/v1/customer/paged").json()["totalSize"] == 1
                    assert reading.get(f"{path}/history").json()["totalSize"] == 1
                    assert reading.get(path, params={"version": 1}).status_code == 200
                    export = reading.get(f"{path}/export")
                    assert export.status_code == 200, export.text
                    assert export.json()["current"]["firstName"] == "Ala"
                    # and the read API's sessions were those roles only
                    with psycopg.connect(settings.database_url) as conn:
                        users = {
                            u
                            for (u,) in conn.execute(
                                "SELECT DISTINCT usename FROM pg_stat_activity "
                                "WHERE datname = current_database() AND usename LIKE 'panel_%%'"
                            )
                        }
                    assert users == {reader, auditor}
            finally:
                read_side.stop()
