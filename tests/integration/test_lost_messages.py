"""What never reaches the broker as it should. An event the relay can't make a message of
is set aside, not in everyone's way. Messages lost on the way (a broker that lost acknowledged
messages, or was started again empty): every message names the one passed on before it for
its tenant and stream, so the projector finds the gap at the tenant's next message and
applies what is missing from the event store; a tenant with no next message is found by
comparing the relay's last message of each tenant with what was applied (`heal`). Version
gating alone heals only an entity with a later event: here the lost event is its entity's
last. Real PostgreSQL and broker; the relay and the projector run in threads of the test,
and the broker "loses" a message by the relay's producer acknowledging it without sending
it."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
import redis
from kafka import TopicPartition

from beeoclock import kafka
from beeoclock.bootstrap import panel_application
from beeoclock.settings import Settings
from events import envelope
from tests.support import eventually, projected, relay_and_projector
from tests.support import register_customer as register
from workers import relay as relay_module
from workers.projector import Projector

REGISTERED = "events.customer:CustomerRegistered"


class Acknowledged:
    """The broker's answer to a send it "lost": the relay's producer waits on it as on a
    send's future."""

    def get(self, timeout: float | None = None) -> None:
        return None


class Losing:
    """The relay's producer, acknowledging without sending the messages `lose` picks."""

    def __init__(self) -> None:
        self.doomed: set[str] = set()  # customer ids whose messages are lost
        self.lost: list[bytes] = []
        self.real = kafka.producer

    def make(self, settings: Settings) -> Any:
        producer = self.real(settings)
        send = producer.send

        def losing(topic: str, *, key: bytes, value: bytes) -> Any:
            if envelope.decode(value).entity_id in self.doomed:
                self.lost.append(value)
                return Acknowledged()
            return send(topic, key=key, value=value)

        producer.send = losing
        return producer


@pytest.fixture
def losing(monkeypatch: pytest.MonkeyPatch) -> Losing:
    broker = Losing()
    monkeypatch.setattr(relay_module.kafka, "producer", broker.make)
    return broker


def projector_healing_every(settings: Settings, seconds: float) -> Projector:
    projector = Projector(settings)
    projector.heal_every_s = seconds
    return projector


@pytest.fixture
def pipeline(settings: Settings, losing: Losing) -> Iterator[Projector]:
    """A projector that finds lost messages only at a tenant's next message (it looks for
    tenants with none once an hour): each mechanism on its own."""
    with relay_and_projector(settings, projector_healing_every(settings, 3600)) as projector:
        yield projector


@pytest.fixture
def healing(settings: Settings, losing: Losing) -> Iterator[Projector]:
    """A projector that looks for tenants behind the relay every half second."""
    with relay_and_projector(settings, projector_healing_every(settings, 0.5)) as projector:
        yield projector


def positions(settings: Settings, tenant: str) -> tuple[int, int, int]:
    """The tenant's customer stream: (written, passed on by the relay, applied)."""
    with psycopg.connect(settings.database_url) as conn:
        row = conn.execute(
            "SELECT w.position, coalesce(r.position, 0), coalesce(a.position, 0) "
            "FROM written_positions w "
            "LEFT JOIN relay_tenant_positions r USING (tenant_id, stream) "
            "LEFT JOIN applied_positions a USING (tenant_id, stream) "
            "WHERE w.tenant_id = %s AND w.stream = 'customer'",
            (tenant,),
        ).fetchone()
    assert row is not None
    return row


def test_a_tenant_whose_last_message_was_lost_is_healed_without_writing_again(
    settings: Settings, healing: Projector, losing: Losing
) -> None:
    """No next message names the lost one: the projector finds the tenant behind what the
    relay passed on, once it has read the partition to its end, and applies the rest from
    the event store. Before, the tenant stayed behind (its reads answering 503) until it
    wrote again."""
    tenant = uuid.uuid4().hex[:24]
    first, lost = (uuid.uuid4().hex[:24] for _ in range(2))
    register(settings, tenant, first)
    eventually(lambda: projected(settings, tenant, first), timeout_s=30)
    losing.doomed.add(lost)
    register(settings, tenant, lost)
    eventually(lambda: losing.lost, timeout_s=30)
    eventually(lambda: projected(settings, tenant, lost), timeout_s=30)
    written, relayed, applied = eventually(
        lambda: (p := positions(settings, tenant))[2] == p[0] and p, timeout_s=30
    )
    assert written == relayed == applied


