"""Fault tests: the real processes killed with SIGKILL, a broker frozen with SIGSTOP, and
hand-made Kafka messages (gaps, duplicates, garbage).

Each test builds its own isolated system (a fresh database, fresh topics and consumer group)
and compares the `customers` read model with a replay of the event store: equal DTOs and
row version == aggregate version prove that nothing was lost and nothing applied twice.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import psutil  # type: ignore[import-untyped]
import psycopg
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from beeoclock import embedded, kafka
from beeoclock.bootstrap import panel_application
from beeoclock.settings import Settings
from commands.customer import Customer
from events import envelope
from events.base import PanelEvent
from tests.support import (
    Stack,
    Tenant,
    eventually,
    isolated,
    new_tenant,
    running,
)
from workers.relay import LOCK_CLASS

pytestmark = pytest.mark.slow

Row = tuple[int, dict[str, Any]]  # (version, CustomerDto)


# -- an isolated system and direct views of its store and read model ---------------------------


class Store:
    """The event store and the read models of one system, read directly (no API, no cache)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.app = panel_application(settings, pool_size=2)

    def close(self) -> None:
        self.app.close()

    def sql(self, query: str, params: Any = ()) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.settings.database_url, autocommit=True) as conn:
            return conn.execute(query, params).fetchall()

    def customer_streams(self, tenant_id: str) -> list[str]:
        return [
            r[0]
            for r in self.sql(
                "SELECT DISTINCT originator_id FROM panel_events WHERE originator_id LIKE %s",
                (f"customer:{tenant_id}:%",),
            )
        ]

    def replay(self, tenant_id: str) -> dict[str, Row]:
        """The read model as a fold of the event store says it must be."""
        expected: dict[str, Row] = {}
        for originator_id in self.customer_streams(tenant_id):
            customer: Customer = self.app.repository.get(originator_id)
            dto = customer.state.to_dto()
            expected[dto["_id"]] = (customer.version, dto)
        return expected

    def read_model(self, tenant_id: str) -> dict[str, Row]:
        return {
            entity_id: (version, orjson.loads(doc))
            for entity_id, version, doc in self.sql(
                "SELECT id, version, doc FROM customers WHERE tenant_id = %s", (tenant_id,)
            )
        }

    def read_model_is_replay(self, tenant_id: str) -> bool:
        """Raises AssertionError naming what differs (for `eventually`)."""
        expected = self.replay(tenant_id)
        actual = self.read_model(tenant_id)
        assert expected, "the event store holds no customer of the tenant"
        assert actual == expected, _difference(expected, actual)
        return True

    def relay_position(self) -> int:
        rows = self.sql(
            "SELECT position FROM relay_positions WHERE name = %s", (self.settings.relay_name,)
        )
        return int(rows[0][0]) if rows else 0

    def max_notification_id(self) -> int:
        return int(self.sql("SELECT COALESCE(max(notification_id), 0) FROM panel_events")[0][0])

    def notification_ids(self, tenant_id: str) -> set[int]:
        return {
            r[0]
            for r in self.sql(
                "SELECT notification_id FROM panel_events WHERE originator_id LIKE %s",
                (f"customer:{tenant_id}:%",),
            )
        }

    def notification_id(self, originator_id: str, version: int) -> int:
        [(notification_id,)] = self.sql(
            "SELECT notification_id FROM panel_events "
            "WHERE originator_id = %s AND originator_version = %s",
            (originator_id, version),
        )
        return int(notification_id)

    def message(self, originator_id: str, version: int) -> bytes:
        """The Kafka message the relay would send for one stored event."""
        [event] = self.app.events.get(originator_id, gt=version - 1, lte=version)
        assert isinstance(event, PanelEvent)
        return envelope.encode(self.notification_id(originator_id, version), event)

    def positions(self, tenant_id: str) -> tuple[int, int]:
        """(written, applied) of the tenant's customer stream (read-your-writes)."""
        [(written, applied)] = self.sql(
            "SELECT (SELECT position FROM written_positions WHERE tenant_id = %(t)s "
            "AND stream = 'customer'), (SELECT position FROM applied_positions "
            "WHERE tenant_id = %(t)s AND stream = 'customer')",
            {"t": tenant_id},
        )
        return written, applied

    def relay_lock_holders(self) -> list[int]:
        """Backend pids of the sessions of this database that hold the relay's advisory lock."""
        return [
            r[0]
            for r in self.sql(
                "SELECT l.pid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                "WHERE l.locktype = 'advisory' AND l.granted AND l.classid::bigint = %s "
                "AND a.datname = current_database()",
                (LOCK_CLASS,),
            )
        ]


