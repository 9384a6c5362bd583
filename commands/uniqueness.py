"""Uniqueness records: the `eventsourcing` index-aggregate pattern.

A value that must be unique among a tenant's entities (a customer's email or phone, a
service's order) is an aggregate of its own, whose id is derived from the value:
`unique:<tenant>:<kind>:<digest>`. Taking or giving up a value appends an event to that
record, saved in the SAME transaction as the entity's own events. Two requests that take one
value race for the same (record id, version) and the event store's unique constraint lets
exactly one transaction commit; the other is rolled back whole, entity events included, and
its handler decides again, now finding the value taken (409). No read-then-write window.

The digest is an HMAC of the normalised value under a key kept in the database
(`panel_keys`, made by migration 004), so record ids carry no email or phone in clear and
can't be reversed by enumerating phone numbers without that key.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.domain import BaseAggregate
from eventsourcing.persistence import StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder
from psycopg.sql import SQL, Identifier

from commands.application import PanelApplication
from commands.context import Meta
from commands.errors import Conflict, FieldError
from events.base import PanelCreated, PanelEvent

KIND = "unique"
_SELECT_RECORDS = (
    "SELECT originator_id, originator_version, topic, state FROM {} "
    "WHERE originator_id = ANY(%s) ORDER BY originator_id, originator_version"
)


@dataclass(frozen=True)
class UniqueValueRecorded(PanelCreated):
    """The first time a value is taken in a tenant."""

    owner: str


@dataclass(frozen=True)
class UniqueValueTaken(PanelEvent):
    owner: str


@dataclass(frozen=True)
class UniqueValueReleased(PanelEvent):
    """The owner gave the value up (changed it, or was deleted)."""


class UniqueValue(BaseAggregate[str]):
    owner: str | None

    def __init__(self) -> None:
        """The owner comes from the creation event's `apply`."""

    def evolve(self, event: PanelEvent) -> None:
        if isinstance(event, UniqueValueRecorded | UniqueValueTaken):
            self.owner = event.owner
        elif isinstance(event, UniqueValueReleased):
            self.owner = None


def record_id(key: bytes, tenant_id: str, kind: str, value: str) -> str:
    digest = hmac.new(key, f"{tenant_id}\x00{kind}\x00{value}".encode(), hashlib.sha256)
    return f"{KIND}:{tenant_id}:{kind}:{digest.hexdigest()[:40]}"


def changes(
    app: PanelApplication,
    meta: Meta,
    owner: str,
    before: Mapping[str, str | None],
    after: Mapping[str, str | None],
    noun: str,
    *,
    guess_new: bool = False,
) -> list[UniqueValue]:
    """The uniqueness records to save with an entity whose unique values (kind -> normalised
    value, None for none) go from `before` to `after`: new values taken, old ones released.

    `guess_new`: don't read the records, take every value as never used (what a new entity's
    values nearly always are). A wrong guess costs nothing but a retry: the first record of
    a used value is stored already, so the save collides and the caller decides again
    without guessing.

    Raises Conflict naming the field when a new value belongs to another entity."""
    moves = []
    for kind in sorted(set(before) | set(after)):
        old, new = before.get(kind), after.get(kind)
        if old == new:
            continue
        key = app.uniqueness_key
        moves.append(
            (
                kind,
                record_id(key, meta.tenant_id, kind, new) if new is not None else None,
                record_id(key, meta.tenant_id, kind, old) if old is not None else None,
            )
        )
    rids = [rid for _, *rids in moves for rid in rids if rid is not None]
    loaded = dict.fromkeys(rids) if guess_new else load_records(app, rids)
    records: list[UniqueValue] = []
    taken: list[FieldError] = []
    for kind, new_id, old_id in moves:
        if new_id is not None:
            record = _take(meta, owner, new_id, loaded[new_id])
            if record is None:
                taken.append(FieldError(kind, f"is already used by another {noun}"))
            else:
                records.append(record)
        if old_id is not None:
            released = _release(meta, owner, loaded[old_id])
            if released is not None:
                records.append(released)
    if taken:
        fields = " and ".join(e.field for e in taken)
        msg = f"{fields} already used by another {noun}"
        raise Conflict(msg, taken)
    return records


def load_records(app: PanelApplication, rids: list[str]) -> dict[str, UniqueValue | None]:
    """Many records in one query (a customer's email and phone: one round trip, not two)."""
    found: dict[str, UniqueValue | None] = dict.fromkeys(rids)
    if not rids:
        return found
    recorder = app.recorder
    assert isinstance(recorder, PostgresApplicationRecorder)
    with recorder.datastore.get_connection() as conn, conn.cursor() as cur:
        table = Identifier(recorder.datastore.schema, recorder.events_table_name)
        cur.execute(SQL(_SELECT_RECORDS).format(table), (rids,), prepare=True)
        rows = cur.fetchall()
    for row in rows:
        event = app.mapper.to_domain_event(
            StoredEvent(
                row["originator_id"], row["originator_version"], row["topic"], bytes(row["state"])
            )
        )
        found[row["originator_id"]] = event.mutate(found[row["originator_id"]])  # type: ignore[attr-defined]
    return found


def load_record(app: PanelApplication, rid: str) -> UniqueValue | None:
    try:
        record: UniqueValue = app.repository.get(rid)
    except AggregateNotFoundError:
        return None
    return record


def _take(meta: Meta, owner: str, rid: str, record: UniqueValue | None) -> UniqueValue | None:
    """The record, now owned by `owner`; None when another entity owns it."""
    if record is None:
        return UniqueValue._create(UniqueValueRecorded, id=rid, owner=owner, **meta.event_fields())
    if record.owner == owner:
        return record  # already ours: nothing to append
    if record.owner is not None:
        return None
    record.trigger_event(UniqueValueTaken, owner=owner, **meta.event_fields())
    return record


def _release(meta: Meta, owner: str, record: UniqueValue | None) -> UniqueValue | None:
    if record is None or record.owner != owner:
        return None  # not ours (never taken, or already given up): nothing to release
    record.trigger_event(UniqueValueReleased, **meta.event_fields())
    return record
