"""The projector: a Kafka consumer group that applies events to the read models.

Each polled batch is applied in ONE PostgreSQL transaction together with the partition
offsets it consumed and the per-tenant applied positions (read-your-writes). Rows are
version-gated per entity (see `projections.customers`), so redelivery after a crash or a
rebalance is harmless, and a version gap is filled from the event store. Messages lost on the
way (a broker that lost acknowledged ones) are applied from the event store too: at the
tenant's next message, which names the one passed on before it (`_lost_on_the_way`), and for
a tenant with none, every `heal_every_s`, from what the relay passed on (`heal`). Kafka's
committed offsets are only a hint (committed without waiting): on assignment the consumer
seeks to the offsets in the database. After the commit, the cache generations of what changed
are bumped.

The projector's transactions commit without waiting for their WAL flush
(`synchronous_commit = off`): everything they write is derived, and read model, offsets and
applied positions commit together, so a database crash that loses the last of them only
makes the projector apply those events again (and reads wait for them again). The events
themselves, the write path's commits, are always flushed.

At rest the projector dozes. Polling an idle broker is not free (tansu answers an empty fetch
only when `fetch_max_wait_ms`, 10 ms, has passed, so an idle consumer fetches a hundred times a
second: 0.17 of a core here, and 0.09 more in the broker). Once nothing has arrived for
`idle_after_s`, it LISTENs on the event store's NOTIFY channel, which every commit of events
rings, and if the relay has published every event committed so far (its recorded position is
the store's last), it fetches once more and then waits for a ring instead of polling. A write
wakes it before the relay publishes the write's events, so a write's lag is unchanged. It
looks in Kafka at least every `doze_s` all the same, polls through a rebalance, and without
the channel (a lost connection) it polls as if awake until it is back. It listens only while
dozing: every listener is signalled at every commit, which under load would cost the write
path for nothing.

A partition that the broker answers empty although it holds records past the consumer's
position makes the next fetches wait longer (`kafka.FetchWait`): tansu gives up
on a fetch whose offset it can't find within `fetch_max_wait_ms`, which happens once a
partition holds tens of thousands of batches, and a projector polling on at 10 ms never
applied that partition again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

import psycopg
import redis
from eventsourcing import persistence as es_persistence
from eventsourcing.persistence import StoredEvent
from eventsourcing.utils import get_topic
from kafka import ConsumerRebalanceListener, KafkaConsumer, OffsetAndMetadata, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import KafkaError
from psycopg import sql

from beeoclock import consistency, kafka
from beeoclock.bootstrap import panel_application
from beeoclock.settings import Settings
from commands.application import PanelApplication
from events import envelope
from events.base import PanelEvent, split_stream_id
from projections import cache, customers, services
from projections.customers import MissingEvents

log = logging.getLogger(__name__)

_DEAD_LETTER = (
    'INSERT INTO projector_dead_letters (group_id, topic, partition, "offset", tenant_id, '
    "aggregate_id, aggregate_version, notification_id, error, message) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)


class Fenced(Exception):
    """Another consumer applied the partition past the batch's first offset: this one lost
    the partition while it applied the batch (a rebalance it had not seen yet)."""


#: Faults that pass: the batch is applied again from the offsets in the database.
TRANSIENT = (
    psycopg.OperationalError,
    psycopg.InterfaceError,
    es_persistence.OperationalError,
    es_persistence.InterfaceError,
    Fenced,
)

#: A batch's offsets move a partition's stored offset on only from where the batch began: a
#: consumer that lost the partition mid-batch (its new owner has moved the offset past that,
#: or moves it while this transaction waits on the row) commits nothing. Version gating makes
#: a stale batch harmless to rows that exist, but not to one it would create beside the
#: tombstone its new owner wrote meanwhile: the fence keeps an erased customer erased.
_SAVE_OFFSET = (
    "INSERT INTO projector_offsets (group_id, topic, partition, next_offset) "
    "VALUES (%s, %s, %s, %s) ON CONFLICT (group_id, topic, partition) "
    "DO UPDATE SET next_offset = EXCLUDED.next_offset "
    "WHERE projector_offsets.next_offset <= %s RETURNING 1"
)

#: the last notification the relay passed on (published, or set aside as a dead letter) of
#: each (stream, tenant) past a position, with what the read models have applied of it
#: (`heal`): an index range (migration 015), the tenants the relay passed on anything of
#: since the last look, and each one's applied position by a probe of its key (a join would
#: hash every tenant's once a few thousand were passed on)
_PASSED_ON = (
    "SELECT r.stream, r.tenant_id, r.position, coalesce((SELECT a.position FROM "
    "applied_positions a WHERE a.tenant_id = r.tenant_id AND a.stream = r.stream), 0) "
    "FROM relay_tenant_positions r WHERE r.name = %s AND r.position > %s"
)

#: the stored topics of the event classes the relay publishes
PUBLISHED_TOPICS = sorted(get_topic(cls) for cls, _ in envelope.EVENT_TYPES.values())

#: how long `heal` waits for the broker's answer about a partition (ms): it runs between polls
ASK_BROKER_MS = 1000

#: (tenant, stream)s whose applied position the projector keeps in memory
REMEMBERED = 100_000

#: stream name -> the projection that applies its events
PROJECTIONS = {customers.STREAM: customers.project, services.STREAM: services.project}


class _SeekToStoredOffsets(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, projector: Projector) -> None:
        self.projector = projector

    def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        log.info("partitions revoked: %s", revoked)
        self.projector.applied.clear()  # others may apply those tenants now
        self.projector.reached.clear()
        self.projector.healed_to = 0
        self.projector.in_group = False
        self.projector.rebalances += 1

    def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        log.info("partitions assigned: %s", assigned)
        self.projector.applied.clear()
        self.projector.reached.clear()
        self.projector.healed_to = 0  # its new partitions' tenants: every one looked at
        self.projector.seek_to_stored_offsets(assigned)
        self.projector.in_group = True
        self.projector.rebalances += 1


class Doorbell:
    """The event store's NOTIFY channel, listened to only while the projector dozes (module
    docstring): a listener is signalled at every commit, and under load that would cost the
    write path for nothing. Any fault of its own connection disarms it: the projector then
    polls as if it had never dozed, and the connection is made again at most every
    `retry_s`."""

    retry_s = 5.0

    def __init__(
        self, database_url: str, events_table: str, channel: str, relay: str, timeout_s: float
    ) -> None:
        self.database_url = database_url
        # a connection that waits idle while dozing: a peer gone without a word (a dropped
        # NAT entry, a failover) must show as an error within the rebalance timeout, and so
        # must a server that does not answer a connect (libpq counts it in whole seconds, 2 at
        # least)
        self.options: dict[str, Any] = {
            "autocommit": True,
            "connect_timeout": max(2, int(timeout_s)),
            "keepalives": 1,
            "keepalives_idle": max(1, int(timeout_s)),
            "keepalives_interval": 1,
            "keepalives_count": 2,
            "tcp_user_timeout": int(timeout_s * 1000),
        }
        self.channel = sql.Identifier(channel)
        self.relay = relay
        # every event committed so far has been published: the relay's recorded position (it
        # records one after the broker acknowledged the batch) is the store's last
        self.settled = sql.SQL(
            "SELECT coalesce((SELECT position FROM relay_positions WHERE name = %s), -1) "
            ">= coalesce((SELECT max(notification_id) FROM {}), 0)"
        ).format(sql.Identifier(events_table))
        self.conn: psycopg.Connection[Any] | None = None
        self.failed_at: float | None = None
        self.armed = False

    def arm(self) -> bool:
        """LISTEN, then check that every event committed before has been published: if so,
        every later commit rings, and True. False (not listening) while events are on their
        way, or without the channel."""
        try:
            conn = self._connection()
            if conn is None:
                return False
            conn.execute(sql.SQL("LISTEN {}").format(self.channel))
            row = conn.execute(self.settled, (self.relay,)).fetchone()
            self.armed = True
            if not (row and row[0]):
                self.disarm()
        except psycopg.Error as exc:
            self._lost(exc)
        return self.armed

    def disarm(self) -> None:
        """UNLISTEN, and take the rings already sent."""
        if not self.armed or self.conn is None:
            return
        self.armed = False
        try:
            self.conn.execute(sql.SQL("UNLISTEN {}").format(self.channel))
            for _ in self.conn.notifies(timeout=0):
                pass
        except psycopg.Error as exc:
            self._lost(exc)

    def rang(self, wait_s: float) -> bool:
        """Whether a commit rang, waiting up to `wait_s` for one (armed; disarmed, or on a
        fault, True: poll)."""
        if not self.armed or self.conn is None:
            return True
        try:
            return any(True for _ in self.conn.notifies(timeout=wait_s, stop_after=1))
        except psycopg.Error as exc:
            self._lost(exc)
            return True

    def _lost(self, exc: psycopg.Error) -> None:
        log.warning("the store's NOTIFY channel was lost, polling Kafka meanwhile: %s", exc)
        self.close()
        self.failed_at = time.monotonic()

    def _connection(self) -> psycopg.Connection[Any] | None:
        if self.conn is not None:
            return self.conn
        if self.failed_at is not None and time.monotonic() - self.failed_at < self.retry_s:
            return None
        self.conn = psycopg.connect(self.database_url, **self.options)
        self.failed_at = None
        return self.conn

    def close(self) -> None:
        self.armed = False
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class Projector:
    #: quiet for this long (no records, no ring), the projector dozes on the doorbell
    idle_after_s = 1.0
    #: the longest a doze lasts before it looks in Kafka anyway; well within the rebalance
    #: timeout (kafka-python's max_poll_interval_ms), or the group would drop the member
    doze_s = 1.0
    #: how often it looks for tenants whose last messages never reached it (`heal`)
    heal_every_s = 5.0

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stopping = threading.Event()
        self.stream_of_topic = {
            settings.topic_customer: "customer",
            settings.topic_service: "service",
        }
        self.conn: psycopg.Connection[Any] | None = None
        self.consumer: KafkaConsumer | None = None
        # between an assignment and the next revocation: only then may it doze (kafka-python
        # moves a group join along only while it polls); `rebalances` counts both, so that a
        # revocation and an assignment within one poll show too (new partitions may hold
        # events published before the doorbell was armed)
        self.in_group = False
        self.rebalances = 0
        #: (tenant, stream) -> the applied position this projector committed, since its
        #: partitions were last assigned (see `_lost_on_the_way`)
        self.applied: dict[tuple[str, str], int] = {}
        #: partition -> the highest notification id of the messages this projector applied
        #: from it since it was assigned (see `heal`)
        self.reached: dict[TopicPartition, int] = {}
        #: every tenant of this projector's partitions whose last notification the relay
        #: passed on is at most this has been applied (see `heal`)
        self.healed_to = 0

    def stop(self) -> None:
        self.stopping.set()

    def run(self) -> None:
        kafka.ensure_topics(self.settings)
        app = panel_application(self.settings, pool_size=2)
        redis_client = redis.Redis.from_url(
            self.settings.redis_url, socket_timeout=0.5, socket_connect_timeout=0.5
        )
        self.conn = self._connect()
        self.consumer = kafka.consumer(self.settings)
        fetch_wait = kafka.FetchWait(self.consumer)
        self.consumer.subscribe(list(self.stream_of_topic), listener=_SeekToStoredOffsets(self))
        doorbell = self._doorbell(app)
        quiet_since = time.monotonic()
        looked = False  # since the doorbell was armed, a whole poll came back empty
        armed_at = 0  # `rebalances` when it was armed
        heal_at = time.monotonic() + self.heal_every_s
        try:
            while not self.stopping.is_set():
                if self.in_group and time.monotonic() >= heal_at:
                    heal_at = time.monotonic() + self.heal_every_s
                    self._try_to_heal(app, redis_client)
                # dozing, a look in Kafka is short: one or two fetches
                polled = self._poll(fetch_wait, 20 if looked else 200)
                if polled is None:
                    continue
                records, stalled = polled
                if stalled and not records:  # records wait in the broker: poll on, no dozing
                    doorbell.disarm()
                    looked = False
                    continue
                if not records:
                    if doorbell.armed and self.rebalances != armed_at:  # poll it through
                        doorbell.disarm()
                        looked = False
                    elif doorbell.armed:
                        # the first empty poll after arming fetched all that was published
                        # before; after it, only a commit (a ring) brings more
                        if looked and doorbell.rang(self._doze_s()):
                            doorbell.disarm()
                            quiet_since, looked = time.monotonic(), False
                        else:
                            looked = True
                    elif time.monotonic() - quiet_since >= self.idle_after_s and self.in_group:
                        armed_at = self.rebalances
                        if not doorbell.arm():
                            quiet_since = time.monotonic()  # events on their way: stay awake
                    continue
                doorbell.disarm()
                quiet_since, looked = time.monotonic(), False
                self._apply_or_rewind(app, records, redis_client)
        finally:
            doorbell.close()
            self.consumer.close(autocommit=False)
            self.conn.close()
            redis_client.close()
            app.close()

    def _poll(
        self, fetch_wait: kafka.FetchWait, timeout_ms: int
    ) -> tuple[list[ConsumerRecord], bool] | None:
        """(the records of one poll, whether a partition stalled: `kafka.FetchWait`); None
        when it failed (after a pause)."""
        try:
            polled, stalled = fetch_wait.poll(timeout_ms)
        except KafkaError as exc:
            log.warning("kafka poll failed, polling again: %s", exc)
            self.stopping.wait(1.0)
            return None
        return [r for batch in polled.values() for r in batch], stalled

    def _doorbell(self, app: PanelApplication) -> Doorbell:
        recorder: Any = app.recorder
        return Doorbell(
            self.settings.database_url,
            recorder.events_table_name,
            recorder.channel_name,
            self.settings.relay_name,
            self._doze_s(),
        )

    def _apply_or_rewind(
        self, app: PanelApplication, records: Sequence[ConsumerRecord], redis_client: redis.Redis
    ) -> None:
        try:
            self.apply(app, records, redis_client)
        except TRANSIENT as exc:
            # The consumer has moved past these records but the database has not: rewind to
            # the offsets the database holds, and apply them again.
            log.warning("a batch failed and will be applied again: %s", exc)
            self.rewind()

    def _doze_s(self) -> float:
        return min(self.doze_s, self.settings.projector_rebalance_timeout_ms / 3000)

    def rewind(self) -> None:
        """Seek every assigned partition back to the offset the database holds, reconnecting
        as long as the database is unreachable; a log that ends before that offset was
        started again (see `seek_to_stored_offsets`).

        What it remembers of its own commits is forgotten: a database that lost the last of
        them (they are not flushed before they return, see the module docstring) holds less
        than it committed, and the positions it remembered would hide gaps."""
        assert self.consumer is not None
        self.applied.clear()
        self.reached.clear()
        self.healed_to = 0
        while not self.stopping.wait(1.0):
            try:
                if self.conn is None or self.conn.closed or self.conn.broken:
                    self.conn = self._connect()
                self.seek_to_stored_offsets(list(self.consumer.assignment()), check_ends=True)
                return
            except psycopg.Error as exc:
                log.warning("database unreachable, retrying: %s", exc)
            except KafkaError as exc:  # the log ends are asked of the broker
                log.warning("broker unreachable, retrying: %s", exc)

    def _try_to_heal(self, app: PanelApplication, redis_client: redis.Redis) -> None:
        """`heal`, a fault logged: it is tried again next time. A lost connection is made
        again by `rewind`, as after a failed batch: the database it comes back to may have
        lost the last commits, whose records the consumer has moved past."""
        try:
            self.heal(app, redis_client)
        except (*TRANSIENT, KafkaError) as exc:
            log.warning("looking for lost messages failed: %s", exc)
            if self.conn is None or self.conn.closed or self.conn.broken:
                self.rewind()
        except Exception:  # a fault of the look's own is no reason to stop applying messages
            log.exception("looking for lost messages failed")
            self.healed_to = 0

    def _connect(self) -> psycopg.Connection[Any]:
        """Derived data only: its commits don't wait for the WAL flush (module docstring)."""
        conn = psycopg.connect(self.settings.database_url, autocommit=True)
        conn.execute("SET synchronous_commit = off")
        conn.autocommit = False
        return conn

    def seek_to_stored_offsets(
        self, assigned: list[TopicPartition], *, check_ends: bool = False
    ) -> None:
        """Seek each partition to the offset the database holds (its beginning if none).

        `check_ends` (after a failed batch, outside a poll): a partition whose log ends
        before the offset held was started again (a broker that kept nothing, a topic made
        anew), and its offsets mean something else now: the consumer, reset to the new
        log's beginning, would find every batch fenced off (`_SAVE_OFFSET`). Its offset is
        set back to that beginning, with a warning: events published to the old log and not
        applied never reach the read models this way (a replay rebuilds them)."""
        assert self.conn is not None
        assert self.consumer is not None
        with self.conn.transaction():
            stored = {
                (topic, partition): offset
                for topic, partition, offset in self.conn.execute(
                    "SELECT topic, partition, next_offset FROM projector_offsets "
                    "WHERE group_id = %s",
                    (self.settings.projector_group,),
                )
            }
        if check_ends and assigned:
            ends = self.consumer.end_offsets(assigned)
            restarted = [
                tp
                for tp in assigned
                if (tp.topic, tp.partition) in stored and stored[tp.topic, tp.partition] > ends[tp]
            ]
            if restarted:
                beginnings = self.consumer.beginning_offsets(restarted)
                with self.conn.transaction():
                    for tp in restarted:
                        log.warning(
                            "the log of %s/%s ends at %d, before offset %d the projector had "
                            "applied: it was started again, and is applied from its beginning",
                            tp.topic,
                            tp.partition,
                            ends[tp],
                            stored[tp.topic, tp.partition],
                        )
                        # only from what was read: a new owner may have moved it since
                        self.conn.execute(
                            "UPDATE projector_offsets SET next_offset = %s WHERE group_id = %s "
                            "AND topic = %s AND partition = %s AND next_offset = %s",
                            (
                                beginnings[tp],
                                self.settings.projector_group,
                                tp.topic,
                                tp.partition,
                                stored[tp.topic, tp.partition],
                            ),
                        )
                        stored[tp.topic, tp.partition] = beginnings[tp]
        for tp in assigned:
            offset = stored.get((tp.topic, tp.partition))
            if offset is None:
                self.consumer.seek_to_beginning(tp)
            else:
                self.consumer.seek(tp, offset)

    def apply(
        self, app: PanelApplication, records: Sequence[ConsumerRecord], redis_client: redis.Redis
    ) -> None:
        """Apply a batch in one transaction. If an event can't be applied (a bad event or a
        bug, not a transient fault), apply the batch again event by event, dead-lettering
        the ones that fail, so one poisoned event never stops the other tenants."""
        with app.keys():
            try:
                self._apply(app, records, redis_client, isolate=False)
            except TRANSIENT:
                raise
            except Exception:
                log.exception("a batch could not be applied; isolating the event that fails")
                self._apply(app, records, redis_client, isolate=True)

    def _apply(
        self,
        app: PanelApplication,
        records: Sequence[ConsumerRecord],
        redis_client: redis.Redis,
        *,
        isolate: bool,
    ) -> None:
        assert self.conn is not None
        assert self.consumer is not None
        messages: list[tuple[ConsumerRecord, str, envelope.Envelope]] = []
        dead: list[tuple[ConsumerRecord, envelope.Envelope | None, str]] = []
        applied: dict[tuple[str, str], int] = {}
        offsets: dict[TopicPartition, int] = {}
        firsts: dict[TopicPartition, int] = {}
        reached: dict[TopicPartition, int] = {}
        for record in records:
            tp = TopicPartition(record.topic, record.partition)
            firsts.setdefault(tp, record.offset)
            offsets[tp] = record.offset + 1
            try:
                message = envelope.decode(record.value)
            except ValueError as exc:
                dead.append((record, None, str(exc)))
                continue
            stream = self.stream_of_topic[record.topic]
            messages.append((record, stream, message))
            key = (message.tenant_id, stream)
            applied[key] = max(applied.get(key, 0), message.notification_id)
            reached[tp] = max(reached.get(tp, 0), message.notification_id)
        missing = app.missing_events
        if app.vault is not None:  # one query per tenant for the batch's data keys
            app.vault.prefetch(app.subjects(m.event for _, _, m in messages))
        changed: set[tuple[str, str, str]] = set()
        with self.conn.transaction(), self.conn.cursor() as cur:
            lost = _lost_on_the_way(cur, app, [(s, m) for _, s, m in messages], self.applied)
            if isolate:
                changed = self._one_by_one(cur, app, messages, lost, missing, dead)
            else:
                by_stream: dict[str, list[PanelEvent]] = {}
                for at, (_, stream, message) in enumerate(messages):
                    events = by_stream.setdefault(stream, [])
                    events += lost.get(at, ())
                    events.append(app.open_personal(message.event))
                for stream, events in by_stream.items():
                    changed |= _project(cur, stream, events, missing)
            self._bury(cur, dead)
            consistency.record_applied(cur, applied)
            self._save_offsets(cur, firsts, offsets)
        self._remember(applied)
        for tp, notification_id in reached.items():
            self.reached[tp] = max(notification_id, self.reached.get(tp, 0))
        self._committed(redis_client, applied, changed, offsets)

    def _remember(self, applied: dict[tuple[str, str], int]) -> None:
        if len(self.applied) > REMEMBERED:
            self.applied.clear()
        for key, position in applied.items():
            self.applied[key] = max(position, self.applied.get(key, 0))

    def heal(self, app: PanelApplication, redis_client: redis.Redis) -> list[tuple[str, str]]:
        """Apply, from the event store, what the relay passed on for tenants of this
        projector's partitions and that never reached it, where no later message of the
        tenant's will reveal it: returns the (tenant, stream)s healed.

        `_lost_on_the_way` finds lost messages at the tenant's next message; this finds them
        for a tenant that has none (yet): its last messages were lost, or the relay set its
        last event aside as a dead letter (reads waiting for that event would otherwise
        answer 503 until the tenant writes again). A tenant whose last notification passed
        on by the relay (`relay_tenant_positions`, recorded once the broker acknowledged it)
        is past what was applied is lost, not in flight, once this projector has applied a
        later message from the tenant's partition (the relay's producer keeps a partition's
        messages in the order of their notifications, and sends a batch only after the one
        before it was acknowledged), or has consumed the partition to its end since the
        positions were read. (A batch a failed-over relay sends again, after a later one
        was applied, may still bring them: applied early from the store, they are only
        duplicates, which the version gate skips.) Called from the polling thread, between
        polls.

        It looks only at tenants the relay passed on anything of since everything before was
        found applied (`healed_to`; the relay records positions in increasing order, a batch
        after another), so a look costs the tenants written since the last, not all of them
        (`python -m bench.heal_query`)."""
        assert self.conn is not None
        assert self.consumer is not None
        assigned = set(self.consumer.assignment())
        if not assigned:
            return []
        since = self.healed_to
        with self.conn.transaction():
            rows = self.conn.execute(_PASSED_ON, (self.settings.relay_name, since)).fetchall()
        top = max((int(r[2]) for r in rows), default=since)
        mine: list[tuple[TopicPartition, str, str, int, int]] = []
        in_flight: list[int] = []
        for stream, tenant_id, relayed, applied in rows:
            if relayed <= applied:
                continue
            tp = self._partition_of(stream, tenant_id)
            if tp is None:  # no metadata yet: looked at again next time
                in_flight.append(relayed)
            elif tp in assigned:
                mine.append((tp, stream, tenant_id, int(relayed), int(applied)))
        unproven = sorted({tp for tp, _, _, last, _ in mine if self.reached.get(tp, 0) <= last})
        drained: set[TopicPartition] = set()
        if unproven:
            # after the positions were read: a message acknowledged before then is in the log
            ends = self.consumer.end_offsets(unproven, timeout_ms=ASK_BROKER_MS)
            for tp in unproven:
                position = self.consumer.position(tp, timeout_ms=ASK_BROKER_MS)
                if position is not None and position >= ends[tp]:
                    drained.add(tp)
        lost: list[tuple[str, str, int, int]] = []
        for tp, stream, tenant_id, relayed, applied in mine:
            if self.reached.get(tp, 0) > relayed or tp in drained:
                lost.append((stream, tenant_id, relayed, applied))
            else:
                in_flight.append(relayed)
        # once `lost` is applied, every tenant up to here is: the next look starts there
        healed_to = min(in_flight) - 1 if in_flight else top
        if not lost:
            self.healed_to = healed_to
            return []
        healed, unread = self._apply_lost(app, redis_client, lost)
        self.healed_to = min([healed_to, *(position - 1 for position in unread)])
        return healed

    def _partition_of(self, stream: str, tenant_id: str) -> TopicPartition | None:
        """The partition the relay puts a tenant's messages of `stream` in (None: the topic's
        partitions are not known yet)."""
        assert self.consumer is not None
        topic = next((t for t, s in self.stream_of_topic.items() if s == stream), None)
        partitions = self.consumer.partitions_for_topic(topic) if topic else None
        if not topic or not partitions:
            return None
        return TopicPartition(topic, kafka.partition_of(tenant_id, len(partitions)))

    def _apply_lost(
        self,
        app: PanelApplication,
        redis_client: redis.Redis,
        lost: list[tuple[str, str, int, int]],
    ) -> tuple[list[tuple[str, str]], list[int]]:
        """`heal`'s lost events, (stream, tenant, passed on, applied) each, applied from the
        event store in one transaction (an event that can't be applied is a dead letter, as a
        message would be). Returns the (tenant, stream)s healed, and the positions passed on
        of those whose events could not even be read (looked at again next time)."""
        assert self.conn is not None
        missing = app.missing_events
        changed: set[tuple[str, str, str]] = set()
        healed: dict[tuple[str, str], int] = {}
        unread: list[int] = []
        with app.keys(), self.conn.transaction(), self.conn.cursor() as cur:
            for stream, tenant_id, relayed, applied in lost:
                log.warning(
                    "the last messages of tenant %s (%s) never reached the projector, "
                    "notifications %d to %d: applying them from the event store",
                    tenant_id,
                    stream,
                    applied + 1,
                    relayed,
                )
                try:
                    with self.conn.transaction():
                        events = _stored_between(cur, app, stream, tenant_id, applied, relayed)
                except TRANSIENT:
                    raise
                except Exception:  # their keys, say: nothing is taken as applied
                    log.exception("the events of tenant %s could not be read", tenant_id)
                    unread.append(relayed)
                    continue
                changed |= self._apply_stored(cur, stream, events, missing)
                healed[tenant_id, stream] = relayed
            consistency.record_applied(cur, healed)
        self._remember(healed)
        keys = [cache.generation_key(t, s) for t, s in healed]
        keys += [cache.generation_key(t, s, i) for s, t, i in changed]
        cache.invalidate(redis_client, keys, cache.generation_ttl_s(self.settings))
        return sorted(healed), unread

    def _apply_stored(
        self,
        cur: psycopg.Cursor[Any],
        stream: str,
        events: list[PanelEvent],
        missing: MissingEvents,
    ) -> set[tuple[str, str, str]]:
        """Events read from the event store (lost on the way), applied in a savepoint; if
        that fails, one by one, each that fails kept in `projector_dead_letters` (offset -1:
        it came from the store, not from a partition) as a failing message is, the others
        applied."""
        assert self.conn is not None
        try:
            with self.conn.transaction():
                return _project(cur, stream, events, missing)
        except TRANSIENT:
            raise
        except Exception:
            log.exception("events lost on the way could not be applied together")
        changed: set[tuple[str, str, str]] = set()
        for event in events:
            try:
                with self.conn.transaction():
                    changed |= _project(cur, stream, [event], missing)
            except TRANSIENT:
                raise
            except Exception as exc:
                self._bury_stored(cur, stream, event, repr(exc))
        return changed

    def _bury_stored(
        self, cur: psycopg.Cursor[Any], stream: str, event: PanelEvent, error: str
    ) -> None:
        tp = self._partition_of(stream, event.tenant_id)
        log.error(
            "dead letter from the event store: %s v%d: %s",
            event.originator_id,
            event.originator_version,
            error.split("(", 1)[0],
        )
        cur.execute(
            _DEAD_LETTER,
            (
                self.settings.projector_group,
                tp.topic if tp else stream,
                tp.partition if tp else -1,
                -1,
                event.tenant_id,
                split_stream_id(event.originator_id)[2],
                event.originator_version,
                None,
                error,
                b"",
            ),
        )

    def _committed(
        self,
        redis_client: redis.Redis,
        applied: dict[tuple[str, str], int],
        changed: set[tuple[str, str, str]],
        offsets: dict[TopicPartition, int],
    ) -> None:
        """After a batch's commit: the cache generations of what changed bumped, and the
        offsets committed to Kafka as a hint."""
        assert self.consumer is not None
        keys = [cache.generation_key(t, s) for t, s in applied]
        keys += [cache.generation_key(t, s, i) for s, t, i in changed]
        cache.invalidate(redis_client, keys, cache.generation_ttl_s(self.settings))
        try:  # a hint only (module docstring): sent with the next fetch, never waited for
            self.consumer.commit_async(
                {tp: OffsetAndMetadata(o, "", -1) for tp, o in offsets.items()}
            )
        except KafkaError as exc:
            log.debug("kafka offset commit failed (harmless): %s", exc)

    def _one_by_one(
        self,
        cur: psycopg.Cursor[Any],
        app: PanelApplication,
        messages: list[tuple[ConsumerRecord, str, envelope.Envelope]],
        lost: dict[int, list[PanelEvent]],
        missing: MissingEvents,
        dead: list[tuple[ConsumerRecord, envelope.Envelope | None, str]],
    ) -> set[tuple[str, str, str]]:
        """The batch a message at a time, each in a savepoint: one that fails is added to
        `dead` and the others are applied. Events lost on the way before a message go in a
        savepoint of their own (`_apply_stored`), so that the message failing does not take
        them along."""
        assert self.conn is not None
        changed: set[tuple[str, str, str]] = set()
        for at, (record, stream, message) in enumerate(messages):
            if at in lost:
                changed |= self._apply_stored(cur, stream, lost[at], missing)
            try:
                with self.conn.transaction():
                    event = app.open_personal(message.event)
                    changed |= _project(cur, stream, [event], missing)
            except TRANSIENT:
                raise
            except Exception as exc:
                dead.append((record, message, repr(exc)))
        return changed

    def _bury(
        self,
        cur: psycopg.Cursor[Any],
        dead: list[tuple[ConsumerRecord, envelope.Envelope | None, str]],
    ) -> None:
        """The batch's dead letters, in its transaction."""
        for record, failed, error in dead:
            # the error's text stays in the table: it may quote a value
            log.error(
                "dead letter at %s/%s@%s: %s",
                record.topic,
                record.partition,
                record.offset,
                error.split("(", 1)[0],
            )
            cur.execute(
                _DEAD_LETTER,
                (
                    self.settings.projector_group,
                    record.topic,
                    record.partition,
                    record.offset,
                    failed.tenant_id if failed else None,
                    failed.entity_id if failed else None,
                    failed.event.originator_version if failed else None,
                    failed.notification_id if failed else None,
                    error,
                    record.value,
                ),
            )

    def _save_offsets(
        self,
        cur: psycopg.Cursor[Any],
        firsts: dict[TopicPartition, int],
        offsets: dict[TopicPartition, int],
    ) -> None:
        """The batch's partitions' next offsets, fenced (see `_SAVE_OFFSET`): Fenced if one
        was applied past the batch's first offset by another consumer."""
        for tp, offset in sorted(offsets.items()):
            saved = cur.execute(
                _SAVE_OFFSET,
                (self.settings.projector_group, tp.topic, tp.partition, offset, firsts[tp]),
            ).fetchone()
            if saved is None:
                msg = f"{tp.topic}/{tp.partition} was applied past offset {firsts[tp]} elsewhere"
                raise Fenced(msg)