def _difference(expected: dict[str, Row], actual: dict[str, Row]) -> str:
    missing = sorted(set(expected) - set(actual))
    extra = sorted(set(actual) - set(expected))
    differ = {
        i: {"replay": expected[i], "read model": actual[i]}
        for i in sorted(set(expected) & set(actual))
        if expected[i] != actual[i]
    }
    return (
        f"read model != replay: {len(missing)} missing {missing[:5]}, {len(extra)} extra "
        f"{extra[:5]}, {len(differ)} differ {list(differ.items())[:2]}"
    )


@contextlib.contextmanager
def store_of(settings: Settings) -> Iterator[Store]:
    store = Store(settings)
    try:
        yield store
    finally:
        store.close()


def assert_alive(stack: Stack) -> None:
    """Fail at once (not an AssertionError, so `eventually` does not retry) if a process of
    the stack has exited."""
    for name, proc in stack.procs.items():
        if proc.poll() is not None:
            pytest.fail(f"{name} exited with {proc.returncode}:\n{stack.log(name)[-2500:]}")


def converged(stack: Stack, store: Store, tenant_id: str, version: int | None = None) -> bool:
    """The read model equals the replay (and, if given, its one customer is at `version`)."""
    assert_alive(stack)
    store.read_model_is_replay(tenant_id)
    if version is not None:
        [(row_version, _)] = store.read_model(tenant_id).values()
        assert row_version == version, f"row at version {row_version}, expected {version}"
    return True


def assert_nothing_lost_in_transit(stack: Stack, store: Store) -> None:
    """The relay re-sends from its recorded position and the projector resumes from the
    offsets in its database, so after a crash they see duplicates, never a gap: a gap filled
    from the event store means that messages were lost on the way (healed, but lost)."""
    log = stack.log("projector")
    assert "filling a version gap" not in log, "the projector had to fill a gap: lost messages"
    assert store.sql("SELECT count(*) FROM projector_dead_letters") == [(0,)]


def published_notification_ids(settings: Settings, topic: str, timeout_s: float = 30) -> set[int]:
    """The notification ids of every message in the topic (read from the beginning, no group)."""
    consumer = KafkaConsumer(
        bootstrap_servers=kafka.servers(settings),
        group_id=None,
        enable_auto_commit=False,
        fetch_max_wait_ms=10,
    )
    try:
        partitions = eventually(lambda: consumer.partitions_for_topic(topic), timeout_s=10)
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        found: set[int] = set()
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < end[tp] for tp in tps):
            assert time.monotonic() < deadline, "could not read the topic to its end in time"
            for records in consumer.poll(timeout_ms=200).values():
                found.update(envelope.decode(r.value).notification_id for r in records)
        return found
    finally:
        consumer.close()


