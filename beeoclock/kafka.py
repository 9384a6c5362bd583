"""Kafka clients configured for this system and for the tansu broker's behaviour."""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
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


#: how long the broker may hold a fetch that has no records yet (kafka-python's
#: `fetch_max_wait_ms`): short, because tansu holds every fetch that long (see FetchWait)
FETCH_WAIT_MS = 10


class FetchWait:
    """The consumer's `fetch_max_wait_ms`, grown while the broker can't answer in time.

    A Kafka broker answers a fetch as soon as it has records, so this wait costs nothing while
    they flow. tansu, the development broker, holds every fetch until the wait is over (hence
    10 ms), and answers a partition *empty* when finding the fetch's offset in it takes longer
    than that, which grows with the batches the partition holds: with 30,000 batches stored,
    a consumer at 10 ms got nothing however long it polled, while the broker's answers said
    the partition held records past its position; at 20 ms it got them (see bench/README.md).
    A projector that polled on at 10 ms never applied that partition again, and its failing
    fetches kept the broker busy.

    So the consumer polls through `poll`: a partition that held records past its position
    before a poll (by the broker's high watermark, which every answer carries) and that the
    poll did not move at all, while other partitions' records may have come, is a stall, and
    doubles the wait, up to `longest_ms`. It is judged every two fetches at the current wait
    (an answer still on its way is not taken for a stall), so a wait too short shows within
    those, however long the caller would wait for records; a poll that returned as many
    records as it may (others may wait in the client) judges no partition. A wait that
    has gone `probe_after_s` without a stall is halved (not below the consumer's configured
    one), so that it follows the broker back down. Private state of kafka-python (pinned in
    pyproject.toml) is read and set: the fetcher's config, which it reads for every fetch
    request, and the subscription's positions and high watermarks (the public `position()`
    may ask the broker).
    """

    #: a stall at the longest wait is logged as a warning at most this often
    WARN_EVERY_S = 60.0

    def __init__(
        self,
        consumer: KafkaConsumer,
        *,
        longest_ms: int = 640,
        probe_after_s: float = 10.0,
    ) -> None:
        self.consumer = consumer
        self.shortest_ms = int(consumer.config["fetch_max_wait_ms"])  # as configured
        self.ms = self.shortest_ms  # what the fetcher uses now
        self.longest_ms = longest_ms
        self.probe_after_s = probe_after_s
        self.since = time.monotonic()
        self.warned_at = -self.WARN_EVERY_S

    def behind(self) -> dict[TopicPartition, int]:
        """The fetchable assigned partitions whose last known high watermark is past the
        position: their positions."""
        late = {}
        for tp, state in list(self.consumer._subscription.assignment.items()):
            position, highwater = state.position, state.highwater
            if (
                position is not None
                and highwater is not None
                and highwater > position.offset
                and state.is_fetchable()
            ):
                late[tp] = position.offset
        return late

    def poll(self, timeout_ms: int) -> tuple[dict[TopicPartition, list[Any]], bool]:
        """Poll the consumer until records come, a partition stalls or `timeout_ms` passes
        (at least two fetches once the wait has grown), the wait adapted after it: (the
        records by partition, whether a partition stalled).

        The consumer is polled two fetches at a time, and a stall is judged after each: a
        wait too short for the broker shows within a few fetches, not at the end of the
        caller's timeout (the projector's is 200 ms), so a try of a shorter wait that fails
        holds records back that long only. `python -m bench.broker_probe --one-partition
        --steps 1 --step-batches 15000 --rate 200 --seconds 30`, two runs each way: p99 98
        and 123 ms before, 65 and 67 ms after, for the partition holding 15,000 batches."""
        step_ms = 2 * self.ms + 20  # two fetches, and the time to answer them
        if self.ms > self.shortest_ms:
            timeout_ms = max(timeout_ms, step_ms)
        deadline = time.monotonic() + timeout_ms / 1000
        waiting = self.behind()
        while True:
            slice_ms = min(max(0, round((deadline - time.monotonic()) * 1000)), step_ms)
            polled = self.consumer.poll(timeout_ms=slice_ms)
            after = self.behind()  # and what the next slice is judged against
            # not judged: a shorter slice (an answer may be on its way), or a poll that
            # returned as many records as it may (others may wait in the client)
            judged = slice_ms >= step_ms and (
                sum(len(r) for r in polled.values()) < self.consumer.config["max_poll_records"]
            )
            stalled = judged and any(after.get(tp) == at for tp, at in waiting.items())
            waiting = after
            if polled or stalled or time.monotonic() >= deadline:
                self._adapt(stalled)
                return polled, stalled

    def _adapt(self, stalled: bool) -> None:
        now = time.monotonic()
        if stalled:
            if self.ms < self.longest_ms:
                self._set(min(self.ms * 2, self.longest_ms))
                log.info("the broker answered a partition late: fetch wait %d ms", self.ms)
            elif now - self.warned_at >= self.WARN_EVERY_S:
                self.warned_at = now
                log.warning(
                    "the broker answers no records within the longest fetch wait (%d ms); "
                    "a partition is not being consumed",
                    self.ms,
                )
            self.since = now
        elif self.ms > self.shortest_ms and now - self.since >= self.probe_after_s:
            self._set(max(self.ms // 2, self.shortest_ms))
            self.since = now

    def _set(self, ms: int) -> None:
        self.ms = ms
        self.consumer._fetcher.config["fetch_max_wait_ms"] = ms


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
        "fetch_max_wait_ms": FETCH_WAIT_MS,
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
