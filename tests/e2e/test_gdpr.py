"""GDPR through the real processes: a customer's data exported (API and CLI), then erased by
the CLI, after which no trace of their email, phone, name or note is left in the database
(events, snapshots, read models, keys), the Kafka topics, Redis or the logs, and a replay
keeps it so."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
import redis
from kafka import KafkaConsumer, TopicPartition

from beeoclock.embedded import free_port, spawn_redis
from beeoclock.settings import Settings
from tests.support import (
    Stack,
    Tenant,
    cli,
    eventually,
    isolated,
    new_tenant,
    running,
    wait_until_projecting,
)

pytestmark = pytest.mark.slow


def database_hits(settings: Settings, needle: str) -> list[str]:
    """Every table of the database whose rows hold `needle`, as text or as bytes."""
    hits = []
    with psycopg.connect(settings.database_url) as conn:
        tables = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        ).fetchall()
        for (table,) in tables:
            row = conn.execute(
                f'SELECT count(*) FROM "{table}" t WHERE t::text ILIKE %s OR t::text ILIKE %s',
                (f"%{needle}%", f"%{needle.encode().hex()}%"),
            ).fetchone()
            if row and row[0]:
                hits.append(table)
    return hits


def kafka_messages(settings: Settings) -> list[bytes]:
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers.split(","),
        group_id=None,
        enable_auto_commit=False,
        fetch_max_wait_ms=10,
        consumer_timeout_ms=3000,
    )
    try:
        partitions = [
            TopicPartition(topic, p)
            for topic in (settings.topic_customer, settings.topic_service)
            for p in consumer.partitions_for_topic(topic) or ()
        ]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        ends = consumer.end_offsets(partitions)
        found: list[bytes] = []
        while any(consumer.position(tp) < end for tp, end in ends.items()):
            for batch in consumer.poll(timeout_ms=500).values():
                found += [(r.key or b"") + b"|" + (r.value or b"") for r in batch]
        return found
    finally:
        consumer.close()


def redis_dump(url: str) -> list[bytes]:
    """Every key and value (as a value's bytes; DUMP would compress them)."""
    client = redis.Redis.from_url(url)
    dumped = []
    for key in client.scan_iter(count=1000):
        kind = client.type(key)
        if kind == b"string":
            value = client.get(key) or b""
        elif kind == b"hash":
            value = b"".join(k + v for k, v in client.hgetall(key).items())
        else:
            value = repr(client.dump(key)).encode()
        dumped.append(key + b"|" + value)
    return dumped


@pytest.fixture(scope="module")
def system(servers: dict[str, str]) -> Iterator[tuple[Settings, Stack, str]]:
    port = free_port()
    server = spawn_redis(port)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        with (
            isolated({**servers, "redis": url}) as settings,
            running(settings, "api", "relay", "projector") as stack,
        ):
            wait_until_projecting(stack)
            yield settings, stack, url
    finally:
        server.kill()
        server.wait()


def test_a_customer_is_exported_then_erased_without_a_trace(
    system: tuple[Settings, Stack, str],
) -> None:
    settings, stack, redis_url = system
    marker = uuid.uuid4().hex[:10]
    pii = {
        "firstName": f"Gosia{marker}",
        "lastName": f"Lis{marker}",
        "email": f"gosia.{marker}@example.org",
        "phone": "+48 601 234 567",
        "note": f"note-{marker}",
    }
    needles = [pii["firstName"], pii["lastName"], pii["email"], "48601234567", pii["note"]]
    with httpx.Client(base_url=stack.base_url, timeout=30) as client:
        tenant = new_tenant(client, settings, sub="front-desk")
        other = new_tenant(client, settings)
        created = tenant.post("/api/v1/customer", json=pii)
        assert created.status_code == 201, created.text
        customer_id = created.json()["_id"]
        path = f"/api/v1/customer/{customer_id}"
        changed = tenant.put(path, json={**pii, "note": f"{pii['note']}-2"})
        assert changed.status_code == 200
        needles.append(f"{pii['note']}-2")
        # the same id in another tenant, other personal data: must survive untouched
        theirs = {"firstName": f"Other{marker}", "email": f"other.{marker}@example.org"}
        assert (
            other.post("/api/v1/customer", json={"_id": customer_id, **theirs}).status_code == 201
        )
        # answers cached in Redis: by id, a list, a search
        assert tenant.get(path).status_code == 200
        assert tenant.get("/api/v1/customer/paged").json()["totalSize"] == 1
        assert (
            tenant.get("/api/v1/customer/paged", params={"phrase": marker}).json()["totalSize"] == 1
        )
        assert any(pii["email"].encode() in item for item in redis_dump(redis_url))

        # -- export: every field, every event, every place; nothing of the other tenant
        exported = tenant.get(f"{path}/export")
        assert exported.status_code == 200, exported.text
        document = exported.json()
        text = json.dumps(document)
        for value in (*needles[:2], pii["email"], "48601234567", pii["note"], f"{pii['note']}-2"):
            assert value in text
        assert document["current"]["note"] == f"{pii['note']}-2"
        assert [e["type"] for e in document["events"]] == [
            "CustomerRegistered",
            "CustomerDetailsChanged",
        ]
        assert document["events"][0]["data"]["personal"]["email"] == pii["email"]
        places = {p["place"]: p for p in document["appearsIn"]}
        assert places["read model"]["present"] is True
        assert places["data key"]["present"] is True
        assert sorted(places["uniqueness records"]["held"]) == ["email", "phone"]
        assert theirs["email"] not in text
        assert theirs["firstName"] not in text
        by_cli = json.loads(
            cli(
                settings, "gdpr", "export", "--tenant", tenant.tenant_id, "--customer", customer_id
            ).stdout
        )
        assert by_cli["current"] == document["current"]
        assert by_cli["events"] == document["events"]

        # a dead letter of theirs, its error quoting their email (a bad event, say), and one
        # of the other tenant's customer with the same id
        with psycopg.connect(settings.database_url) as conn:
            for tenant_id, quoted in ((tenant.tenant_id, pii["email"]), (other.tenant_id, "x")):
                conn.execute(
                    'INSERT INTO projector_dead_letters (group_id, topic, partition, "offset", '
                    "tenant_id, aggregate_id, error, message) "
                    "VALUES (%s, %s, 0, 0, %s, %s, %s, %s)",
                    (
                        settings.projector_group,
                        settings.topic_customer,
                        tenant_id,
                        customer_id,
                        f"ValueError('{quoted} is not valid')",
                        quoted.encode(),
                    ),
                )

        # -- erase
        erased = cli(
            settings,
            "gdpr",
            "erase",
            "--tenant",
            tenant.tenant_id,
            "--customer",
            customer_id,
            "--reason",
            "data subject request DSR-104",
            "--actor",
            "dpo@beeoclock",
        )
        summary = json.loads(erased.stdout)
        assert summary["erasedNow"] is True
        assert summary["deadLettersRedacted"] == 1
        with psycopg.connect(settings.database_url) as conn:
            kept = conn.execute(
                "SELECT error FROM projector_dead_letters WHERE tenant_id = %s",
                (other.tenant_id,),
            ).fetchall()
        assert kept == [("ValueError('x is not valid')",)]  # another tenant's stays
        assert tenant.get(path).status_code == 404
        assert tenant.get("/api/v1/customer/paged").json()["totalSize"] == 0
        assert tenant.put(path, json=pii).status_code == 404
        assert other.get(path).json()["firstName"] == theirs["firstName"]
        history = tenant.get(f"{path}/history").json()["items"]
        assert history[-1]["type"] == "CustomerErased"
        assert history[-1]["actor"] == "dpo@beeoclock"
        assert history[0]["changes"]["email"] == {"from": None, "to": "[erased]"}
        as_it_was = tenant.get(path, params={"version": 1}).json()
        assert as_it_was["email"] == as_it_was["firstName"] == "[erased]"

        # the projector has seen the erasure too (so Kafka holds every message)
        def projected() -> bool:
            with psycopg.connect(settings.database_url) as conn:
                row = conn.execute(
                    "SELECT a.position >= w.position FROM applied_positions a "
                    "JOIN written_positions w USING (tenant_id, stream) "
                    "WHERE tenant_id = %s AND stream = 'customer'",
                    (tenant.tenant_id,),
                ).fetchone()
            return bool(row and row[0])

        eventually(projected)

        def no_trace(where: str) -> None:
            for needle in needles:
                assert database_hits(settings, needle) == [], (where, needle)
                for message in kafka_messages(settings):
                    assert needle.encode() not in message, (where, needle)
                for item in redis_dump(redis_url):
                    assert needle.encode() not in item, (where, needle)
                for process in ("api", "relay", "projector"):
                    assert needle not in stack.log(process), (where, process, needle)
                assert needle not in erased.stdout + erased.stderr

        no_trace("after erasure")

        # a replay rebuilds from the events: the customer stays erased
        replayed = cli(settings, "replay", "--quiet")
        no_trace("after a replay")
        assert needles[2] not in replayed.stdout + replayed.stderr
        assert tenant.get(path).status_code == 404
        check = cli(settings, "replay", "--check", "--quiet")
        assert all(not json.loads(line)["missing"]["count"] for line in check.stdout.splitlines())

        # erasing again changes nothing; the released email is free for someone new
        again = json.loads(
            cli(
                settings,
                "gdpr",
                "erase",
                "--tenant",
                tenant.tenant_id,
                "--customer",
                customer_id,
                "--reason",
                "again",
            ).stdout
        )
        assert again["erasedNow"] is False
        reused = tenant.post("/api/v1/customer", json={"email": pii["email"]})
        assert reused.status_code == 201, reused.text


def test_unknown_customers_cannot_be_exported_or_erased(
    system: tuple[Settings, Stack, str],
) -> None:
    settings, stack, _ = system
    with httpx.Client(base_url=stack.base_url, timeout=30) as client:
        tenant: Tenant = new_tenant(client, settings)
        assert tenant.get("/api/v1/customer/nobody/export").status_code == 404
    missing: Any = cli(
        settings,
        "gdpr",
        "erase",
        "--tenant",
        tenant.tenant_id,
        "--customer",
        "nobody",
        "--reason",
        "x",
        check=False,
    )
    assert missing.returncode == 4  # not found (beeoclock.cli.EXIT_NOT_FOUND)
    assert "not found" in missing.stderr
