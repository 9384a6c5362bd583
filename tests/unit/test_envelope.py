"""The Kafka message format round-trips every published event exactly."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from commands.context import Meta
from commands.customer import Customer, RegisterCustomer
from events import envelope


def test_an_event_survives_the_envelope_unchanged() -> None:
    at = datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    customer = Customer.register(
        RegisterCustomer(
            Meta("t1", "u1", "r1", at),
            "abc",
            {"firstName": "Ann", "lastName": None, "email": None, "phone": None, "note": None},
            "regular",
            "active",
            [],
            None,
        )
    )
    [event] = customer.collect_events()
    raw = envelope.encode(42, event)
    doc = orjson.loads(raw)
    assert doc["schema"] == "beeoclock.event.v1"
    assert (doc["type"], doc["tenantId"], doc["aggregateId"]) == ("CustomerRegistered", "t1", "abc")
    decoded = envelope.decode(raw)
    assert decoded.notification_id == 42
    assert decoded.entity_id == "abc"
    got = dict(vars(decoded.event))
    want = dict(vars(event))
    got.pop("originator_topic")
    want.pop("originator_topic")
    assert got == want
    # the tenant's previous message, when the relay knows it; a message without one decodes
    assert decoded.previous is None
    assert envelope.decode(envelope.encode(42, event, previous=17)).previous == 17
    del doc["previousNotificationId"]
    assert envelope.decode(orjson.dumps(doc)).previous is None


@pytest.mark.parametrize(
    "raw",
    [b"not json", b"{}", b'{"schema":"other"}', b'{"schema":"beeoclock.event.v1","type":"Nope"}'],
)
def test_a_foreign_or_malformed_message_is_refused(raw: bytes) -> None:
    with pytest.raises(ValueError, match=r"malformed|unknown"):
        envelope.decode(raw)


def test_instants_before_year_1000_keep_four_digit_years() -> None:
    from datetime import UTC, datetime

    from events.timefmt import iso_ms, parse_iso

    wire = iso_ms(datetime(999, 6, 1, tzinfo=UTC))
    assert wire == "0999-06-01T00:00:00.000Z"
    assert parse_iso(wire) == datetime(999, 6, 1, tzinfo=UTC)


def test_record_batches_are_checksummed_in_c() -> None:
    """kafka-python falls back to a pure-Python CRC32C (about 800x slower) without the
    `crc32c` package; relay and projector checksum every batch they send or fetch."""
    from kafka.record import util

    assert util.crc32c_c is not None
    assert util.calc_crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
