"""The event-sourced application: the one boundary through which commands reach the store.

Personal data is sealed on its way into the store and opened on its way out (`PanelMapper`,
with the per-customer keys of events/pii.py), so aggregates, decisions, projections and
history only ever see plain values, while the stored events, snapshots and Kafka messages
hold ciphertext. Aggregates with long streams are snapshotted (`SNAPSHOT_EVERY`). Concurrent
commands are committed in groups (commands/recorder.py).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from datetime import datetime
from functools import cached_property
from typing import Any, ClassVar

import orjson
from eventsourcing.application import Application, ProcessingEvent
from eventsourcing.domain import BaseAggregate, CanSnapshotAggregate
from eventsourcing.persistence import JSONTranscoder, Mapper, StoredEvent, Transcoding
from eventsourcing.postgres import PostgresApplicationRecorder
from psycopg import Cursor
from psycopg.rows import tuple_row

from commands.customer import Customer
from commands.recorder import PanelRecorder
from commands.service import Service
from events.base import PanelEvent, split_stream_id
from events.customer import CustomerState
from events.pii import Subject, Vault
from events.service import ServiceState

log = logging.getLogger(__name__)

#: A snapshot every this many events of an entity: time travel and loading read at most this
#: many events past the nearest snapshot (twice as many where taking one failed).
SNAPSHOT_EVERY = 50

#: Extra statements for the insert transaction: (SQL, parameters).
Statements = Sequence[tuple[str, tuple[Any, ...]]]


@dataclass(frozen=True)
class PanelSnapshot(CanSnapshotAggregate[str]):
    """The state of an entity at a version (table `panel_snapshots`)."""

    originator_id: str
    originator_version: int
    timestamp: datetime
    topic: str
    state: dict[str, Any]


def _subject(originator_id: str) -> Subject:
    _, tenant_id, entity_id = split_stream_id(originator_id)
    return tenant_id, entity_id


class PanelMapper(Mapper[str]):
    """Seals the attributes an event class names in `personal_data` before the event is
    stored, and opens them when it is read. Without a vault (the relay, migrations) sealed
    values are left sealed, and storing personal data is refused."""

    def __init__(self, transcoder: JSONTranscoder, vault: Vault | None) -> None:
        super().__init__(transcoder)
        self.vault = vault

    def to_stored_event(self, domain_event: Any) -> StoredEvent:
        personal: tuple[str, ...] = getattr(type(domain_event), "personal_data", ())
        if personal:
            if self.vault is None:
                msg = "storing personal data needs BEEOCLOCK_MASTER_KEY"
                raise RuntimeError(msg)
            subject = _subject(domain_event.originator_id)
            sealed = object.__new__(type(domain_event))
            state = dict(vars(domain_event))
            for name in personal:
                state[name] = self.vault.seal(subject, state[name])
            object.__setattr__(sealed, "__dict__", state)
            domain_event = sealed
        return super().to_stored_event(domain_event)

    def to_domain_event(self, stored_event: StoredEvent) -> Any:
        return self.open_personal(super().to_domain_event(stored_event), copy=False)

    def open_personal(self, event: Any, *, copy: bool = True) -> Any:
        """The event with its personal data opened (a copy unless told otherwise); as it is
        without a vault or personal data."""
        personal: tuple[str, ...] = getattr(type(event), "personal_data", ())
        if not personal or self.vault is None:
            return event
        subject = _subject(event.originator_id)
        state = dict(vars(event)) if copy else vars(event)
        for name in personal:
            state[name] = self.vault.open(subject, state[name])
        if copy:
            event = object.__new__(type(event))
            object.__setattr__(event, "__dict__", state)
        return event


class OrjsonTranscoder(JSONTranscoder):
    """The library's JSON format (custom types as `{"_type_", "_data_"}`), read and written
    with orjson: several times faster, and the format is unchanged, so stored events written
    by either are read by both."""

    _OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS

    def encode(self, obj: Any) -> bytes:
        return orjson.dumps(obj, default=self._encode_obj, option=self._OPTIONS)

    def decode(self, data: bytes) -> Any:
        value = orjson.loads(data)
        typed = data.count(b'"_type_":')
        if not typed:
            return value
        if type(value) is dict:
            stamp = value.get("timestamp")
            if (
                typed == 1
                and type(stamp) is dict
                and len(stamp) == 2
                and "_type_" in stamp
                and type(stamp.get("_data_")) is str
            ):  # the usual case by far, an event: its one custom value is its timestamp
                value["timestamp"] = self._decode_obj(stamp)
                return value
            # else an event whose only custom values are top-level ones
            simple = [
                key
                for key, item in value.items()
                if type(item) is dict
                and len(item) == 2
                and "_type_" in item
                and type(item.get("_data_")) not in (dict, list)
            ]
            if len(simple) == typed:
                for key in simple:
                    value[key] = self._decode_obj(value[key])
                return value
        return self._revive(value)

    def _revive(self, value: Any) -> Any:
        if type(value) is dict:
            if len(value) == 2 and "_type_" in value and "_data_" in value:
                return self._decode_obj({**value, "_data_": self._revive(value["_data_"])})
            for key, item in value.items():
                if type(item) is dict or type(item) is list:
                    value[key] = self._revive(item)
        elif type(value) is list:
            for index, item in enumerate(value):
                if type(item) is dict or type(item) is list:
                    value[index] = self._revive(item)
        return value


class _StateTranscoding(Transcoding):
    """An entity state inside a snapshot; a customer's personal data sealed as in events."""

    def __init__(self, cls: type[Any], name: str, vault: Vault | None) -> None:
        self.type = cls
        self.name = name
        self.vault = vault
        self.names = [f.name for f in fields(cls)]

    def encode(self, obj: Any) -> Any:
        data = {name: getattr(obj, name) for name in self.names}
        if "personal" in data:
            if self.vault is None:
                msg = "storing personal data needs BEEOCLOCK_MASTER_KEY"
                raise RuntimeError(msg)
            data["personal"] = self.vault.seal((obj.tenant_id, obj.id), data["personal"])
        return data

    def decode(self, data: Any) -> Any:
        if "personal" in data and self.vault is not None:
            data = {
                **data,
                "personal": self.vault.open((data["tenant_id"], data["id"]), data["personal"]),
            }
        return self.type(**data)