class Writer(threading.Thread):
    """One tenant's stream of writes: a POST of a new customer every 8 requests, and PUTs
    (details and state changes, some of them two events in one commit) of the 4 newest ones.
    Each customer is written for a while and then left alone, so any run of lost messages
    holds the last event of some customer and shows in its row."""

    def __init__(self, base_url: str, tenant: Tenant, total: int = 300) -> None:
        super().__init__(daemon=True)
        self.base_url = base_url
        self.tenant = tenant
        self.total = total
        self.done = 0
        self.halfway = threading.Event()
        self.failures: list[str] = []

    def run(self) -> None:
        rng = random.Random(20240607)
        ids: list[str] = []
        try:
            with httpx.Client(base_url=self.base_url, timeout=15) as http:
                client = Tenant(http, self.tenant.tenant_id, self.tenant.token)
                for i in range(self.total):
                    if i % 8 == 0:
                        body = {"firstName": f"c{i}", "email": f"c{i}@example.com"}
                        response = client.post("/api/v1/customer", json=body)
                        if response.status_code == 201:
                            ids.append(response.json()["_id"])
                    else:
                        body = {
                            "firstName": f"u{i}",
                            "lastName": f"l{rng.randrange(3)}",
                            "state": rng.choice(["active", "active", "inactive"]),
                        }
                        customer_id = rng.choice(ids[-4:])
                        response = client.put(f"/api/v1/customer/{customer_id}", json=body)
                    if response.status_code not in (200, 201):
                        self.failures.append(f"{response.status_code} {response.text[:200]}")
                    self.done = i + 1
                    if self.done == self.total // 2:
                        self.halfway.set()
        except Exception as exc:  # reported by finish()
            self.failures.append(repr(exc))
        finally:
            self.halfway.set()

    def finish(self, timeout_s: float = 120) -> None:
        self.join(timeout_s)
        assert not self.is_alive(), f"the writer did not finish in {timeout_s}s"
        assert not self.failures, self.failures[:5]
        assert self.done == self.total


def readable(stack: Stack, tenant: Tenant, customer_id: str, **headers: str) -> bool:
    assert_alive(stack)
    response = tenant.get(f"/api/v1/customer/{customer_id}", headers=headers)
    assert response.status_code == 200, f"customer {customer_id} not readable: {response.text}"
    return True


def warm_up(stack: Stack, tenant: Tenant) -> None:
    """One customer through the whole chain: the relay is active and the projector joined."""
    created = tenant.post("/api/v1/customer", json={"firstName": "Warm-up"})
    assert created.status_code == 201, created.text
    eventually(lambda: readable(stack, tenant, created.json()["_id"]), timeout_s=60)


# -- a process killed mid-stream ---------------------------------------------------------------


@contextlib.contextmanager
def killed_mid_stream(
    servers: dict[str, str], victim: str
) -> Iterator[tuple[Settings, Stack, Store, Tenant]]:
    """A stream of writes with `victim` SIGKILLed halfway and started again; yields once the
    read model has converged, then checks nothing was lost in transit."""
    with (
        isolated(servers) as settings,
        running(settings, "api", "relay", "projector") as stack,
        httpx.Client(base_url=stack.base_url, timeout=15) as http,
        store_of(settings) as store,
    ):
        tenant = new_tenant(http, settings)
        warm_up(stack, tenant)
        writer = Writer(stack.base_url, tenant)
        writer.start()
        assert writer.halfway.wait(60), "the writer did not get halfway"
        stack.kill(victim)
        killed_at = writer.done
        stack.start(victim)
        writer.finish()
        assert killed_at < writer.total, f"the {victim} was killed after the writes"

        eventually(lambda: converged(stack, store, tenant.tenant_id), timeout_s=60, interval_s=0.25)
        yield settings, stack, store, tenant
        assert_nothing_lost_in_transit(stack, store)


def test_killing_the_relay_in_the_middle_of_a_stream_of_writes_loses_nothing(
    servers: dict[str, str],
) -> None:
    with killed_mid_stream(servers, "relay") as (settings, _, store, tenant):
        eventually(lambda: store.relay_position() == store.max_notification_id() > 0, timeout_s=15)
        # At least once: every event of the tenant is in the topic (a gap in the middle of a
        # customer's stream would be healed by the projector, so look at the topic itself).
        stored = store.notification_ids(tenant.tenant_id)
        unpublished = stored - published_notification_ids(settings, settings.topic_customer)
        assert not unpublished, f"never published: {sorted(unpublished)[:10]}"


