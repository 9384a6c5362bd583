"""The event store's recorder: the library's PostgreSQL application recorder, with group commit.

The library serializes every insert transaction on a table lock (so the notification log
commits in order and no reader skips an event). That makes one transaction per command the
write ceiling: about a thousand commands per second here, however many threads wait.

Group commit: a command's events go into a queue; whoever finds no commit in progress
becomes the leader and commits everything queued, up to MAX_GROUP commands, in ONE
transaction (one lock, one insert statement, one NOTIFY, one fsync), while the next commands
queue up behind it; then it wakes its group's threads and hands the lead to the first command
queued since. Each command keeps its own outcome: under the table lock, a command any of
whose events collides with a stored one, or with an earlier command of the group that goes
in, is left out and gets the `IntegrityError` it would have got committing after it; the
others commit. A command
never waits for more than the commit in progress and its own. With one caller at a time, a
group is one command and nothing changes.

Commands with statements of their own (`also=`, an erasure's key destruction) or tracking
records are committed alone, by the library's own path, with those statements.

A command that made a customer's first data key (events/pii.py, `defer`) saves it in the
same transaction as the events sealed with it. A command whose subject turns out to have a
key already (made by a racing command) is left out like a colliding one, and its key is
forgotten, so its retry uses the stored key.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from eventsourcing.persistence import (
    IntegrityError,
    InterfaceError,
    OperationalError,
    StoredEvent,
)
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore
from eventsourcing.utils import retry
from psycopg import Cursor, Rollback
from psycopg.rows import DictRow
from psycopg.sql import SQL, Identifier

from events import pii

MAX_GROUP = 256


class _Pending:
    """One command's events, waiting for their group's commit. Its thread sleeps on its own
    lock and is woken exactly once: when its group has been committed, or to lead the next."""

    __slots__ = ("_wake", "done", "error", "events", "ids", "keys", "leads")

    def __init__(self, stored_events: Sequence[StoredEvent], keys: list[pii.NewKey]) -> None:
        self.events = stored_events
        self.keys = keys
        self.done = False
        self.ids: list[int] | None = None
        self.error: BaseException | None = None
        self.leads = False  # handed the lead (set under the recorder's lock)
        self._wake = threading.Lock()
        self._wake.acquire()

    def succeed(self, ids: list[int]) -> None:
        self.ids, self.done = ids, True

    def fail(self, error: BaseException) -> None:
        self.error, self.done = error, True

    def sleep(self) -> None:
        self._wake.acquire()

    def wake(self) -> None:
        self._wake.release()


class PanelRecorder(PostgresApplicationRecorder):
    def __init__(self, datastore: PostgresDatastore, *, events_table_name: str = "stored_events"):
        super().__init__(datastore, events_table_name=events_table_name)
        self._turn = threading.Lock()  # guards the queue and who leads
        self._queue: list[_Pending] = []
        self._committing = False
        table = Identifier(self.datastore.schema, self.events_table_name)
        # Under the table lock: leave out every command one of whose events is stored already
        # or whose new data key's subject has a key already (taken), then every command that
        # shares an event's (id, version) or a new key's subject with an earlier command
        # still in (clash); insert the others' events in the order given (notification ids
        # follow it) and their keys. Every row says how many keys went in, and of how many.
        # Stored events and keys are looked up one index probe per row (LATERAL ... LIMIT 1),
        # never by a join the planner may answer by hashing the whole table.
        self._group_insert = SQL(
            "WITH batch AS (SELECT * FROM unnest(%b::int[], %b::text[], %b::bigint[], "
            "%b::text[], %b::bytea[]) WITH ORDINALITY "
            "AS b(command, originator_id, originator_version, topic, state, n)), "
            "keys AS (SELECT * FROM unnest(%b::int[], %b::text[], %b::text[], %b::bytea[]) "
            "AS k(command, tenant_id, subject_id, wrapped)), "
            "taken AS (SELECT b.command FROM batch b CROSS JOIN LATERAL (SELECT 1 FROM {table} e "
            "WHERE e.originator_id = b.originator_id "
            "AND e.originator_version = b.originator_version LIMIT 1) e "
            "UNION SELECT k.command FROM keys k CROSS JOIN LATERAL (SELECT 1 FROM pii_keys p "
            "WHERE p.tenant_id = k.tenant_id AND p.subject_id = k.subject_id LIMIT 1) p), "
            "firsts AS (SELECT originator_id, originator_version, min(command) AS first "
            "FROM batch WHERE command NOT IN (SELECT command FROM taken) GROUP BY 1, 2), "
            "key_firsts AS (SELECT tenant_id, subject_id, min(command) AS first "
            "FROM keys WHERE command NOT IN (SELECT command FROM taken) GROUP BY 1, 2), "
            "clash AS (SELECT b.command FROM batch b JOIN firsts f "
            "USING (originator_id, originator_version) WHERE b.command > f.first "
            "UNION SELECT k.command FROM keys k JOIN key_firsts f "
            "USING (tenant_id, subject_id) WHERE k.command > f.first), "
            "kept_keys AS (SELECT * FROM keys WHERE command NOT IN (SELECT command FROM taken) "
            "AND command NOT IN (SELECT command FROM clash)), "
            "made AS (INSERT INTO pii_keys (tenant_id, subject_id, wrapped) "
            "SELECT tenant_id, subject_id, wrapped FROM kept_keys "
            "ON CONFLICT (tenant_id, subject_id) DO NOTHING RETURNING 1), "
            "stored AS (INSERT INTO {table} (originator_id, originator_version, topic, state) "
            "SELECT originator_id, originator_version, topic, state FROM batch "
            "WHERE command NOT IN (SELECT command FROM taken) "
            "AND command NOT IN (SELECT command FROM clash) ORDER BY n "
            "RETURNING originator_id, originator_version, notification_id) "
            "SELECT originator_id, originator_version, notification_id, "
            "(SELECT count(*) FROM made) AS keys_made, "
            "(SELECT count(*) FROM kept_keys) AS keys_kept FROM stored"
        ).format(table=table)
        self._insert_keys = (
            "INSERT INTO pii_keys (tenant_id, subject_id, wrapped) "
            "SELECT * FROM unnest(%b::text[], %b::text[], %b::bytea[])"
        )

    def _insert_events(
        self, curs: Cursor[DictRow], stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> None:
        for sql, params in kwargs.get("also") or ():
            curs.execute(sql, params)
        keys: list[pii.NewKey] = kwargs.get("new_keys") or []
        if keys:  # a key already there is a unique violation: the command is retried
            curs.execute(self._insert_keys, tuple(map(list, zip(*keys, strict=True))))

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        """The events, and the data keys made for them (events/pii.py), in one transaction."""
        keys = pii.unsaved_keys()
        try:
            ids: Sequence[int] | None = self._insert_retried(stored_events, keys, **kwargs)
        except BaseException:
            pii.keys_not_saved(keys)
            raise
        pii.keys_saved(keys)
        return ids

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def _insert_retried(
        self, stored_events: Sequence[StoredEvent], keys: list[pii.NewKey], **kwargs: Any
    ) -> Sequence[int] | None:
        if kwargs.get("also") or kwargs.get("tracking") or not stored_events:
            alone: Sequence[int] | None = PostgresApplicationRecorder.insert_events.__wrapped__(
                self, stored_events, new_keys=keys, **kwargs
            )
            return alone
        pending = _Pending(stored_events, keys)
        with self._turn:
            self._queue.append(pending)
            leads = not self._committing  # then the queue was empty: it heads the next group
            self._committing = True
        if not leads:
            try:
                pending.sleep()  # until its group is committed, or it is to lead the next
            except BaseException:  # a signal's exception in the main thread, say
                self._abandon(pending)
                raise
            leads = not pending.done
        if leads:
            self._lead(pending)
        if pending.error is not None:
            # each waiting thread raises its own exception (one object has one traceback)
            raise type(pending.error)(*pending.error.args) from pending.error
        return pending.ids

    def _lead(self, leader: _Pending) -> None:
        """Commit the group at the head of the queue (the leader's own command first), wake
        its commands, and hand the lead to the first command queued since, if any. One wake
        per command: no thread is woken only to find it must wait again."""
        with self._turn:
            group, self._queue = self._queue[:MAX_GROUP], self._queue[MAX_GROUP:]
        try:
            self._commit(group)
        finally:
            with self._turn:
                successor = self._hand_on()
            for member in group:
                if member is not leader:
                    member.wake()
            if successor is not None:
                successor.wake()

    def _hand_on(self) -> _Pending | None:
        """Under the lock: the command to lead next (the queue's first), or none."""
        successor = self._queue[0] if self._queue else None
        if successor is not None:
            successor.leads = True
        self._committing = successor is not None
        return successor

    def _abandon(self, pending: _Pending) -> None:
        """Its thread leaves while it waits: a command still queued is taken out (it never
        goes in), and a lead it was handed goes on to the next, so the queue never stalls. A
        command already in a group being committed is settled by the group as usual."""
        with self._turn:
            if pending in self._queue:
                self._queue.remove(pending)
            successor = self._hand_on() if pending.leads else None
        if successor is not None:
            successor.wake()

    def _commit(self, group: list[_Pending]) -> None:
        """Commit a group in one transaction; settle every command of it, whatever happens."""
        try:
            self._commit_group(group)
        except BaseException as exc:
            for pending in group:
                if not pending.done:
                    pending.fail(exc)
            if not isinstance(exc, Exception):
                raise

    def _commit_group(self, group: list[_Pending]) -> None:
        columns: tuple[list[Any], ...] = ([], [], [], [], [])
        key_columns: tuple[list[Any], ...] = ([], [], [], [])
        for number, pending in enumerate(group):
            for tenant, subject, wrapped in pending.keys:
                for column, value in zip(
                    key_columns, (number, tenant, subject, wrapped), strict=True
                ):
                    column.append(value)
            for event in pending.events:
                values = (
                    number,
                    str(event.originator_id),
                    event.originator_version,
                    event.topic,
                    event.state,
                )
                for column, value in zip(columns, values, strict=True):
                    column.append(value)
        error: Exception | None = None
        ids: dict[tuple[str, int], int] = {}
        with self.datastore.get_connection() as conn:
            with conn.pipeline() as pipeline, conn.transaction(), conn.cursor() as curs:
                self._lock_table(curs)
                self._notify_channel(curs)
                try:
                    # planned at every commit, for the store's size then: a plan cached on a
                    # small store is kept as the store grows (seen: every commit scanning
                    # 97,000 events, under the table lock)
                    curs.execute(self._group_insert, (*columns, *key_columns), prepare=False)
                    pipeline.sync()
                    rows = curs.fetchall()
                except Exception as exc:  # re-raised once the pipeline is closed
                    error = exc
                else:
                    if rows and rows[0]["keys_made"] != rows[0]["keys_kept"]:
                        # a key made outside the event store since the check (the slow
                        # path of events/pii.py): undo, and every command retries
                        error = IntegrityError("a data key was made concurrently")
                        raise Rollback
                    ids = {
                        (r["originator_id"], r["originator_version"]): r["notification_id"]
                        for r in rows
                    }
            if error is not None:
                raise error
        for pending in group:
            keys = [(str(e.originator_id), e.originator_version) for e in pending.events]
            if all(k in ids for k in keys):
                pending.succeed([ids[k] for k in keys])
            else:
                pending.fail(
                    IntegrityError(
                        "duplicate key value violates unique constraint "
                        f"(originator_id, originator_version) {keys[0]}"
                    )
                )
