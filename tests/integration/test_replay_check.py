"""`beeoclock replay --check` beside a projector at work, and the cached answers a replay
drops. The projector is played by the test: between the check's last catch-up and its
comparison, it applies a customer written meanwhile and a change of one the check has
rebuilt, as a running projector would."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
import redis

from beeoclock.bootstrap import panel_application
from beeoclock.settings import Settings
from commands import handlers
from commands.application import PanelApplication
from commands.context import Meta
from commands.customer import UpdateCustomer
from events.base import PanelEvent, stream_id
from projections import cache, customers
from tests.support import register_customer
from workers import replay as replay_module
from workers.replay import TARGETS, Replay


@pytest.fixture(scope="module")
def app(settings: Settings) -> Iterator[PanelApplication]:
    application = panel_application(settings, pool_size=1)
    yield application
    application.close()


def project_now(settings: Settings, app: PanelApplication, tenant: str, customer_id: str) -> None:
    """The customer's events applied to the live read model, as the projector applies them."""
    with app.keys():
        events = [
            e
            for e in app.events.get(stream_id("customer", tenant, customer_id))
            if isinstance(e, PanelEvent)
        ]
        with psycopg.connect(settings.database_url) as conn, conn.cursor() as cur:
            customers.project(cur, events, lambda *_: [])


def test_a_check_beside_a_projector_at_work_finds_no_damage(
    settings: Settings, app: PanelApplication, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant = uuid.uuid4().hex[:24]
    known = register_customer(settings, tenant)
    project_now(settings, app, tenant, known)
    compare = Replay._compare

    def projector_at_work(self: Replay, conn: psycopg.Connection[Any], report: Any) -> None:
        written = register_customer(settings, tenant)  # after the catch-up read the store
        project_now(settings, app, tenant, written)
        state = handlers.load_customer(app, tenant, known).state
        handlers.update_customer(
            app,
            UpdateCustomer(
                Meta(tenant, "user-1", uuid.uuid4().hex, datetime.now(UTC)),
                known,
                {**state.personal, "note": "changed"},
                state.customer_type,
                state.state,
                [],
                None,
            ),
        )
        project_now(settings, app, tenant, known)
        compare(self, conn, report)

    monkeypatch.setattr(Replay, "_compare", projector_at_work)
    report = Replay(settings, TARGETS["customers"], tenant, checking=True, progress=False).check()
    assert not report.damaged, report.as_dict()


def test_a_replay_drops_what_a_read_stores_from_the_old_table_after_the_swap(
    settings: Settings, servers: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read that computed its answer before the swap and stores it after the answers were
    dropped: under a generation that moved on, or, an entity with none, dropped again once
    the reads in flight have stored theirs."""
    monkeypatch.setattr(replay_module, "CACHE_GRACE_S", 1.0)
    tenant = uuid.uuid4().hex[:24]
    client = redis.Redis.from_url(servers["redis"])
    changed = cache.generation_key(tenant, "customer", "changed")
    client.set(changed, 3, ex=600)
    late = f"v:{tenant}:customer:never-changed:0"
    replay = Replay(settings, TARGETS["customers"], tenant, progress=False)

    def read_in_flight() -> None:
        time.sleep(0.3)  # after the first drop, within the grace
        client.set(late, b"1\n{}", ex=600)

    writer = threading.Thread(target=read_in_flight)
    writer.start()
    started = time.monotonic()
    replay._drop_cached()
    writer.join()
    assert time.monotonic() - started >= 1.0
    assert client.get(changed) == b"4"
    assert client.ttl(changed) > 600  # bumped as the projector bumps: with its TTL
    assert client.get(late) is None
    client.delete(changed)
    client.close()


def test_a_replay_without_redis_leaves_the_cache_to_its_ttl(settings: Settings) -> None:
    """No Redis configured (an operator's shell): the swap is done, nothing to drop; before,
    the replay failed after its swap (a malformed URL raised)."""
    replay = Replay(
        settings.model_copy(update={"redis_url": ""}), TARGETS["customers"], progress=False
    )
    replay._drop_cached()  # no exception