def test_reads_go_on_past_an_event_the_relay_set_aside(
    settings: Settings, healing: Projector
) -> None:
    """An event the relay dead-letters is its tenant's latest write, which reads wait for:
    the relay counts it as passed on, and the projector takes the tenant as applied past it
    (nothing in the event store can be applied of it). Before, the tenant's reads answered
    503 until its next event was applied."""
    tenant = uuid.uuid4().hex[:24]
    first = uuid.uuid4().hex[:24]
    register(settings, tenant, first)
    eventually(lambda: projected(settings, tenant, first), timeout_s=30)
    corrupt(settings, tenant)
    written, relayed, applied = eventually(
        lambda: (p := positions(settings, tenant))[2] == p[0] and p, timeout_s=30
    )
    assert written == relayed == applied


def test_a_tenants_next_message_brings_back_what_was_lost_before_it(
    settings: Settings, pipeline: Projector, losing: Losing
) -> None:
    tenant = uuid.uuid4().hex[:24]
    first, lost, last = (uuid.uuid4().hex[:24] for _ in range(3))
    register(settings, tenant, first)
    eventually(lambda: projected(settings, tenant, first), timeout_s=30)

    losing.doomed.add(lost)
    register(settings, tenant, lost)
    eventually(lambda: losing.lost, timeout_s=30)  # "acknowledged", never delivered
    time.sleep(1.0)
    assert not projected(settings, tenant, lost)  # and nothing else would bring it

    register(settings, tenant, last)  # names the lost one as its previous
    eventually(lambda: projected(settings, tenant, last), timeout_s=30)
    assert projected(settings, tenant, lost)
    with psycopg.connect(settings.database_url) as conn:
        written, applied = conn.execute(
            "SELECT w.position, a.position FROM written_positions w "
            "JOIN applied_positions a USING (tenant_id, stream) WHERE tenant_id = %s",
            (tenant,),
        ).fetchone()
    assert applied == written


def corrupt(settings: Settings, tenant: str, topic: str = REGISTERED) -> str:
    """A stored event of `tenant` that no message can be made of (a state that does not
    decode), as a bug or a bad migration might leave one; its stream id."""
    stream = f"customer:{tenant}:{'0' * 24}"
    with psycopg.connect(settings.database_url) as conn:
        conn.execute(
            "INSERT INTO panel_events (originator_id, originator_version, topic, state) "
            "VALUES (%s, 1, %s, 'not json')",
            (stream, topic),
        )
    return stream


@contextmanager
def unknown_to_the_relay(settings: Settings, tenant: str) -> Iterator[str]:
    """A stored event of a class this release does not know, while the block runs; then
    taken away (as a release that knows the class would publish it): the relay stops at it,
    for every test of the module."""
    stream = corrupt(settings, tenant, "events.customer:CustomerFromTheFuture")
    try:
        yield stream
    finally:
        with psycopg.connect(settings.database_url) as conn:
            conn.execute("DELETE FROM panel_events WHERE originator_id = %s", (stream,))


def test_an_event_no_message_can_be_made_of_is_set_aside_and_the_rest_go_on(
    settings: Settings, pipeline: Projector
) -> None:
    """A stored event the relay can't make a message of is kept in `relay_dead_letters` and
    skipped; before, the relay stopped at it, restart after restart, and no tenant's events
    were published any more."""
    tenant = uuid.uuid4().hex[:24]
    stream = corrupt(settings, tenant)
    after = uuid.uuid4().hex[:24]
    register(settings, tenant, after)
    eventually(lambda: projected(settings, tenant, after), timeout_s=30)
    with psycopg.connect(settings.database_url) as conn:
        kept = conn.execute(
            "SELECT topic, error FROM relay_dead_letters WHERE originator_id = %s", (stream,)
        ).fetchall()
    assert len(kept) == 1
    assert kept[0][0] == REGISTERED


def test_an_event_of_a_class_the_relay_does_not_know_stops_it_until_one_does(
    settings: Settings, pipeline: Projector
) -> None:
    """In a rolling upgrade the write API may store a new kind of event before the relay
    knows it: the relay waits there (skipping it would lose it for the read models), and
    goes on once it can (here: the event taken away, as an upgraded relay would know it)."""
    tenant = uuid.uuid4().hex[:24]
    after = uuid.uuid4().hex[:24]
    with unknown_to_the_relay(settings, tenant) as stream:
        register(settings, tenant, after)
        time.sleep(3.0)
        assert not projected(settings, tenant, after)
        with psycopg.connect(settings.database_url) as conn:
            assert conn.execute(
                "SELECT count(*) FROM relay_dead_letters WHERE originator_id = %s", (stream,)
            ).fetchone() == (0,)
    eventually(lambda: projected(settings, tenant, after), timeout_s=30)


