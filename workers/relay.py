"""The relay: follows the event store's notification log and publishes each event to Kafka.

- Progress is a row in `relay_positions`, written only after every send of a batch has been
  acknowledged (each future checked), so a crash re-sends at most one batch: the projector's
  version gate makes a re-sent event harmless. For the same reason the row is written without
  waiting for the WAL flush (`synchronous_commit = off`): a database crash that loses its
  last updates only makes the relay send those events again.
- One relay is active at a time: it holds a PostgreSQL advisory lock on the session that also
  records its progress. A standby blocks on the lock and takes over when the holder's session
  ends (crash, kill -9, network loss), resuming from the recorded position.
- It wakes on the store's LISTEN/NOTIFY channel, with a slow poll as a safety net. While
  events come faster than its rounds (a round sent more than one), rounds start at least
  `relay_round_interval_ms` apart: the commits of that time go as one Kafka batch per
  partition instead of one each, for a few milliseconds more lag. The development broker's
  cost per fetch grows with the batches a partition holds (bench/README.md, "Write → read
  lag"). An event alone, or after a quiet spell, goes at once; a backlog goes round after
  round.
- Messages are made from the stored events as they are: personal data stays sealed, and the
  relay holds no key to open it.
- Each message names the notification the relay passed on before it for its tenant and stream
  (published and acknowledged, or set aside as a dead letter; the last of each is kept in
  `relay_tenant_positions`, written with the position): a projector that never applied that
  one knows messages were lost on the way, and applies them from the event store; for a
  tenant with no later message, it compares that table with what it applied
  (workers/projector.py, `heal`).
"""

from __future__ import annotations

import logging
import threading
import time
import zlib
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any

import psycopg
from eventsourcing.persistence import Notification, PersistenceError
from eventsourcing.utils import TopicError
from kafka import KafkaProducer
from kafka.errors import KafkaError

from beeoclock import kafka
from beeoclock.bootstrap import panel_application
from beeoclock.settings import Settings
from commands.application import PanelApplication
from events import envelope
from events.base import split_stream_id

log = logging.getLogger(__name__)

LOCK_CLASS = 0x72656C  # advisory lock (class, zlib.crc32(name)): one active relay per name
BATCH = 500
#: (stream, tenant)s whose last published notification the relay keeps in memory (the rest
#: are read from `relay_tenant_positions` when they come up)
REMEMBERED = 100_000

Key = tuple[str, str]
IDLE_POLL_S = 1.0