def test_killing_the_projector_in_the_middle_of_a_stream_of_writes_loses_nothing(
    servers: dict[str, str],
) -> None:
    with killed_mid_stream(servers, "projector") as (_, _, store, tenant):
        written, applied = store.positions(tenant.tenant_id)
        assert applied == written, (written, applied)


# -- a standby relay takes over ----------------------------------------------------------------


def test_a_standby_relay_takes_over_when_the_active_one_is_killed(
    servers: dict[str, str],
) -> None:
    with isolated(servers) as settings, store_of(settings) as store:
        stack = Stack(settings)
        try:
            stack.start("api")
            stack.start("projector")
            stack.start("relay-a", "relay")
            stack.start("relay-b", "relay")
            relays = ("relay-a", "relay-b")
            active_line = f"relay {settings.relay_name} is active"

            def active() -> list[str]:
                return [n for n in relays if active_line in stack.log(n)]

            active_now = eventually(active, timeout_s=30)
            time.sleep(1.0)  # the standby retries the lock every 0.2 s: give it chances
            assert active() == active_now, f"active relays: {active()}"
            [first] = active_now
            [standby] = [n for n in relays if n != first]
            holders = store.relay_lock_holders()
            assert len(holders) == 1, f"sessions holding the relay lock: {holders}"
            assert stack.procs[standby].poll() is None, "the standby relay exited"

            with httpx.Client(base_url=stack.base_url, timeout=15) as http:
                tenant = new_tenant(http, settings)

                before = tenant.post("/api/v1/customer", json={"firstName": "Before"})
                assert before.status_code == 201, before.text
                eventually(lambda: readable(stack, tenant, before.json()["_id"]), timeout_s=60)

                stack.kill(first)
                after = tenant.post("/api/v1/customer", json={"firstName": "After"})
                assert after.status_code == 201, after.text
                eventually(lambda: readable(stack, tenant, after.json()["_id"]), timeout_s=15)

            assert active_line in stack.log(standby)
            new_holders = eventually(store.relay_lock_holders, timeout_s=5)
            assert len(new_holders) == 1, new_holders
            assert new_holders != holders, "the lock holder did not change"
            store.read_model_is_replay(tenant.tenant_id)
            eventually(lambda: store.relay_position() == store.max_notification_id(), timeout_s=10)
            assert_nothing_lost_in_transit(stack, store)
        finally:
            stack.stop()


# -- gaps, duplicates and garbage on the topic -------------------------------------------------


def _publish(settings: Settings, key: str, *values: bytes) -> None:
    """Send the messages in this order to the customer topic and check every acknowledgement."""
    producer = KafkaProducer(bootstrap_servers=kafka.servers(settings), acks="all", linger_ms=0)
    try:
        futures = [
            producer.send(settings.topic_customer, key=key.encode(), value=v) for v in values
        ]
        producer.flush(timeout=15)
        for future in futures:
            future.get(timeout=15)
    finally:
        producer.close(timeout=5)