def test_a_gap_around_an_event_set_aside_is_filled_without_it(
    settings: Settings, pipeline: Projector, losing: Losing
) -> None:
    """The events a projector fetches to fill a gap may hold one that does not decode (the
    relay set it aside): it is skipped, not the batch's undoing."""
    tenant = uuid.uuid4().hex[:24]
    first, lost, last = (uuid.uuid4().hex[:24] for _ in range(3))
    register(settings, tenant, first)
    eventually(lambda: projected(settings, tenant, first), timeout_s=30)
    corrupt(settings, tenant)
    losing.doomed.add(lost)
    register(settings, tenant, lost)
    eventually(lambda: losing.lost, timeout_s=30)
    register(settings, tenant, last)
    eventually(lambda: projected(settings, tenant, last), timeout_s=30)
    assert projected(settings, tenant, lost)
    with psycopg.connect(settings.database_url) as conn:
        dead = conn.execute(
            "SELECT count(*) FROM projector_dead_letters WHERE tenant_id = %s", (tenant,)
        ).fetchone()
    assert dead == (0,)


def test_filling_a_gap_takes_only_the_events_the_relay_publishes(settings: Settings) -> None:
    """An event of a class this projector does not know (a newer release's, which a newer
    relay published and this projector dead-lettered) is left out of a gap's events."""
    from workers.projector import _stored_between

    tenant = uuid.uuid4().hex[:24]
    known = uuid.uuid4().hex[:24]
    register(settings, tenant, known)
    app = panel_application(settings, pool_size=1)
    with unknown_to_the_relay(settings, tenant):
        try:
            with app.keys(), psycopg.connect(settings.database_url) as conn, conn.cursor() as cur:
                found = _stored_between(cur, app, "customer", tenant, 0, 2**62)
        finally:
            app.close()
    assert [e.originator_id for e in found] == [f"customer:{tenant}:{known}"]


def test_events_lost_before_a_message_that_fails_are_applied_all_the_same(
    settings: Settings, pipeline: Projector, losing: Losing
) -> None:
    """The message that reveals a gap can't be applied itself (here a forged change of a
    customer no one registered): it is dead-lettered, and the events lost before it are
    applied nonetheless, not rolled back with it."""
    from events.customer import CustomerDetailsChanged

    tenant = uuid.uuid4().hex[:24]
    first, lost = uuid.uuid4().hex[:24], uuid.uuid4().hex[:24]
    register(settings, tenant, first)
    eventually(lambda: projected(settings, tenant, first), timeout_s=30)
    losing.doomed.add(lost)
    register(settings, tenant, lost)
    eventually(lambda: losing.lost, timeout_s=30)
    with psycopg.connect(settings.database_url) as conn:
        row = conn.execute(
            "SELECT notification_id FROM panel_events WHERE originator_id = %s",
            (f"customer:{tenant}:{lost}",),
        ).fetchone()
    assert row is not None
    forged = CustomerDetailsChanged(  # type: ignore[call-arg]
        originator_id=f"customer:{tenant}:{'f' * 24}",
        originator_version=2,
        timestamp=datetime.now(UTC),
        tenant_id=tenant,
        actor="mallory",
        request_id="r",
        personal={"firstName": "X"},
        customer_type="regular",
    )
    producer = kafka.producer(settings)
    try:
        producer.send(
            settings.topic_customer,
            key=tenant.encode(),
            value=envelope.encode(row[0] + 10**9, forged, previous=row[0]),
        ).get(timeout=10)
    finally:
        producer.close()
    eventually(lambda: projected(settings, tenant, lost), timeout_s=30)
    with psycopg.connect(settings.database_url) as conn:
        dead = conn.execute(
            "SELECT aggregate_id FROM projector_dead_letters WHERE tenant_id = %s", (tenant,)
        ).fetchall()
    assert dead == [("f" * 24,)]


