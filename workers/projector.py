"""The projector: a Kafka consumer group that applies events to the read models.

Each polled batch is applied in ONE PostgreSQL transaction together with the partition
offsets it consumed and the per-tenant applied positions (read-your-writes). Rows are
version-gated per entity (see `projections.customers`), so redelivery after a crash or a
rebalance is harmless, and a version gap is filled from the event store. Kafka's committed
offsets are only a hint: on assignment the consumer seeks to the offsets in the database.
After the commit, the cache generations of what changed are bumped.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

import psycopg
import redis
from kafka import ConsumerRebalanceListener, KafkaConsumer, OffsetAndMetadata, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

from beeoclock import consistency, kafka
from beeoclock.settings import Settings
from commands.application import PanelApplication
from events import envelope
from events.base import PanelEvent
from projections import cache, customers

log = logging.getLogger(__name__)

_SAVE_OFFSET = (
    "INSERT INTO projector_offsets (group_id, topic, partition, next_offset) "
    "VALUES (%s, %s, %s, %s) ON CONFLICT (group_id, topic, partition) "
    "DO UPDATE SET next_offset = EXCLUDED.next_offset"
)

#: stream name -> the projection that applies its events
PROJECTIONS = {customers.STREAM: customers.project}


class _SeekToStoredOffsets(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, projector: Projector) -> None:
        self.projector = projector

    def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        log.info("partitions revoked: %s", revoked)

    def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        log.info("partitions assigned: %s", assigned)
        self.projector.seek_to_stored_offsets(assigned)


class Projector:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stopping = threading.Event()
        self.stream_of_topic = {
            settings.topic_customer: "customer",
            settings.topic_service: "service",
        }
        self.conn: psycopg.Connection[Any] | None = None
        self.consumer: KafkaConsumer | None = None

    def stop(self) -> None:
        self.stopping.set()

    def run(self) -> None:
        kafka.ensure_topics(self.settings)
        app = PanelApplication(env=self.settings.eventsourcing_env() | {"POSTGRES_POOL_SIZE": "2"})
        redis_client = redis.Redis.from_url(
            self.settings.redis_url, socket_timeout=0.5, socket_connect_timeout=0.5
        )
        self.conn = psycopg.connect(self.settings.database_url)
        self.consumer = kafka.consumer(self.settings)
        self.consumer.subscribe(list(self.stream_of_topic), listener=_SeekToStoredOffsets(self))
        try:
            while not self.stopping.is_set():
                polled = self.consumer.poll(timeout_ms=200)
                records = [r for batch in polled.values() for r in batch]
                if not records:
                    continue
                try:
                    self.apply(app, records, redis_client)
                except psycopg.Error as exc:
                    # The consumer has moved past these records but the database has not:
                    # rewind to the offsets the database holds, and apply them again.
                    log.warning("a batch failed and will be applied again: %s", exc)
                    self.stopping.wait(1.0)
                    self.rewind()
        finally:
            self.consumer.close(autocommit=False)
            self.conn.close()
            redis_client.close()
            app.close()

    def rewind(self) -> None:
        assert self.consumer is not None
        if self.conn is None or self.conn.closed or self.conn.broken:
            self.conn = psycopg.connect(self.settings.database_url)
        self.seek_to_stored_offsets(list(self.consumer.assignment()))

    def seek_to_stored_offsets(self, assigned: list[TopicPartition]) -> None:
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
        for tp in assigned:
            offset = stored.get((tp.topic, tp.partition))
            if offset is None:
                self.consumer.seek_to_beginning(tp)
            else:
                self.consumer.seek(tp, offset)

    def apply(
        self, app: PanelApplication, records: Sequence[ConsumerRecord], redis_client: redis.Redis
    ) -> None:
        assert self.conn is not None
        assert self.consumer is not None
        by_stream: dict[str, list[PanelEvent]] = {}
        applied: dict[tuple[str, str], int] = {}
        offsets: dict[TopicPartition, int] = {}
        for record in records:
            offsets[TopicPartition(record.topic, record.partition)] = record.offset + 1
            try:
                message = envelope.decode(record.value)
            except ValueError as exc:
                log.error(
                    "skipping a malformed message at %s/%s@%s: %s",
                    record.topic,
                    record.partition,
                    record.offset,
                    exc,
                )
                continue
            stream = self.stream_of_topic[record.topic]
            by_stream.setdefault(stream, []).append(message.event)
            key = (message.tenant_id, stream)
            applied[key] = max(applied.get(key, 0), message.notification_id)

        def missing(originator_id: str, after: int, before: int) -> list[PanelEvent]:
            log.info("filling a version gap of %s from the event store", originator_id)
            found = app.events.get(originator_id, gt=after, lte=before - 1)
            return [e for e in found if isinstance(e, PanelEvent)]

        changed: dict[str, set[tuple[str, str]]] = {}
        with self.conn.transaction(), self.conn.cursor() as cur:
            for stream, events in by_stream.items():
                project = PROJECTIONS.get(stream)
                if project is not None:
                    changed[stream] = project(cur, events, missing)
            consistency.record_applied(cur, applied)
            cur.executemany(
                _SAVE_OFFSET,
                [
                    (self.settings.projector_group, tp.topic, tp.partition, offset)
                    for tp, offset in sorted(offsets.items())
                ],
            )
        keys = [cache.generation_key(t, s) for t, s in applied]
        keys += [cache.generation_key(t, s, i) for s, ids in changed.items() for t, i in ids]
        cache.invalidate(redis_client, keys)
        try:
            self.consumer.commit({tp: OffsetAndMetadata(o, "", -1) for tp, o in offsets.items()})
        except Exception as exc:
            log.debug("kafka offset commit failed (harmless): %s", exc)