def test_a_version_gap_is_filled_from_the_event_store_and_duplicates_are_skipped(
    servers: dict[str, str],
) -> None:
    with (
        isolated(servers) as settings,
        running(settings, "api", "projector") as stack,  # no relay: we publish by hand
        httpx.Client(base_url=stack.base_url, timeout=15) as http,
        store_of(settings) as store,
    ):
        kafka.ensure_topics(settings)
        tenant = new_tenant(http, settings)
        tid = tenant.tenant_id
        details = {"firstName": "Ada", "email": "ada@example.com"}
        created = tenant.post("/api/v1/customer", json=details)
        assert created.status_code == 201, created.text
        customer_id = created.json()["_id"]
        originator_id = f"customer:{tid}:{customer_id}"
        path = f"/api/v1/customer/{customer_id}"

        def put(body: dict[str, Any], version: int) -> None:
            response = tenant.put(path, json=body)
            assert response.status_code == 200, response.text
            assert response.json()["_version"] == str(version), "one event per PUT expected"

        put({**details, "state": "inactive"}, 2)  # a state change
        put({**details, "firstName": "Bea", "state": "inactive"}, 3)  # a details change

        def message(version: int) -> bytes:
            return store.message(originator_id, version)

        time.sleep(1.0)
        assert store.read_model(tid) == {}, "a customer was projected though nothing was published"

        _publish(settings, tid, message(3))  # versions 1 and 2 never reach the topic
        eventually(lambda: converged(stack, store, tid, 3), timeout_s=60)
        [(_, dto)] = store.read_model(tid).values()
        assert (dto["firstName"], dto["state"]) == ("Bea", "inactive")

        # A duplicate, then an old event last of all (had it been applied, the row would be
        # back at version 1: active, Ada), then garbage. The garbage comes last on the same
        # partition: once it is dead-lettered, the two events before it have been consumed.
        _publish(settings, tid, message(3), message(1), b"garbage")

        def dead_letters() -> list[tuple[Any, ...]]:
            return store.sql("SELECT message, aggregate_version FROM projector_dead_letters")

        assert eventually(dead_letters, timeout_s=30) == [(b"garbage", None)]
        converged(stack, store, tid, 3)

        put({**details, "firstName": "Cid", "state": "inactive"}, 4)
        _publish(settings, tid, message(4))
        eventually(lambda: converged(stack, store, tid, 4), timeout_s=30)
        [(_, dto)] = store.read_model(tid).values()
        assert (dto["firstName"], dto["state"]) == ("Cid", "inactive")
        assert dead_letters() == [(b"garbage", None)], "an event was dead-lettered"


# -- a frozen broker: no progress recorded for a batch it did not acknowledge ------------------


def _broker_process(address: str) -> psutil.Process:
    for proc in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if f"tcp://{address}" in " ".join(proc.cmdline()):
                return proc
    msg = f"no broker process listening on {address} among this test's children"
    raise AssertionError(msg)


def test_the_relay_records_no_progress_for_a_batch_the_broker_did_not_acknowledge(
    servers: dict[str, str],
) -> None:
    with (
        embedded.kafka_broker() as kafka_address,
        isolated(servers, kafka_address, relay_send_timeout_ms=2000) as settings,
        running(settings, "api", "relay", "projector") as stack,
        httpx.Client(base_url=stack.base_url, timeout=15) as http,
        store_of(settings) as store,
    ):
        broker = _broker_process(kafka_address)
        tenant = new_tenant(http, settings)
        a = tenant.post("/api/v1/customer", json={"firstName": "A"})
        assert a.status_code == 201, a.text
        eventually(lambda: readable(stack, tenant, a.json()["_id"]), timeout_s=60)
        p = int(a.headers["X-Event-Position"])
        eventually(lambda: store.relay_position() == p, timeout_s=10)

        os.kill(broker.pid, signal.SIGSTOP)
        try:
            b = tenant.post("/api/v1/customer", json={"firstName": "B"})
            assert b.status_code == 201, b.text  # the event store does not depend on Kafka
            seen = set()
            until = time.monotonic() + 4.5  # longer than the relay's 2 s send timeout
            while time.monotonic() < until:
                seen.add(store.relay_position())
                time.sleep(0.1)
            assert seen == {p}, f"relay positions recorded while the broker was frozen: {seen}"
        finally:
            os.kill(broker.pid, signal.SIGCONT)

        q = int(b.headers["X-Event-Position"])
        assert q > p
        eventual = {"X-Consistency": "eventual"}
        eventually(
            lambda: readable(stack, tenant, b.json()["_id"], **eventual),
            timeout_s=30,
            interval_s=0.2,
        )

        def relay_passed_b() -> bool:
            assert_alive(stack)
            return store.relay_position() >= q

        eventually(relay_passed_b, timeout_s=10)
        store.read_model_is_replay(tenant.tenant_id)
        assert_nothing_lost_in_transit(stack, store)
