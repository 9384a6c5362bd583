"""How the relay groups commits into Kafka batches: while events come faster than its rounds,
rounds start at least `relay_round_interval_ms` apart, so the commits of that time go as one
batch per partition (the development broker's cost per fetch grows with the batches it
holds); an event alone goes at once, and a backlog round after round. Real PostgreSQL and
broker; the relay runs in a thread of the test and counts its rounds."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from eventsourcing.persistence import Notification

from beeoclock.bootstrap import panel_application
from beeoclock.settings import Settings
from commands import handlers
from commands.application import PanelApplication
from commands.context import Meta
from commands.customer import RegisterCustomer
from tests.support import eventually
from workers.relay import BATCH, Relay


class CountingRelay(Relay):
    """The relay, keeping the notification ids of each round it published; with `slow_s`, a
    round's sending takes that much longer (a broker far away)."""

    def __init__(self, settings: Settings, slow_s: float = 0.0) -> None:
        super().__init__(settings)
        self.slow_s = slow_s
        self.rounds: list[list[int]] = []
        self.started: list[float] = []  # when each round's publishing began

    def _publish(
        self, app: Any, producer: Any, notifications: Sequence[Notification], conn: Any
    ) -> Any:
        self.rounds.append([n.id for n in notifications])
        self.started.append(time.monotonic())
        time.sleep(self.slow_s)
        return super()._publish(app, producer, notifications, conn)

    def rounds_with(self, ids: set[int]) -> list[list[int]]:
        return [r for r in self.rounds if ids & set(r)]

    def sent(self, ids: set[int]) -> bool:
        """Whether every one of these notifications is in a round the relay began."""
        return ids <= {i for r in self.rounds for i in r}


@contextmanager
def counting_relay(settings: Settings, slow_s: float = 0.0) -> Iterator[CountingRelay]:
    relay = CountingRelay(settings, slow_s)
    thread = threading.Thread(target=relay.run, daemon=True)
    thread.start()
    try:
        yield relay
    finally:
        relay.stop()
        thread.join(timeout=30)


def register(app: PanelApplication, tenant: str) -> int:
    """A new customer of the tenant, saved on its own (one commit); its notification id."""
    meta = Meta(tenant, "u1", uuid.uuid4().hex, datetime.now(UTC))
    command = RegisterCustomer(
        meta, uuid.uuid4().hex[:24], {"firstName": "Ola"}, "regular", "active", [], None
    )
    handlers.register_customer(app, command)
    return app.recorder.max_notification_id() or 0


def test_commits_that_come_faster_than_rounds_go_together(settings: Settings) -> None:
    """A hundred commits from four writers at once to a relay whose rounds take 10 ms more
    than they would (so that commits come faster than rounds): once a round has sent more
    than one, rounds start at least 300 ms apart, so a few rounds carry them all, not one
    for every commit or two."""
    settings = settings.model_copy(update={"relay_round_interval_ms": 300})
    apps = [panel_application(settings, pool_size=1) for _ in range(4)]
    tenant = uuid.uuid4().hex[:24]

    def write(app: PanelApplication) -> None:
        for _ in range(25):
            register(app, tenant)

    try:
        with counting_relay(settings, slow_s=0.01) as relay:
            register(apps[0], tenant)  # the relay is active and has caught up
            eventually(lambda: relay.rounds, 30)
            time.sleep(0.5)
            writers = [threading.Thread(target=write, args=(app,)) for app in apps]
            first = (apps[0].recorder.max_notification_id() or 0) + 1
            began = time.monotonic()
            for writer in writers:
                writer.start()
            for writer in writers:
                writer.join()
            took = time.monotonic() - began
            last = apps[0].recorder.max_notification_id() or 0
            assert last - first + 1 >= 100
            eventually(lambda: relay.sent({last}), 10)  # in order: all before it too
            rounds = relay.rounds_with(set(range(first, last + 1)))
    finally:
        for app in apps:
            app.close()
    # a round at the first commit, one right after it, then one every 300 ms at most
    assert len(rounds) <= 3 + took / 0.3, (took, [len(r) for r in rounds])


def test_an_event_alone_goes_at_once(settings: Settings) -> None:
    """With rounds at least 2 s apart once a round has sent more than one, an event written
    right after a round that sent one alone is published well within the 2 s: the relay
    holds nothing back while events come one a round."""
    settings = settings.model_copy(update={"relay_round_interval_ms": 2000})
    app = panel_application(settings, pool_size=1)
    tenant = uuid.uuid4().hex[:24]
    try:
        with counting_relay(settings) as relay:
            first = register(app, tenant)
            eventually(lambda: relay.sent({first}), 30, interval_s=0.005)
            written = time.monotonic()
            second = register(app, tenant)
            eventually(lambda: relay.sent({second}), 10, interval_s=0.005)
            took = time.monotonic() - written
    finally:
        app.close()
    assert took < 1.0, took


def test_rounds_not_apart_when_catching_up(settings: Settings) -> None:
    """A backlog of more than one round's worth is sent round after round without waiting
    between them: 1,200 commits behind, with rounds at least 2 s apart, the full rounds
    follow one another within a second."""
    settings = settings.model_copy(update={"relay_round_interval_ms": 2000})
    app = panel_application(settings, pool_size=1)
    tenant = uuid.uuid4().hex[:24]
    try:
        last = 0
        for _ in range(1200):
            last = register(app, tenant)
        with counting_relay(settings) as relay:
            eventually(lambda: relay.sent({last}), 30, interval_s=0.01)
            rounds, started = relay.rounds, relay.started
    finally:
        app.close()
    full = [i for i, r in enumerate(rounds) if len(r) == BATCH]
    assert len(full) >= 2, [len(r) for r in rounds]
    gaps = [started[i + 1] - started[i] for i in full if i + 1 < len(started)]
    assert max(gaps) < 1.0, gaps