def test_messages_on_their_way_are_not_taken_for_lost(settings: Settings) -> None:
    """`heal` applies only what is certainly lost. A tenant's message in a partition the
    projector has not read yet is on its way; it is lost once the projector has applied a
    later message of that partition (the producer keeps a partition in the order of the
    notifications), or has read the partition to its end without it (here: read, and not
    applied, as if it had never come)."""
    from beeoclock.kafka import partition_of
    from workers.relay import Relay

    partitions = settings.kafka_partitions
    early = uuid.uuid4().hex[:24]
    late = uuid.uuid4().hex[:24]
    while partition_of(late, partitions) == partition_of(early, partitions):
        late = uuid.uuid4().hex[:24]
    customers = {early: uuid.uuid4().hex[:24], late: uuid.uuid4().hex[:24]}
    relay = Relay(settings)
    thread = threading.Thread(target=relay.run, daemon=True)
    thread.start()
    app = panel_application(settings, pool_size=1)
    redis_client = redis.Redis.from_url(settings.redis_url)
    projector = Projector(settings)
    try:
        for tenant, customer in customers.items():
            register(settings, tenant, customer)
        relayed = {t: eventually(lambda t=t: positions(settings, t)[1], 30) for t in customers}
        projector.conn = projector._connect()
        projector.consumer = consumer = kafka.consumer(settings, group_id=None)
        tps = {
            t: TopicPartition(settings.topic_customer, partition_of(t, partitions))
            for t in customers
        }
        consumer.assign(sorted(tps.values()))
        consumer.seek_to_beginning()

        assert projector.heal(app, redis_client) == []  # in the log, not read yet

        projector.reached[tps[early]] = relayed[early] + 1  # a later message applied
        healed = projector.heal(app, redis_client)
        assert (early, "customer") in healed
        assert (late, "customer") not in healed

        ends = consumer.end_offsets([tps[late]])
        deadline = time.monotonic() + 30
        while consumer.position(tps[late]) < ends[tps[late]]:
            assert time.monotonic() < deadline, "the partition was not read to its end"
            consumer.poll(timeout_ms=100)  # read, not applied
        assert (late, "customer") in projector.heal(app, redis_client)
        # the next look starts past what is now known applied (it reads only what is newer)
        assert projector.healed_to >= max(relayed.values())
        for tenant, customer in customers.items():
            assert projected(settings, tenant, customer)
            written, _, applied = positions(settings, tenant)
            assert applied == written
    finally:
        relay.stop()
        thread.join(timeout=30)
        if projector.consumer is not None:
            projector.consumer.close(autocommit=False)
        if projector.conn is not None:
            projector.conn.close()
        redis_client.close()
        app.close()


