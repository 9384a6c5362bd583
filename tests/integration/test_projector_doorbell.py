"""The projector at rest (workers/projector.py): quiet for a while, it stops polling the broker
and waits on the event store's NOTIFY channel; a write rings it awake before its events reach
Kafka, and a fault of that channel only makes it poll again. Real PostgreSQL and a real
Kafka-protocol broker; the relay and the projector run in threads of the test."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from beeoclock import kafka
from beeoclock.settings import Settings
from tests.support import eventually, projected, relay_and_projector
from tests.support import register_customer as register
from workers import projector as projector_module
from workers.projector import Doorbell, Projector


class Polls:
    """Counts the projector consumer's polls (the consumer is the real one)."""

    def __init__(self) -> None:
        self.count = 0
        self.consumer: Any = None
        self.real = kafka.consumer

    def make(self, settings: Settings, **overrides: Any) -> Any:
        consumer = self.real(settings, **overrides)
        poll = consumer.poll

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.count += 1
            return poll(*args, **kwargs)

        consumer.poll = counted
        self.consumer = consumer
        return consumer


@pytest.fixture
def polls(monkeypatch: pytest.MonkeyPatch) -> Polls:
    counter = Polls()
    monkeypatch.setattr(projector_module.kafka, "consumer", counter.make)
    return counter


class Dozes(list[tuple[float, bool]]):
    """(wait, rung) of every look at the doorbell that waited: a doze, and how it ended; and
    (0, False) whenever the projector stopped listening. `started` is set as a doze begins."""

    def __init__(self) -> None:
        super().__init__()
        self.started = threading.Event()


@pytest.fixture
def dozes(monkeypatch: pytest.MonkeyPatch) -> Dozes:
    seen = Dozes()
    rang = Doorbell.rang

    def recorded(self: Doorbell, wait_s: float = 0.0) -> bool:
        if wait_s > 0:
            seen.started.set()
        rung = rang(self, wait_s)
        if wait_s > 0:
            seen.append((wait_s, rung))
        return rung

    monkeypatch.setattr(Doorbell, "rang", recorded)
    disarm = Doorbell.disarm

    def recorded_disarm(self: Doorbell) -> None:
        if self.armed:
            seen.append((0.0, False))  # (0, False): stopped listening
        disarm(self)

    monkeypatch.setattr(Doorbell, "disarm", recorded_disarm)
    return seen


@pytest.fixture
def pipeline(settings: Settings, polls: Polls, dozes: Dozes) -> Iterator[Projector]:
    """Relay and projector running; the projector dozes after half a second of quiet."""
    projector = Projector(settings)
    projector.idle_after_s = 0.5
    with relay_and_projector(settings, projector):
        assert polls.consumer is not None  # the counted consumer is the one that joined
        yield projector


def test_at_rest_it_stops_polling_and_a_write_wakes_it(
    settings: Settings, pipeline: Projector, polls: Polls, dozes: Dozes
) -> None:
    eventually(lambda: dozes, timeout_s=20)  # quiet long enough: it dozes
    before = polls.count
    time.sleep(3.0)
    # awake, an empty poll lasts 200 ms (15 in these 3 s); dozing, one short look a second
    assert polls.count - before <= 5
    assert not any(rung for _, rung in dozes)  # nothing rang
    assert all(wait == pipeline._doze_s() for wait, _ in dozes if wait)

    # a write committed as a doze begins (a doze lasts a second, the save a few ms)
    dozes.started.clear()
    tenant = uuid.uuid4().hex[:24]
    customer_id = register(settings, tenant, after=dozes.started)
    eventually(lambda: projected(settings, tenant, customer_id), timeout_s=20)
    # the store's NOTIFY ended that doze (a doze that ran out would record no ring): the
    # projector was polling again before the relay had published the write's events
    rung_at = next(i for i, (_, rung) in enumerate(dozes) if rung)
    # and awake it listens no more (a listener is signalled at every commit)
    assert (0.0, False) in dozes[rung_at:]


def test_a_lost_channel_makes_it_poll_until_the_channel_is_back(
    settings: Settings,
    pipeline: Projector,
    dozes: Dozes,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(Doorbell, "retry_s", 2.0)
    eventually(lambda: dozes and dozes[-1] == (pipeline._doze_s(), False), 20)  # a doze ran out
    seen = len(dozes)
    with psycopg.connect(settings.database_url, autocommit=True) as other:
        (killed,) = other.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() "
            "AND query LIKE 'SELECT coalesce((SELECT position FROM relay_positions%'"
        ).fetchone() or (0,)
    assert killed == 1  # the doorbell's connection
    # the fault ends the doze as a ring would: it polls again
    eventually(lambda: any(rung for _, rung in dozes[seen:]), timeout_s=10)
    tenant = uuid.uuid4().hex[:24]
    customer_id = register(settings, tenant)
    eventually(lambda: projected(settings, tenant, customer_id), timeout_s=20)
    # connected again after retry_s, it dozes again
    after = len(dozes)
    eventually(lambda: any(wait and not rung for wait, rung in dozes[after:]), timeout_s=20)


def test_it_listens_only_once_every_commit_was_published(settings: Settings) -> None:
    relay = f"relay-{uuid.uuid4().hex[:8]}"
    bell = Doorbell(settings.database_url, "panel_events", "panel_events", relay, 1.0)
    with psycopg.connect(settings.database_url, autocommit=True) as other:
        try:
            assert bell.arm() is False  # no relay has recorded a position: events may be due
            assert bell.rang(0.0) is True  # disarmed: poll
            other.execute("INSERT INTO relay_positions (name, position) VALUES (%s, -5)", (relay,))
            assert bell.arm() is False  # the relay is behind the store
            other.execute(
                "UPDATE relay_positions SET position = "
                "(SELECT coalesce(max(notification_id), 0) FROM panel_events) WHERE name = %s",
                (relay,),
            )
            assert bell.arm() is True
            assert bell.rang(0.2) is False  # listening, nothing committed
            other.execute("NOTIFY panel_events")
            assert bell.rang(5.0) is True
            other.execute("NOTIFY panel_events")
            bell.disarm()  # the ring already sent is taken with it
            assert bell.armed is False
            assert bell.conn is not None
            listening = bell.conn.execute("SELECT count(*) FROM pg_listening_channels()")
            assert listening.fetchone() == (0,)  # not listening
            assert bell.arm() is True
            assert bell.rang(0.2) is False

            assert bell.conn is not None
            other.execute("SELECT pg_terminate_backend(%s)", (bell.conn.info.backend_pid,))
            time.sleep(0.1)
            assert bell.rang(0.5) is True  # the fault disarms it: poll meanwhile
            assert bell.conn is None
            assert bell.arm() is False  # not again before retry_s
            bell.retry_s = 0.0
            assert bell.arm() is True  # connected and listening again
            other.execute("NOTIFY panel_events")
            assert bell.rang(5.0) is True
        finally:
            bell.close()


def test_an_unreachable_channel_means_polling() -> None:
    bell = Doorbell(
        "postgresql://nobody@127.0.0.1:1/none", "panel_events", "panel_events", "r", 1.0
    )
    assert bell.arm() is False
    assert bell.rang(1.0) is True
    assert bell.conn is None
