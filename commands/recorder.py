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

import random
import threading
import time
from collections.abc import Sequence
from typing import Any

from eventsourcing.persistence import (
    IntegrityError,
    InterfaceError,
    OperationalError,
    StoredEvent,
)
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore
from psycopg import Cursor, Rollback
from psycopg.rows import DictRow
from psycopg.sql import SQL, Identifier

from events import pii

MAX_GROUP = 256
#: attempts of an insert whose connection was lost, and the wait between them
ATTEMPTS = 10
RETRY_WAIT_S = 0.2


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
        # not taken (clash); insert the others' events in the order given (notification ids
        # follow it) and their keys. A row per event stored: its command, its place in the
        # batch and its notification id, with how many keys went in, and of how many; then a
        # row per command taken (the rest only). Stored events and keys are looked up one
        # index probe per row (LATERAL ... LIMIT 1), never by a join the planner may answer
        # by hashing the whole table.
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
            "kept AS (SELECT * FROM batch WHERE command NOT IN (SELECT command FROM taken) "
            "AND command NOT IN (SELECT command FROM clash)), "
            "stored AS (INSERT INTO {table} (originator_id, originator_version, topic, state) "
            "SELECT originator_id, originator_version, topic, state FROM kept ORDER BY n "
            "RETURNING originator_id, originator_version, notification_id) "
            "SELECT k.command, k.n, s.notification_id, (SELECT count(*) FROM made) AS keys_made, "
            "(SELECT count(*) FROM kept_keys) AS keys_kept "
            "FROM stored s JOIN kept k USING (originator_id, originator_version) "
            "UNION ALL SELECT command, NULL, NULL, NULL, NULL FROM taken"
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

    def _insert_retried(
        self, stored_events: Sequence[StoredEvent], keys: list[pii.NewKey], **kwargs: Any
    ) -> Sequence[int] | None:
        """Insert, again after a lost connection (up to ATTEMPTS times). A connection lost
        while a commit was acknowledged leaves it unknown whether the commit happened: if
        the next attempt collides, and what it collides with is these very events (byte for
        byte: each holds its own timestamp and sealed personal data), they were stored,
        and that is this command's success; anything else is a real collision."""
        attempts, uncertain = 0, False
        while True:
            try:
                return self._insert_once(stored_events, keys, **kwargs)
            except (InterfaceError, OperationalError):
                attempts += 1
                if attempts >= ATTEMPTS:
                    raise
                uncertain = True
                time.sleep(RETRY_WAIT_S * (0.95 + random.random() / 10))
            except IntegrityError:
                if uncertain and (ids := self._stored_already(stored_events)) is not None:
                    return ids
                raise

    def _stored_already(self, stored_events: Sequence[StoredEvent]) -> list[int] | None:
        """The notification ids of these very events when the store holds them (the same
        position and the same bytes), else None."""
        table = Identifier(self.datastore.schema, self.events_table_name)
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(
                SQL(
                    "SELECT e.originator_id, e.originator_version, e.state, e.notification_id "
                    "FROM unnest(%s::text[], %s::bigint[]) AS k(originator_id, originator_version) "
                    "JOIN {table} e USING (originator_id, originator_version)"
                ).format(table=table),
                (
                    [str(e.originator_id) for e in stored_events],
                    [e.originator_version for e in stored_events],
                ),
            )
            found = {
                (r["originator_id"], r["originator_version"]): (
                    bytes(r["state"]),
                    r["notification_id"],
                )
                for r in curs.fetchall()
            }
        ids = []
        for event in stored_events:
            hit = found.get((str(event.originator_id), event.originator_version))
            if hit is None or hit[0] != event.state:
                return None
            ids.append(hit[1])
        return ids

    def _insert_once(
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
        """Commit a group in one transaction and settle each command by its own outcome.

        The insert leaves out a command that clashes with an earlier one of the group that
        is not taken; that earlier one may itself be left out, for a clash of its own. So
        a command left out with none of its events or keys gone in, and not taken, was left
        out for nothing: the commands left so are inserted again, in the same transaction,
        until a round stores none of them. The outcome is that of committing the group's
        commands one by one, in order (rounds after the first are rare: they need three
        commands of a group chained by what they write)."""
        error: Exception | None = None
        ids: dict[int, list[tuple[int, int]]] = {}
        undo = False
        with self.datastore.get_connection() as conn:
            with conn.pipeline() as pipeline, conn.transaction(), conn.cursor() as curs:
                self._lock_table(curs)
                self._notify_channel(curs)
                try:
                    todo = list(enumerate(group))
                    written: set[tuple[str, Any]] = set()
                    while todo:
                        # planned at every commit, for the store's size then: a plan cached
                        # on a small store is kept as the store grows (seen: every commit
                        # scanning 97,000 events, under the table lock)
                        curs.execute(self._group_insert, _columns(todo), prepare=False)
                        pipeline.sync()
                        rows = curs.fetchall()
                        stored = [r for r in rows if r["notification_id"] is not None]
                        if stored and stored[0]["keys_made"] != stored[0]["keys_kept"]:
                            # a key made outside the event store since the check (the slow
                            # path of events/pii.py): undo, and every command retries
                            undo = True
                            break
                        for row in stored:
                            ids.setdefault(row["command"], []).append(
                                (row["n"], row["notification_id"])
                            )
                        taken = {r["command"] for r in rows if r["notification_id"] is None}
                        # left out for a clash only: the usual group has none, and is done
                        clashed = [(n, p) for n, p in todo if n not in ids and n not in taken]
                        went_in = [(n, p) for n, p in todo if n in ids]
                        if not clashed or not went_in:
                            break
                        for _, pending in went_in:
                            written |= _claims(pending)
                        todo = [(n, p) for n, p in clashed if not _claims(p) & written]
                except Exception as exc:  # re-raised once the pipeline is closed
                    error = exc
                if undo:
                    error = IntegrityError("a data key was made concurrently")
                    raise Rollback
            if error is not None:
                raise error
        for number, pending in enumerate(group):
            if number in ids:
                pending.succeed([notification for _, notification in sorted(ids[number])])
            else:
                event = pending.events[0]
                pending.fail(
                    IntegrityError(
                        "duplicate key value violates unique constraint "
                        f"(originator_id, originator_version) "
                        f"{(str(event.originator_id), event.originator_version)}"
                    )
                )


def _columns(commands: list[tuple[int, _Pending]]) -> tuple[list[Any], ...]:
    """The group insert's parameters: its batch's columns (command, originator_id,
    originator_version, topic, state), then its new keys' (command, tenant, subject,
    wrapped)."""
    columns: tuple[list[Any], ...] = ([], [], [], [], [])
    key_columns: tuple[list[Any], ...] = ([], [], [], [])
    for number, pending in commands:
        for tenant, subject, wrapped in pending.keys:
            for column, value in zip(key_columns, (number, tenant, subject, wrapped), strict=True):
                column.append(value)
        for event in pending.events:
            values = (number, str(event.originator_id), event.originator_version)
            for column, value in zip(columns, (*values, event.topic, event.state), strict=True):
                column.append(value)
    return (*columns, *key_columns)


def _claims(pending: _Pending) -> set[tuple[str, Any]]:
    """What a command writes that no other may: its events' positions, its new keys'
    subjects."""
    return {("event", (str(e.originator_id), e.originator_version)) for e in pending.events} | {
        ("key", (tenant, subject)) for tenant, subject, _ in pending.keys
    }
