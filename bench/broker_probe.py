"""The development broker's cost as it fills: how much CPU tansu (memory storage) spends while
records flow at a fixed rate from a relay-like producer (idempotent, acks=all, a flush per
send) to a consumer with the projector's fetch settings, first on an empty topic, then after
more and more small batches are stored. A real Kafka broker finds a fetch's offset through
its index; this shows whether the stand-in does.

    python -m bench.broker_probe [--rate 100] [--steps 3] [--step-batches 15000]
                                 [--batch-records 2]

`--batch-records` sets how many records each stored batch holds (the same records in fewer,
larger batches: whether the broker's cost follows batches or records).

Prints one line per step and, last, a JSON object. Starts its own broker on a free port and
stops it (by pid) at the end."""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psutil
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

from beeoclock.embedded import free_port, spawn_kafka_broker, wait_for_port

TOPIC = "probe"
PARTITIONS = 6
VALUE = b"x" * 700  # about an event's envelope


def _cpu(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


def flowing(
    servers: str, broker: psutil.Process, producer: KafkaProducer, rate: int, seconds: float
) -> dict[str, Any]:
    """Broker cores used while `rate` records/s flow from the producer to a consumer that
    fetches as the projector does (`fetch_max_wait_ms` 10)."""
    consumer = KafkaConsumer(
        bootstrap_servers=servers, enable_auto_commit=False, fetch_max_wait_ms=10
    )
    partitions = [TopicPartition(TOPIC, p) for p in range(PARTITIONS)]
    consumer.assign(partitions)
    consumer.seek_to_end()
    consumer.poll(timeout_ms=300)
    stop, got = threading.Event(), [0]

    def consume() -> None:
        while not stop.is_set():
            got[0] += sum(len(v) for v in consumer.poll(timeout_ms=100).values())

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    before, started, sent = _cpu(broker), time.monotonic(), 0
    while time.monotonic() - started < seconds:
        producer.send(TOPIC, key=str(sent % 97).encode(), value=VALUE)
        producer.flush()
        sent += 1
        time.sleep(max(0.0, started + sent / rate - time.monotonic()))
    used = _cpu(broker) - before
    time.sleep(0.3)
    stop.set()
    thread.join()
    consumer.close()
    return {"sent": sent, "consumed": got[0], "broker_cores": round(used / seconds, 3)}


def fill(producer: KafkaProducer, batches: int, records: int) -> None:
    """`batches` batches of `records` records each (one flush per batch); two is what a relay
    at a low rate stores."""
    sent = 0
    for _ in range(batches):
        for _ in range(records):
            producer.send(TOPIC, key=str(sent % 97).encode(), value=VALUE)
            sent += 1
        producer.flush()


@contextmanager
def own_broker(topics: list[str]) -> Iterator[tuple[str, psutil.Process]]:
    """A tansu broker of its own on a free port with these topics (6 partitions each), stopped
    (by pid) at the end: its bootstrap servers and its process."""
    port = free_port()
    proc = spawn_kafka_broker(port)
    try:
        wait_for_port(port)
        servers = f"127.0.0.1:{port}"
        admin = KafkaAdminClient(bootstrap_servers=servers)
        admin.create_topics([NewTopic(topic, PARTITIONS, 1) for topic in topics])
        admin.close()
        yield servers, psutil.Process(proc.pid)
    finally:
        proc.kill()
        proc.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--step-batches", type=int, default=15_000)
    parser.add_argument("--batch-records", type=int, default=2)
    args = parser.parse_args()
    with own_broker([TOPIC]) as (servers, broker):
        producer = KafkaProducer(
            bootstrap_servers=servers,
            acks="all",
            enable_idempotence=True,
            linger_ms=0,
            batch_size=max(16384, 2 * args.batch_records * len(VALUE)),
        )
        steps = []
        stored = 0
        for step in range(args.steps + 1):
            if step:
                fill(producer, args.step_batches, args.batch_records)
                stored += args.step_batches
            found = flowing(servers, broker, producer, args.rate, args.seconds)
            found["stored_batches"] = stored
            found["stored_records"] = stored * args.batch_records
            steps.append(found)
            print(
                f"{stored:>7,} batches of {args.batch_records} stored: {args.rate}/s flowing "
                "costs the broker "
                f"{found['broker_cores']:.2f} cores",
                flush=True,
            )
        producer.close()
        summary = {"rate": args.rate, "seconds": args.seconds, "batch_records": args.batch_records}
        print(json.dumps(summary | {"steps": steps}))


if __name__ == "__main__":
    main()
