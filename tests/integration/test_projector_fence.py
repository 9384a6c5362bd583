"""A projector that lost a partition while it applied a batch (a rebalance it has not seen
yet: a batch longer than the rebalance timeout, a paused process) commits nothing of that
batch: the partition's stored offset, moved on by its new owner, fences it off. Version gating
alone would let it create a row its new owner had meanwhile replaced by a tombstone (an
erased customer's personal data back in the read model). Real PostgreSQL and broker; the
batch is made of the stored event as the relay publishes it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
import redis
from kafka import TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

from beeoclock import kafka
from beeoclock.bootstrap import panel_application
from beeoclock.migrations import migrate
from beeoclock.settings import Settings
from commands import handlers
from commands.application import PanelApplication
from commands.context import Meta
from commands.customer import RegisterCustomer
from events import envelope
from tests.support import projected
from workers.projector import Fenced, Projector


@pytest.fixture
def app(settings: Settings) -> Iterator[PanelApplication]:
    migrate(settings)
    application = panel_application(settings, pool_size=2)
    yield application
    application.close()


@pytest.fixture
def projector(settings: Settings) -> Iterator[Projector]:
    """A projector's applying side, outside its loop: its own connection, and a real
    consumer (not polled: the batch is given) for its after-commit hint."""
    running = Projector(settings)
    running.conn = running._connect()
    running.consumer = kafka.consumer(settings)
    yield running
    running.consumer.close(autocommit=False)
    running.conn.close()


def registered(app: PanelApplication, settings: Settings, tenant: str) -> tuple[str, bytes]:
    """A new customer of `tenant`: its id, and its registration as the relay publishes it."""
    customer = uuid.uuid4().hex[:24]
    meta = Meta(tenant, "user-1", uuid.uuid4().hex, datetime.now(UTC))
    handlers.register_customer(
        app, RegisterCustomer(meta, customer, {"firstName": "Ann"}, "regular", "active", [], None)
    )
    with psycopg.connect(settings.database_url) as conn:
        row = conn.execute(
            "SELECT notification_id FROM panel_events WHERE originator_id = %s",
            (f"customer:{tenant}:{customer}",),
        ).fetchone()
    assert row is not None
    (notification,) = app.recorder.select_notifications(start=row[0], limit=1)
    message = envelope.encode_stored(notification, app.mapper.transcoder)
    assert message is not None
    return customer, message


def batch(settings: Settings, offset: int, value: bytes) -> list[Any]:
    return [
        ConsumerRecord(
            settings.topic_customer, 0, -1, offset, 0, 0, b"t", value, [], None, 1, len(value), -1
        )
    ]


def stored_offset(settings: Settings) -> int | None:
    with psycopg.connect(settings.database_url) as conn:
        row = conn.execute(
            "SELECT next_offset FROM projector_offsets WHERE group_id = %s AND topic = %s "
            "AND partition = 0",
            (settings.projector_group, settings.topic_customer),
        ).fetchone()
    return int(row[0]) if row else None


def test_a_batch_of_a_consumer_that_lost_its_partition_commits_nothing(
    app: PanelApplication, projector: Projector, settings: Settings
) -> None:
    tenant = uuid.uuid4().hex
    customer, message = registered(app, settings, tenant)
    client = redis.Redis.from_url(settings.redis_url)
    with psycopg.connect(settings.database_url) as conn:
        # the partition's new owner has applied it up to offset 7
        conn.execute(
            "INSERT INTO projector_offsets (group_id, topic, partition, next_offset) "
            "VALUES (%s, %s, 0, 7) ON CONFLICT (group_id, topic, partition) "
            "DO UPDATE SET next_offset = 7",
            (settings.projector_group, settings.topic_customer),
        )
    with pytest.raises(Fenced):
        projector.apply(app, batch(settings, 3, message), client)  # fetched from 3 before
    assert not projected(settings, tenant, customer)
    assert stored_offset(settings) == 7
    # the same event where the partition's offset stands is applied, and moves it on
    projector.apply(app, batch(settings, 7, message), client)
    assert projected(settings, tenant, customer)
    assert stored_offset(settings) == 8
    # and a batch that begins past it (a gap in the log's offsets) too
    other, message = registered(app, settings, tenant)
    projector.apply(app, batch(settings, 10, message), client)
    assert projected(settings, tenant, other)
    assert stored_offset(settings) == 11
    client.close()


def test_a_log_started_again_is_applied_from_its_beginning(
    projector: Projector, settings: Settings
) -> None:
    """A partition's log that ends before the offset the database holds (the broker kept
    nothing, the topic was made anew) would have every batch fenced off: once a batch is,
    the projector takes the log as new and applies it from its beginning."""
    kafka.ensure_topics(settings)
    tp = TopicPartition(settings.topic_customer, 0)
    assert projector.consumer is not None
    projector.consumer.assign([tp])
    with psycopg.connect(settings.database_url) as conn:
        conn.execute(
            "INSERT INTO projector_offsets (group_id, topic, partition, next_offset) "
            "VALUES (%s, %s, 0, 1000000) ON CONFLICT (group_id, topic, partition) "
            "DO UPDATE SET next_offset = 1000000",
            (settings.projector_group, settings.topic_customer),
        )
    beginning = projector.consumer.beginning_offsets([tp])[tp]
    projector.rewind()
    assert stored_offset(settings) == beginning
    assert projector.consumer.position(tp) == beginning