class PanelApplication(Application[str]):
    """Customers and services of every tenant, in one event store (table `panel_events`).

    One store keeps one global order (the notification log) that the relay publishes.
    """

    name = "Panel"
    snapshot_class = PanelSnapshot
    snapshotting_intervals: ClassVar[dict[type[Any], int]] = {
        Customer: SNAPSHOT_EVERY,
        Service: SNAPSHOT_EVERY,
    }

    def __init__(self, env: dict[str, str] | None = None, *, master_key: bytes | None = None):
        self.vault = Vault(master_key, self._key_cursor) if master_key else None
        super().__init__(env=(env or {}) | {"APPLICATION_RECORDER_TOPIC": _RECORDER_TOPIC})

    @contextmanager
    def _key_cursor(self) -> Iterator[Cursor[Any]]:
        recorder = self.recorder
        assert isinstance(recorder, PostgresApplicationRecorder)
        with recorder.datastore.get_connection() as conn, conn.cursor(row_factory=tuple_row) as cur:
            yield cur

    def construct_transcoder(self) -> JSONTranscoder:
        transcoder = OrjsonTranscoder()
        self.register_transcodings(transcoder)
        return transcoder

    def construct_mapper(self) -> Mapper[str]:
        transcoder = self.construct_transcoder()
        assert isinstance(transcoder, JSONTranscoder)
        return PanelMapper(transcoder, self.vault)

    def register_transcodings(self, transcoder: JSONTranscoder) -> None:
        super().register_transcodings(transcoder)
        transcoder.register(_StateTranscoding(CustomerState, "customer_state", self.vault))
        transcoder.register(_StateTranscoding(ServiceState, "service_state", self.vault))

    def missing_events(self, originator_id: str, after: int, before: int) -> list[PanelEvent]:
        """The events of a stream with after < version < before, from the event store: what
        a read model fills a version gap with (`projections.versioned.MissingEvents`)."""
        log.info("filling a version gap of %s from the event store", originator_id)
        found = self.events.get(originator_id, gt=after, lte=before - 1)
        return [e for e in found if isinstance(e, PanelEvent)]

    def open_personal(self, event: Any) -> Any:
        """A copy of the event with its personal data opened (see `PanelMapper`)."""
        mapper = self.mapper
        assert isinstance(mapper, PanelMapper)
        return mapper.open_personal(event)

    def subjects(self, events: Iterable[Any]) -> set[Subject]:
        """The (tenant, customer) of every event that carries personal data."""
        return self.subjects_of_ids(
            e.originator_id for e in events if getattr(type(e), "personal_data", ())
        )

    @staticmethod
    def subjects_of_ids(originator_ids: Iterable[str]) -> set[Subject]:
        return {_subject(originator_id) for originator_id in originator_ids}

    @contextmanager
    def keys(self, *, defer: bool = False) -> Iterator[None]:
        """One operation's use of personal data keys (see events/pii.py); `defer`: keys made
        are saved with the events sealed with them (a command's session)."""
        if self.vault is None:
            yield
            return
        with self.vault.session(defer=defer):
            yield

    def commit(self, *aggregates: BaseAggregate[str], also: Statements = ()) -> int | None:
        """Save the aggregates' new events in one transaction (with `also`'s statements);
        returns the position of the last one. The same transaction records it as the tenant's
        latest write (a trigger, see projections/migrations/002), which reads wait for
        (read-your-writes)."""
        # What `Application.save` does, less its two runtime-protocol checks per aggregate
        # (is it an event? can it collect events?): on Python 3.11 each walks the protocol's
        # attributes, about 15 µs per aggregate, 5% of a create's time in the write API.
        # Everything committed here is an aggregate.
        processing: ProcessingEvent[str] = ProcessingEvent()
        for aggregate in aggregates:
            processing.events.extend(aggregate.collect_events())
            processing.aggregates[aggregate.id] = aggregate
        processing.saved_kwargs["also"] = also
        recordings = self._record(processing)
        try:
            self._take_snapshots(processing)
        except Exception:  # the events are committed: a snapshot missed is only slower loads
            log.warning("a snapshot was not taken after a commit", exc_info=True)
        self._notify(recordings)
        self.notify(processing.events)
        if not recordings:
            return None
        return max(r.notification.id for r in recordings)

    @cached_property
    def uniqueness_key(self) -> bytes:
        """The HMAC key of uniqueness record ids (see commands/uniqueness.py)."""
        recorder = self.recorder
        if not isinstance(recorder, PostgresApplicationRecorder):
            msg = "uniqueness records need the PostgreSQL event store"
            raise TypeError(msg)
        with recorder.datastore.transaction(commit=False) as cur:
            cur.execute("SELECT key FROM panel_keys WHERE name = 'uniqueness'")
            row = cur.fetchone()
        if row is None:
            msg = "the uniqueness key is missing: run `beeoclock migrate`"
            raise RuntimeError(msg)
        return bytes(row["key"])


_RECORDER_TOPIC = f"{PanelRecorder.__module__}:{PanelRecorder.__qualname__}"
