"""The base of every panel event: who did it, for which tenant, under which request."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, Literal

from eventsourcing.domain import CanInitAggregate, CanMutateAggregate

#: The states every entity can be in (CONTRACT.md, Common DTO fields).
EntityState = Literal["active", "inactive", "archived", "deleted"]


@dataclass(frozen=True)
class PanelEvent(CanMutateAggregate[str]):
    """Every event carries its tenant, its actor (the token subject) and the request id."""

    originator_id: str
    originator_version: int
    timestamp: datetime
    tenant_id: str
    actor: str
    request_id: str

    def apply(self, aggregate: Any) -> None:
        aggregate.evolve(self)


@dataclass(frozen=True)
class PanelCreated(PanelEvent, CanInitAggregate[str]):
    """The first event of a stream; names the aggregate class that folds the stream."""

    originator_topic: str


def stream_id(kind: str, tenant_id: str, entity_id: str) -> str:
    """The event store id of one entity: tenant-scoped, so one `_id` in two tenants is two."""
    return f"{kind}:{tenant_id}:{entity_id}"


def split_stream_id(originator_id: str) -> tuple[str, str, str]:
    kind, tenant_id, entity_id = originator_id.split(":", 2)
    return kind, tenant_id, entity_id


#: The fields every event has: who, when, which entity; the rest is what the event says.
BASE_FIELDS = frozenset(f.name for f in fields(PanelCreated))


def event_data(state: Mapping[str, Any]) -> dict[str, Any]:
    """What an event says, without the fields every event has (`BASE_FIELDS`)."""
    return {k: v for k, v in state.items() if k not in BASE_FIELDS}