def test_a_lost_event_that_cannot_be_applied_is_a_dead_letter_and_the_rest_are_applied(
    settings: Settings, healing: Projector, losing: Losing, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found lost and read from the event store, an event the projection refuses is kept in
    `projector_dead_letters` (offset -1: from the store) as a failing message is, and the
    tenant's other lost events are applied. Before, the whole tenant's lost events were
    skipped with a log line, and its position marked applied all the same."""
    from workers import projector as projector_module

    tenant = uuid.uuid4().hex[:24]
    first, good, bad = (uuid.uuid4().hex[:24] for _ in range(3))
    register(settings, tenant, first)
    eventually(lambda: projected(settings, tenant, first), timeout_s=30)
    project = projector_module.PROJECTIONS["customer"]

    def refusing(cur: Any, events: Any, missing: Any) -> Any:
        if any(e.originator_id.endswith(bad) for e in events):
            msg = "a projection bug"
            raise RuntimeError(msg)
        return project(cur, events, missing)

    monkeypatch.setitem(projector_module.PROJECTIONS, "customer", refusing)
    losing.doomed |= {good, bad}
    register(settings, tenant, good)
    register(settings, tenant, bad)
    eventually(lambda: projected(settings, tenant, good), timeout_s=30)
    # the reads waiting for the bad one go on: it is applied as far as it will ever be
    eventually(lambda: (p := positions(settings, tenant))[2] == p[0], timeout_s=30)
    assert not projected(settings, tenant, bad)
    with psycopg.connect(settings.database_url) as conn:
        dead = conn.execute(
            'SELECT aggregate_id, "offset", error FROM projector_dead_letters WHERE tenant_id = %s',
            (tenant,),
        ).fetchall()
    assert [(d[0], d[1]) for d in dead] == [(bad, -1)]
    assert "a projection bug" in dead[0][2]


def test_a_projector_that_lost_its_connection_while_looking_rewinds(
    settings: Settings, healing: Projector
) -> None:
    """A database that comes back may have lost the projector's last commits (they are not
    flushed before they return): the look that finds the connection gone makes it again by
    rewinding, as a failed batch does, so the records the consumer had moved past are
    applied again. Before, it only connected again: the consumer stayed past them, and its
    look, starting past them too, never came back to the tenant."""
    tenant = uuid.uuid4().hex[:24]
    customer = uuid.uuid4().hex[:24]
    register(settings, tenant, customer)
    eventually(lambda: projected(settings, tenant, customer), timeout_s=30)
    relayed = positions(settings, tenant)[1]
    eventually(lambda: healing.healed_to >= relayed, timeout_s=30)
    assert healing.conn is not None
    pid = healing.conn.info.backend_pid
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        # what a crash that lost the last commits leaves: row, position and offsets gone
        conn.execute("DELETE FROM customers WHERE tenant_id = %s", (tenant,))
        conn.execute("DELETE FROM applied_positions WHERE tenant_id = %s", (tenant,))
        conn.execute(
            "DELETE FROM projector_offsets WHERE group_id = %s", (settings.projector_group,)
        )
        conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
    eventually(lambda: projected(settings, tenant, customer), timeout_s=30)
    written, _, applied = positions(settings, tenant)
    assert applied == written


class _Consumer:
    """What `heal` asks of the consumer, answering as kafka-python does when it can't tell:
    no partitions known for a topic yet, or no position (an offset reset that timed out)."""

    def __init__(self, tp: TopicPartition, *, partitions: set[int] | None) -> None:
        self.tp = tp
        self.partitions = partitions

    def assignment(self) -> set[TopicPartition]:
        return {self.tp}

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        return self.partitions

    def end_offsets(
        self, partitions: list[TopicPartition], timeout_ms: int | None = None
    ) -> dict[Any, int]:
        return dict.fromkeys(partitions, 5)

    def position(self, tp: TopicPartition, timeout_ms: int | None = None) -> int | None:
        return None


@pytest.mark.parametrize("unknown", ["partitions", "position"])
def test_a_tenant_the_look_cannot_judge_is_looked_at_again(
    settings: Settings, unknown: str
) -> None:
    """Partitions not known yet, or a position the broker could not tell: the tenant is
    neither lost nor passed (the look's watermark stays below it). Before, unknown
    partitions let the watermark pass it for good, and an unknown position was a TypeError
    that ended the projector."""
    from beeoclock.kafka import partition_of

    tenant = uuid.uuid4().hex[:24]
    relayed = 10**12 + int(uuid.uuid4().int % 10**6)
    with psycopg.connect(settings.database_url) as conn:
        conn.execute(
            "INSERT INTO relay_tenant_positions (name, tenant_id, stream, position) "
            "VALUES (%s, %s, 'customer', %s)",
            (settings.relay_name, tenant, relayed),
        )
    partitions = settings.kafka_partitions
    tp = TopicPartition(settings.topic_customer, partition_of(tenant, partitions))
    projector = Projector(settings)
    projector.consumer = _Consumer(
        tp, partitions=None if unknown == "partitions" else set(range(partitions))
    )
    projector.conn = projector._connect()
    projector.healed_to = relayed - 1  # the other tests' tenants are behind it
    app = panel_application(settings, pool_size=1)
    try:
        assert projector.heal(app, redis.Redis.from_url(settings.redis_url)) == []
        assert projector.healed_to < relayed
    finally:
        projector.conn.close()
        app.close()
        with psycopg.connect(settings.database_url) as conn:
            conn.execute("DELETE FROM relay_tenant_positions WHERE tenant_id = %s", (tenant,))


def test_a_fault_of_the_look_itself_does_not_stop_the_projector(
    settings: Settings, healing: Projector
) -> None:
    """The look for lost messages is a safety net: a bug of its own is logged, and messages
    go on being applied (before, any error but a transient one ended the projector)."""
    looked = threading.Event()

    def broken(*args: Any) -> list[tuple[str, str]]:
        looked.set()
        msg = "a bug in the look"
        raise RuntimeError(msg)

    healing.heal = broken  # type: ignore[method-assign]
    assert looked.wait(10)
    tenant, customer = uuid.uuid4().hex[:24], uuid.uuid4().hex[:24]
    register(settings, tenant, customer)
    eventually(lambda: projected(settings, tenant, customer), timeout_s=30)