class Relay:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.name = settings.relay_name
        self.stopping = threading.Event()
        self.topics = {"customer": settings.topic_customer, "service": settings.topic_service}
        #: (stream, tenant) -> the last notification published and acknowledged
        self.published: OrderedDict[Key, int] = OrderedDict()

    def stop(self) -> None:
        self.stopping.set()

    def run(self) -> None:
        """Wait to become the active relay, then publish until stopped; after a failure,
        reconnect and resume from the recorded position."""
        app = panel_application(self.settings, pool_size=2)
        try:
            while not self.stopping.is_set():
                try:
                    self._run_active(app)
                except (psycopg.Error, OSError, PersistenceError, KafkaError, RelayError) as exc:
                    log.warning("relay interrupted, resuming from the recorded position: %s", exc)
                    self.stopping.wait(1.0)
        finally:
            app.close()

    def _run_active(self, app: PanelApplication) -> None:
        with psycopg.connect(self.settings.database_url, autocommit=True) as conn:
            conn.execute("SET synchronous_commit = off")  # see the module docstring
            if not self._acquire(conn):
                return
            log.info("relay %s is active", self.name)
            self.published.clear()  # what another relay published since is in the table
            kafka.ensure_topics(self.settings)
            conn.execute(f"LISTEN {app.recorder.channel_name}")  # type: ignore[attr-defined]
            producer = kafka.producer(self.settings)
            try:
                position = self._position(conn)
                interval_s = self.settings.relay_round_interval_ms / 1000
                while not self.stopping.is_set():
                    started = time.monotonic()
                    notifications = app.recorder.select_notifications(
                        start=position, limit=BATCH, inclusive_of_start=False
                    )
                    if not notifications:
                        for _ in conn.notifies(timeout=IDLE_POLL_S, stop_after=1):
                            pass
                        continue
                    last, poisoned, sent = self._publish(app, producer, notifications, conn)
                    position = notifications[-1].id
                    if poisoned:  # rare: the dead letters go with the position that passes them
                        with conn.transaction():
                            self._bury(conn, poisoned)
                            self._record_published(conn, position, last)
                    else:
                        self._record_published(conn, position, last)
                    # events come faster than rounds, but not a backlog: let the next ones gather
                    rest = interval_s - (time.monotonic() - started)
                    if rest > 0 and sent > 1 and len(notifications) < BATCH:
                        self.stopping.wait(rest)
            finally:
                producer.close(timeout=5)

    def _acquire(self, conn: psycopg.Connection[Any]) -> bool:
        """Block as a hot standby until the lock is ours (or we are stopped)."""
        while not self.stopping.is_set():
            row = conn.execute(
                "SELECT pg_try_advisory_lock(%s, %s)",
                (LOCK_CLASS, zlib.crc32(self.name.encode()) - 2**31),
            ).fetchone()
            if row and row[0]:
                return True
            self.stopping.wait(0.2)
        return False

    def _position(self, conn: psycopg.Connection[Any]) -> int:
        conn.execute(
            "INSERT INTO relay_positions (name, position) VALUES (%s, 0) ON CONFLICT DO NOTHING",
            (self.name,),
        )
        row = conn.execute(
            "SELECT position FROM relay_positions WHERE name = %s", (self.name,)
        ).fetchone()
        return int(row[0]) if row else 0

    def _publish(
        self,
        app: PanelApplication,
        producer: KafkaProducer,
        notifications: Sequence[Notification],
        conn: psycopg.Connection[Any],
    ) -> tuple[dict[Key, int], list[tuple[Notification, str]], int]:
        """Send a batch and wait for every acknowledgement; returns the last notification
        passed on of each (stream, tenant), sent or set aside, the events that could not be
        made messages of, with the reason (skipped: see `_bury`), and how many were sent.
        Internal events (uniqueness records) are not sent. An event of a class this release
        does not know stops the relay there until a release that knows it runs (RelayError,
        retried): in a rolling upgrade the write API may store a new kind of event before
        the relay is upgraded, and skipping it would lose it for the read models."""
        published, poisoned = [], []
        for notification in notifications:
            try:
                if envelope.published_class(notification) is None:
                    continue
            except TopicError as exc:
                msg = (
                    f"notification {notification.id} is of a class this release does not know "
                    f"({notification.topic}): waiting for a release that does ({exc})"
                )
                raise RelayError(msg) from exc
            try:
                kind, tenant_id, _ = split_stream_id(str(notification.originator_id))
            except Exception as exc:  # a stored event nothing can be made of: not the others'
                poisoned.append((notification, repr(exc)))
                continue
            if kind not in self.topics:
                poisoned.append((notification, f"no topic for {kind!r} events"))
                continue
            published.append((notification, kind, tenant_id))
        self._recall(conn, {(kind, tenant) for _, kind, tenant in published})
        last: dict[Key, int] = {}
        futures = []
        for notification, kind, tenant_id in published:
            key = (kind, tenant_id)
            previous = last.get(key, self.published.get(key))
            try:
                message = envelope.encode_stored(notification, app.mapper.transcoder, previous)
            except Exception as exc:  # its state does not decode, say
                poisoned.append((notification, repr(exc)))
                # passed on all the same: a projector takes the tenant's stream as applied
                # past it (reads waiting for it go on), finding it in the event store
                last[key] = notification.id
                continue
            assert message is not None
            futures.append(producer.send(self.topics[kind], key=tenant_id.encode(), value=message))
            last[key] = notification.id
        timeout_s = self.settings.relay_send_timeout_ms / 1000
        producer.flush(timeout=timeout_s)
        for future in futures:
            try:
                future.get(timeout=timeout_s)
            except Exception as exc:
                msg = f"a send was not acknowledged: {exc!r}"
                raise RelayError(msg) from exc
        return last, poisoned, len(futures)

    def _bury(
        self, conn: psycopg.Connection[Any], poisoned: list[tuple[Notification, str]]
    ) -> None:
        """Events no message could be made of, kept with the reason (in the transaction of
        the position that goes past them), and logged."""
        for notification, error in poisoned:
            log.error(
                "relay dead letter: notification %d (%s v%d, %s): %s",
                notification.id,
                notification.originator_id,
                notification.originator_version,
                notification.topic,
                error,
            )
            conn.execute(
                "INSERT INTO relay_dead_letters (name, notification_id, originator_id, "
                "originator_version, topic, error) VALUES (%s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (name, notification_id) DO NOTHING",
                (
                    self.name,
                    notification.id,
                    str(notification.originator_id),
                    notification.originator_version,
                    notification.topic,
                    error,
                ),
            )

    def _recall(self, conn: psycopg.Connection[Any], keys: Iterable[Key]) -> None:
        """The last published notification of each (stream, tenant) not in memory, from
        `relay_tenant_positions` (none there: not known, the next message names none)."""
        wanted = sorted(k for k in keys if k not in self.published)
        if not wanted:
            return
        for stream, tenant_id, position in conn.execute(
            "SELECT r.stream, r.tenant_id, r.position FROM relay_tenant_positions r "
            "JOIN unnest(%s::text[], %s::text[]) AS k(stream, tenant_id) USING (stream, tenant_id) "
            "WHERE r.name = %s",
            ([s for s, _ in wanted], [t for _, t in wanted], self.name),
        ).fetchall():
            self._remember({(stream, tenant_id): int(position)})

    def _record_published(
        self, conn: psycopg.Connection[Any], position: int, last: dict[Key, int]
    ) -> None:
        """After the batch's acknowledgements: the relay's position and the last message of
        each (stream, tenant) it sent, in one statement (one round trip, one transaction: a
        relay waits for it before its next batch)."""
        keys = sorted(last)
        conn.execute(
            "WITH moved AS (UPDATE relay_positions SET position = %s WHERE name = %s) "
            "INSERT INTO relay_tenant_positions (name, stream, tenant_id, position) "
            "SELECT %s, * FROM unnest(%s::text[], %s::text[], %s::bigint[]) "
            "ON CONFLICT (name, tenant_id, stream) DO UPDATE SET position = EXCLUDED.position",
            (
                position,
                self.name,
                self.name,
                [s for s, _ in keys],
                [t for _, t in keys],
                [last[k] for k in keys],
            ),
        )
        self._remember(last)

    def _remember(self, last: dict[Key, int]) -> None:
        for key, position in last.items():
            self.published[key] = position
            self.published.move_to_end(key)
        while len(self.published) > REMEMBERED:
            self.published.popitem(last=False)


class RelayError(Exception):
    """A batch was not fully acknowledged; nothing of it is recorded as published."""
