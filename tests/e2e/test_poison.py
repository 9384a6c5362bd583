"""An event the projector can't apply is dead-lettered with its error; every other event,
tenant and reader goes on being served."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import httpx
import psycopg
from kafka import KafkaProducer

from beeoclock.settings import Settings
from events import envelope
from events.customer import CustomerDetailsChanged
from tests.support import eventually, new_tenant


def test_poisoned_and_malformed_messages_are_dead_lettered_and_the_rest_goes_on(
    client: httpx.Client, settings: Settings
) -> None:
    ghost_tenant = uuid.uuid4().hex[:24]
    # a change to a customer the event store has never heard of: no state to apply it to
    orphan = CustomerDetailsChanged(
        originator_id=f"customer:{ghost_tenant}:ghost",
        originator_version=2,
        timestamp=datetime.now(UTC),
        tenant_id=ghost_tenant,
        actor="intruder",
        request_id="forged",
        personal={"firstName": "Nobody"},
        customer_type="regular",
    )
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    try:
        for value in (envelope.encode(1, orphan), b"[1]", b"garbage"):
            producer.send(settings.topic_customer, key=ghost_tenant.encode(), value=value)
        producer.flush(10)
    finally:
        producer.close()

    tenant = new_tenant(client, settings)
    created = tenant.post("/api/v1/customer", json={"firstName": "Alive"})
    assert tenant.get(f"/api/v1/customer/{created.json()['_id']}").status_code == 200

    def dead_letters() -> list[tuple[str | None, str]]:
        with psycopg.connect(settings.database_url) as conn:
            rows = conn.execute(
                "SELECT aggregate_id, error FROM projector_dead_letters "
                "WHERE group_id = %s AND message IN (%s, %s, %s)",
                (settings.projector_group, envelope.encode(1, orphan), b"[1]", b"garbage"),
            ).fetchall()
        return [(r[0], r[1]) for r in rows] if len(rows) == 3 else []

    letters = eventually(dead_letters, timeout_s=30)
    assert sorted(str(aggregate) for aggregate, _ in letters) == ["None", "None", "ghost"]
    assert all(error for _, error in letters)
    with psycopg.connect(settings.database_url) as conn:
        assert conn.execute(
            "SELECT count(*) FROM customers WHERE tenant_id = %s", (ghost_tenant,)
        ).fetchone() == (0,)