def _lost_on_the_way(
    cur: psycopg.Cursor[Any],
    app: PanelApplication,
    messages: list[tuple[str, envelope.Envelope]],
    known: dict[tuple[str, str], int],
) -> dict[int, list[PanelEvent]]:
    """The events of the batch's tenants that never reached this projector, by the index of
    the message whose `previous` revealed them (they go before it).

    Each message names the previous one of its tenant and stream (workers/relay.py); one
    newer than what the tenant's stream has applied (`applied_positions`, or earlier messages
    of the batch) means the messages in between were lost on the way (a broker that lost
    acknowledged messages, or was started again empty). Version gating heals a lost event
    that a later event of the same entity follows; this heals the rest: an entity whose last
    events were lost, which no later event would ever reveal.

    `known`: applied positions this projector committed itself since its partitions were
    last assigned (none other moves them meanwhile): a message whose `previous` is not past
    its tenant's there needs no query, which is the usual case by far."""
    keys = sorted(
        {
            (m.tenant_id, stream)
            for stream, m in messages
            if m.previous is not None and m.previous > known.get((m.tenant_id, stream), -1)
        }
    )
    if not keys:
        return {}
    applied = {k: known[k] for stream, m in messages if (k := (m.tenant_id, stream)) in known}
    applied.update(
        {
            (tenant, stream): int(position)
            for tenant, stream, position in cur.execute(
                "SELECT a.tenant_id, a.stream, a.position FROM applied_positions a "
                "JOIN unnest(%s::text[], %s::text[]) AS k(tenant_id, stream) "
                "USING (tenant_id, stream)",
                ([t for t, _ in keys], [s for _, s in keys]),
            ).fetchall()
        }
    )
    lost: dict[int, list[PanelEvent]] = {}
    for at, (stream, message) in enumerate(messages):
        key = (message.tenant_id, stream)
        seen = applied.get(key, 0)
        if message.previous is not None and message.previous > seen:
            log.warning(
                "messages of tenant %s (%s) never reached the projector (lost on the way, or "
                "set aside by the relay), notifications %d to %d: applying them from the "
                "event store",
                message.tenant_id,
                stream,
                seen + 1,
                message.previous,
            )
            lost[at] = _stored_between(cur, app, stream, message.tenant_id, seen, message.previous)
        applied[key] = max(seen, message.notification_id)
    return lost


