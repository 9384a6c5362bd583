"""Kafka clients configured for this system and for the tansu broker's behaviour."""

from __future__ import annotations

import contextlib
import logging
import socket
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError
from kafka.partitioner.default import murmur2

from beeoclock.settings import Settings

log = logging.getLogger(__name__)


def partition_of(tenant_id: str, partitions: int) -> int:
    """The partition of a topic of `partitions` that the relay's producer puts a tenant's
    events in: kafka-python's default partitioner, murmur2 of the key (the tenant id)."""
    return int(murmur2(tenant_id.encode()) & 0x7FFFFFFF) % partitions


def servers(settings: Settings) -> list[str]:
    return [s.strip() for s in settings.kafka_bootstrap_servers.split(",") if s.strip()]


def ensure_topics(settings: Settings) -> None:
    """Create the topics (one per aggregate type) if they don't exist."""
    admin = KafkaAdminClient(bootstrap_servers=servers(settings), client_id="beeoclock-admin")
    try:
        existing = set(admin.list_topics())
        wanted = [settings.topic_customer, settings.topic_service]
        new = [
            NewTopic(
                name,
                num_partitions=settings.kafka_partitions,
                replication_factor=settings.kafka_replication_factor,
            )
            for name in wanted
            if name not in existing
        ]
        if new:
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(new)
            log.info("created topics %s", [t.name for t in new])
    finally:
        admin.close()


def producer(settings: Settings) -> KafkaProducer:
    # Idempotent, acknowledged by all in-sync replicas, ordered per partition; a send that
    # can't be delivered within the timeout fails its future, which the relay checks.
    return KafkaProducer(
        bootstrap_servers=servers(settings),
        client_id="beeoclock-relay",
        acks="all",
        enable_idempotence=True,
        retries=2**31 - 1,
        max_in_flight_requests_per_connection=5,
        linger_ms=0,
        # Room for a relay round's share of a partition (500 events of about 700 bytes over 6
        # partitions): catching up, the default 16 KB cut it into batches of ~20 records. Half
        # as many batches, and catch-up 1.5-1.9x faster against tansu (`python -m
        # bench.relay_batches`); the development broker's cost per fetch grows with the
        # batches it holds (`python -m bench.broker_probe`).
        batch_size=256 * 1024,
        delivery_timeout_ms=settings.relay_send_timeout_ms,
        request_timeout_ms=min(10000, settings.relay_send_timeout_ms),
    )


def consumer(settings: Settings, **overrides: Any) -> KafkaConsumer:
    # Auto-commit off: the database holds the offsets that count. fetch_max_wait_ms is short
    # because tansu answers a waiting fetch only when it expires; max_poll_interval_ms is
    # what kafka-python sends as the rebalance timeout, which tansu waits out on every join.
    # A short session timeout lets the group notice a killed member within seconds.
    options: dict[str, Any] = {
        "bootstrap_servers": servers(settings),
        "group_id": settings.projector_group,
        "client_id": "beeoclock-projector",
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "fetch_max_wait_ms": 10,
        "max_poll_interval_ms": settings.projector_rebalance_timeout_ms,
        "session_timeout_ms": 6000,
        "heartbeat_interval_ms": 1000,
        "max_poll_records": 500,
    }
    options.update(overrides)
    return KafkaConsumer(**options)


def reachable(settings: Settings, timeout_s: float = 1.0) -> bool:
    for server in servers(settings):
        host, _, port = server.rpartition(":")
        try:
            with socket.create_connection((host, int(port)), timeout_s):
                return True
        except OSError:
            continue
    return False
