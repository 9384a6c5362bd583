"""The Kafka message format (version 1): a JSON envelope any Kafka client can read.

```
{"schema": "beeoclock.event.v1", "type": "CustomerRegistered", "eventVersion": 1,
 "tenantId": "...", "aggregateType": "customer", "aggregateId": "<_id>",
 "aggregateVersion": 1, "notificationId": 42, "previousNotificationId": 17,
 "timestamp": "2025-...Z", "actor": "<token subject>", "requestId": "...",
 "payload": {<the event's own fields>}}
```
`previousNotificationId` is the notification id of the event the relay passed on before this
one for the same tenant and aggregate type (null when the relay does not know it): published
as a message, or, rarely, set aside as a relay dead letter. A consumer that applied nothing up
to it knows messages were lost on the way.
Personal data in the payload is sealed with the customer's own key (events/pii.py): a consumer
without the key sees `{"sealed": "...", "fields": [...]}`.
The message key is the tenant id, so each tenant's events keep their order in a partition.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from eventsourcing.persistence import Notification, Transcoder
from eventsourcing.utils import resolve_topic

from events.base import PanelCreated, PanelEvent, event_data, split_stream_id
from events.customer import CUSTOMER_EVENTS
from events.service import SERVICE_EVENTS
from events.timefmt import iso_ms, parse_iso

SCHEMA = "beeoclock.event.v1"

#: Event type name -> (class, aggregate type). The aggregate type names the Kafka topic.
EVENT_TYPES: dict[str, tuple[type[PanelEvent], str]] = {
    **{cls.__name__: (cls, "customer") for cls in CUSTOMER_EVENTS},
    **{cls.__name__: (cls, "service") for cls in SERVICE_EVENTS},
}


def aggregate_type_of(event: PanelEvent | type[PanelEvent]) -> str | None:
    """The aggregate type of a published event; None for internal events (not published)."""
    cls = event if isinstance(event, type) else type(event)
    entry = EVENT_TYPES.get(cls.__name__)
    return entry[1] if entry and entry[0] is cls else None


@dataclass(frozen=True)
class Envelope:
    notification_id: int
    aggregate_type: str
    event: PanelEvent
    #: the tenant's previous message of this aggregate type (None: not known)
    previous: int | None = None

    @property
    def tenant_id(self) -> str:
        return self.event.tenant_id

    @property
    def entity_id(self) -> str:
        return split_stream_id(self.event.originator_id)[2]


def encode(notification_id: int, event: PanelEvent, previous: int | None = None) -> bytes:
    state = dict(vars(event))
    originator_id, version = state.pop("originator_id"), state.pop("originator_version")
    return encode_state(notification_id, type(event), originator_id, version, state, previous)


def published_class(notification: Notification) -> type[PanelEvent] | None:
    """The class of a stored event that is published; None for the others (uniqueness
    records and the like). TopicError for a class this release does not know."""
    cls = resolve_topic(notification.topic)
    return cls if isinstance(cls, type) and aggregate_type_of(cls) is not None else None


def encode_stored(
    notification: Notification, transcoder: Transcoder, previous: int | None = None
) -> bytes | None:
    """The message of a stored event, made from its stored state as it is: personal data
    stays sealed (the relay never holds a key). None for events that are not published."""
    cls = published_class(notification)
    if cls is None:
        return None
    state: dict[str, Any] = transcoder.decode(notification.state)
    return encode_state(
        notification.id,
        cls,
        str(notification.originator_id),
        notification.originator_version,
        state,
        previous,
    )


def encode_state(
    notification_id: int,
    cls: type[PanelEvent],
    originator_id: str,
    originator_version: int,
    state: dict[str, Any],
    previous: int | None = None,
) -> bytes:
    aggregate_type = aggregate_type_of(cls)
    if aggregate_type is None:
        msg = f"{cls.__name__} is not a published event"
        raise ValueError(msg)
    _, tenant_id, entity_id = split_stream_id(originator_id)
    payload = event_data(state)
    timestamp: datetime = state["timestamp"]
    return orjson.dumps(
        {
            "schema": SCHEMA,
            "type": cls.__name__,
            "eventVersion": getattr(cls, "class_version", 1),
            "tenantId": tenant_id,
            "aggregateType": aggregate_type,
            "aggregateId": entity_id,
            "aggregateVersion": originator_version,
            "notificationId": notification_id,
            "previousNotificationId": previous,
            "timestamp": iso_ms(timestamp),
            "timestampUs": timestamp.microsecond,
            "actor": state["actor"],
            "requestId": state["request_id"],
            "payload": payload,
        }
    )


def decode(raw: bytes) -> Envelope:
    """Rebuild the domain event a message carries; raises ValueError for a foreign message."""
    try:
        doc: dict[str, Any] = orjson.loads(raw)
        if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
            schema = doc.get("schema") if isinstance(doc, dict) else None
            msg = f"unknown schema {schema!r}"
            raise ValueError(msg)
        cls, aggregate_type = EVENT_TYPES[doc["type"]]
        timestamp = parse_iso(doc["timestamp"]).replace(microsecond=int(doc["timestampUs"]))
        state: dict[str, Any] = dict(doc["payload"])
        state.update(
            originator_id=f"{aggregate_type}:{doc['tenantId']}:{doc['aggregateId']}",
            originator_version=int(doc["aggregateVersion"]),
            timestamp=timestamp,
            tenant_id=doc["tenantId"],
            actor=doc["actor"],
            request_id=doc["requestId"],
        )
        if issubclass(cls, PanelCreated):
            state.setdefault("originator_topic", "")
        event = object.__new__(cls)
        event.__dict__.update(state)
        previous = doc.get("previousNotificationId")
        return Envelope(
            int(doc["notificationId"]),
            aggregate_type,
            event,
            int(previous) if previous is not None else None,
        )
    except (KeyError, TypeError, AttributeError, orjson.JSONDecodeError) as exc:
        msg = f"malformed event message: {exc}"
        raise ValueError(msg) from exc
