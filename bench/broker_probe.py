"""The development broker's cost as it fills: how much CPU tansu (memory storage) spends while
records flow at a fixed rate from a relay-like producer (idempotent, acks=all, a flush per
round of sends) to a consumer with the projector's fetch settings, first on an empty topic,
then after more and more small batches are stored. A real Kafka broker finds a fetch's
offset through its index; this shows whether the stand-in does.

    python -m bench.broker_probe [--rate 100] [--steps 3] [--step-batches 15000]
                                 [--batch-records 2] [--round-ms 0]

`--batch-records` sets how many records each stored batch holds (the same records in fewer,
larger batches: whether the broker's cost follows batches or records). `--one-partition`
stores the batches in partition 0 only and, at each step, sends the flowing records to
partition 0, then to partition 1: whether the cost follows what the partition fetched from
holds, or what the topic holds. `--round-ms` sends the flowing records as the relay does with
`relay_round_interval_ms`: in rounds, each the records due by then and one flush, and after a
round that sent more than one the next starts at least that long after it (0, the default:
rounds back to back, a flush for each record unless the broker falls behind). Each step
also gives the records' latency from when each was due to the consumer (p50/p99 ms).

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
from beeoclock.kafka import FETCH_WAIT_MS, FetchWait
from bench.stats import summarize

TOPIC = "probe"
PARTITIONS = 6
VALUE = b"x" * 700  # about an event's envelope
STAMP = 20  # a record's value starts with the time it was sent


def _cpu(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


def flowing(
    servers: str,
    broker: psutil.Process,
    producer: KafkaProducer,
    rate: int,
    seconds: float,
    partition: int | None = None,
    fixed_wait: bool = False,
    round_ms: float = 0.0,
) -> dict[str, Any]:
    """Broker cores used while `rate` records/s flow from the producer to a consumer that
    fetches as the projector does (`fetch_max_wait_ms` 10, lengthened while the broker
    answers a partition empty though records wait in it: `kafka.FetchWait`; kept at 10 with
    `fixed_wait`), and the records' latency from when each was due to the consumer; to
    `partition`, or spread over all of them by key. The producer sends in rounds as the relay
    does, each round the records due by then and a flush; after a round that sent more than
    one, the next starts at least `round_ms` after it (0: back to back)."""
    consumer = KafkaConsumer(
        bootstrap_servers=servers, enable_auto_commit=False, fetch_max_wait_ms=FETCH_WAIT_MS
    )
    partitions = [TopicPartition(TOPIC, p) for p in range(PARTITIONS)]
    consumer.assign(partitions)
    for tp, end in consumer.end_offsets(partitions).items():
        consumer.seek(tp, end)
    consumer.poll(timeout_ms=300)
    stop, latencies = threading.Event(), []

    wait = None if fixed_wait else FetchWait(consumer)

    def consume() -> None:
        while not stop.is_set():
            polled = wait.poll(100)[0] if wait else consumer.poll(timeout_ms=100)
            for records in polled.values():
                now = time.time()
                latencies.extend(
                    now - float(r.value[:STAMP].decode()) for r in records if r.value != VALUE
                )

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    before, started, sent, rounds = _cpu(broker), time.monotonic(), 0, 0
    offset = time.time() - started  # a record is stamped with the wall clock it was due at
    while time.monotonic() - started < seconds:
        # a round: every record due by now, one flush
        round_started, before_round = time.monotonic(), sent
        while started + sent / rate <= time.monotonic():
            due = offset + started + sent / rate
            _send(producer, sent, f"{due:<{STAMP}.6f}".encode() + VALUE, partition)
            sent += 1
        producer.flush()
        rounds += 1
        next_round = started + sent / rate
        if sent - before_round > 1:  # records come faster than rounds: the relay's rule
            next_round = max(next_round, round_started + round_ms / 1000)
        time.sleep(max(0.0, next_round - time.monotonic()))
    used = _cpu(broker) - before
    time.sleep(1.0)
    stop.set()
    thread.join()
    consumer.close()
    ms = summarize(x * 1000 for x in latencies)
    return {
        "partition": partition,
        "sent": sent,
        "rounds": rounds,
        "consumed": len(latencies),
        "broker_cores": round(used / seconds, 3),
        "latency_p50_ms": ms["p50_ms"],
        "latency_p99_ms": ms["p99_ms"],
        "fetch_wait_ms": wait.ms if wait else FETCH_WAIT_MS,
    }


def _send(producer: KafkaProducer, n: int, value: bytes, partition: int | None) -> None:
    """The `n`th record: to `partition`, or keyed so that records spread over all of them."""
    if partition is None:
        producer.send(TOPIC, key=str(n % 97).encode(), value=value)
    else:
        producer.send(TOPIC, value=value, partition=partition)


def fill(producer: KafkaProducer, batches: int, records: int, partition: int | None = None) -> None:
    """`batches` batches of `records` records each (one flush per batch); two is what a relay
    at a low rate stores. Into `partition`, or spread over all of them by key."""
    sent = 0
    for _ in range(batches):
        for _ in range(records):
            _send(producer, sent, VALUE, partition)
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
    parser.add_argument("--one-partition", action="store_true")
    parser.add_argument(
        "--fixed-wait",
        action="store_true",
        help="the consumer keeps fetch_max_wait_ms at 10 (the projector before FetchWait)",
    )
    parser.add_argument(
        "--round-ms",
        type=float,
        default=0.0,
        help="least time from the start of a round that sent more than one record to the "
        "next (the relay's relay_round_interval_ms); 0: back to back",
    )
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
        targets: list[int | None] = [0, 1] if args.one_partition else [None]
        where = " in partition 0" if args.one_partition else ""
        for step in range(args.steps + 1):
            if step:
                fill(producer, args.step_batches, args.batch_records, targets[0])
                stored += args.step_batches
            for target in targets:
                found = flowing(
                    servers,
                    broker,
                    producer,
                    args.rate,
                    args.seconds,
                    target,
                    args.fixed_wait,
                    args.round_ms,
                )
                found["stored_batches"] = stored
                found["stored_records"] = stored * args.batch_records
                steps.append(found)
                to = "" if target is None else f" to partition {target}"
                latency = (
                    f"latency p50 {found['latency_p50_ms']:.1f} ms, "
                    f"p99 {found['latency_p99_ms']:.1f} ms"
                    if found["consumed"]
                    else "nothing consumed (within the window and 1 s after)"
                )
                print(
                    f"{stored:>7,} batches of {args.batch_records} stored{where}: "
                    f"{args.rate}/s flowing{to} costs the broker "
                    f"{found['broker_cores']:.2f} cores; {found['consumed']:,} of "
                    f"{found['sent']:,} consumed ({found['rounds']:,} rounds), {latency}; "
                    f"fetch wait {found['fetch_wait_ms']} ms at the end",
                    flush=True,
                )
        producer.close()
        summary = {
            "rate": args.rate,
            "seconds": args.seconds,
            "batch_records": args.batch_records,
            "one_partition": args.one_partition,
            "fixed_wait": args.fixed_wait,
            "round_ms": args.round_ms,
        }
        print(json.dumps(summary | {"steps": steps}))


if __name__ == "__main__":
    main()
