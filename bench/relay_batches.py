"""How the relay's producer batches a catch-up: rounds of 500 sends (an event's envelope is
about 700 bytes) over 6 partitions, a flush per round, as workers/relay.py sends, with the
producer of beeoclock/kafka.py and with kafka-python's default 16 KB batches beside it.

    python -m bench.relay_batches [--rounds 100]

Prints records/s, the average batch size and records per produce request of each. Starts its
own tansu broker on a free port and stops it (by pid) at the end."""

from __future__ import annotations

import argparse
import time

from kafka import KafkaProducer

from beeoclock import kafka
from beeoclock.settings import Settings
from bench.broker_probe import VALUE, own_broker
from workers.relay import BATCH as ROUND


def measure(producer: KafkaProducer, topic: str, rounds: int) -> str:
    started = time.perf_counter()
    for _ in range(rounds):
        for i in range(ROUND):
            producer.send(topic, key=str(i % 97).encode(), value=VALUE)
        producer.flush()
    elapsed = time.perf_counter() - started
    metrics = producer.metrics()["producer-metrics"]
    producer.close()
    return (
        f"{rounds * ROUND / elapsed:,.0f} records/s, batches of {metrics['batch-size-avg']:,.0f} B "
        f"on average, {metrics['records-per-request-avg']:.0f} records per produce request"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=100)
    args = parser.parse_args()
    with own_broker(["relay", "default"]) as (servers, _):
        relay = kafka.producer(Settings(kafka_bootstrap_servers=servers))
        print("relay producer:       ", measure(relay, "relay", args.rounds), flush=True)
        default = KafkaProducer(
            bootstrap_servers=servers, acks="all", enable_idempotence=True, linger_ms=0
        )
        print("16 KB default batches:", measure(default, "default", args.rounds), flush=True)


if __name__ == "__main__":
    main()
