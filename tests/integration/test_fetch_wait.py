"""The development broker (tansu) answers a partition *empty* when it can't find the fetch's
offset in it within `fetch_max_wait_ms`, which takes longer the more batches the partition
holds. A consumer that keeps its wait then never gets that partition's new records, however
long it polls (the projector did: a bench run's tenant had 14,999 of 15,000 writes unapplied).
The projector's `kafka.FetchWait` lengthens the wait while a partition the broker's answers say
holds records past the consumer's position is not moved by a poll, and shortens it again once
that has not happened for a while. tansu fails the whole answer, not only the slow partition's
share: the other partition's records, sent before every poll, came only once the wait had grown
too. Real broker, real client; the partition is filled until a consumer at the shortest wait
stalls on this machine, so the control proves the condition the fix is tested in."""

from __future__ import annotations

import time
import uuid

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

from beeoclock.kafka import FetchWait

STEP = 3_000  # batches stored per step until the shortest wait stalls
NEW = 10  # records produced after the filling, to be consumed
SHORTEST_MS = 1
LONG_POLL_MS = 20_000


def _consumer(servers: str, offsets: dict[TopicPartition, int]) -> KafkaConsumer:
    consumer = KafkaConsumer(
        bootstrap_servers=servers, enable_auto_commit=False, fetch_max_wait_ms=SHORTEST_MS
    )
    consumer.assign(list(offsets))
    for tp, offset in offsets.items():
        consumer.seek(tp, offset)
    return consumer


def _got(consumer: KafkaConsumer, timeout_ms: int) -> int:
    return sum(len(batch) for batch in consumer.poll(timeout_ms=timeout_ms).values())


def test_a_consumer_gets_the_records_of_a_partition_the_broker_cannot_answer_in_time(
    servers: dict[str, str],
) -> None:
    kafka = servers["kafka"]
    topic = f"fetch-wait-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=kafka)
    admin.create_topics([NewTopic(topic, 2, 1)])
    admin.close()
    slow, busy = TopicPartition(topic, 0), TopicPartition(topic, 1)
    producer = KafkaProducer(bootstrap_servers=kafka, linger_ms=0)
    stored = 0
    try:
        while True:  # fill `slow` until a consumer at the shortest wait gets nothing new
            assert stored < 40 * STEP, "the broker answered every fetch in time"
            for _ in range(STEP):  # a batch of two records per flush, as a relay at low rates
                producer.send(topic, b"x" * 200, partition=0)
                producer.send(topic, b"x" * 200, partition=0)
                producer.flush()
            stored += 2 * STEP
            for _ in range(NEW):
                producer.send(topic, b"new", partition=0)
            producer.flush()
            control = _consumer(kafka, {slow: stored})
            try:
                stalled = all(_got(control, 200) == 0 for _ in range(3))
                known_end = control.highwater(slow)
            finally:
                control.close()
            stored += NEW
            if stalled:
                break
        assert known_end == stored  # its answers said records were waiting

        consumer = _consumer(kafka, {slow: stored - NEW, busy: 0})
        try:
            wait = FetchWait(consumer, probe_after_s=3600)
            assert wait.ms == SHORTEST_MS
            # a stall shows within a few fetches, not when the caller's timeout is over (the
            # poll used to last it all, holding every record back that long)
            started = time.monotonic()
            polled, stalled = wait.poll(LONG_POLL_MS)
            assert stalled
            assert time.monotonic() - started < LONG_POLL_MS / 1000 / 2
            got, stalls = len(polled.get(slow, [])), 1
            for _ in range(15):
                # records keep flowing in the other partition
                producer.send(topic, b"busy", partition=1)
                producer.flush()
                polled, stalled = wait.poll(200)
                stalls += stalled
                got += len(polled.get(slow, []))
                if got == NEW:
                    break
            assert got == NEW
            assert stalls >= 1
            assert wait.ms > SHORTEST_MS
            assert consumer._fetcher.config["fetch_max_wait_ms"] == wait.ms
            assert slow not in wait.behind()

            # no stall for `probe_after_s`: it tries a shorter wait again
            grown = wait.ms
            wait.probe_after_s = 0.0
            _, stalled = wait.poll(50)
            assert not stalled
            assert wait.ms == max(grown // 2, SHORTEST_MS)
        finally:
            consumer.close()
    finally:
        producer.close()