def _stored_between(
    cur: psycopg.Cursor[Any],
    app: PanelApplication,
    stream: str,
    tenant_id: str,
    after: int,
    until: int,
) -> list[PanelEvent]:
    """The published events of a tenant's stream with after < notification id <= until, in
    order, decoded and opened (of the classes the relay publishes: one it set aside as a dead
    letter is not among them)."""
    rows = cur.execute(
        "SELECT originator_id, originator_version, topic, state FROM panel_events "
        "WHERE notification_id > %s AND notification_id <= %s AND starts_with(originator_id, %s) "
        "AND topic = ANY(%s) ORDER BY notification_id",
        (after, until, f"{stream}:{tenant_id}:", PUBLISHED_TOPICS),
    ).fetchall()
    stored = [StoredEvent(o, v, t, bytes(s)) for o, v, t, s in rows]
    if app.vault is not None:
        app.vault.prefetch(app.subjects_of_ids(str(e.originator_id) for e in stored))
    events = []
    for item in stored:
        try:
            event = app.mapper.to_domain_event(item)
        except (es_persistence.OperationalError, es_persistence.InterfaceError):
            raise
        except Exception:  # a stored event that does not decode: no path can apply it
            log.exception(
                "a stored event lost on the way does not decode: %s v%d",
                item.originator_id,
                item.originator_version,
            )
            continue
        if isinstance(event, PanelEvent):
            events.append(event)
    return events


def _project(
    cur: psycopg.Cursor[Any], stream: str, events: list[PanelEvent], missing: MissingEvents
) -> set[tuple[str, str, str]]:
    project = PROJECTIONS.get(stream)
    if project is None:
        return set()
    return {(stream, tenant, entity) for tenant, entity in project(cur, events, missing)}
