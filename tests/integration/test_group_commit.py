"""Group commit against the real event store: concurrent commands share one transaction, and
each keeps its own outcome (a duplicate loses alone, the rest commit)."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import psycopg
import pytest
from eventsourcing.persistence import StoredEvent

from beeoclock.bootstrap import panel_application
from beeoclock.settings import Settings
from commands import handlers
from commands.application import PanelApplication
from commands.context import Meta
from commands.customer import RegisterCustomer
from commands.errors import Conflict
from commands.recorder import PanelRecorder, _Pending


@pytest.fixture(scope="module")
def app(settings: Settings) -> Iterator[PanelApplication]:
    application = panel_application(settings, pool_size=40)
    yield application
    application.close()


def register(app: PanelApplication, tenant: str, email: str) -> str:
    meta = Meta(tenant, "user-1", uuid.uuid4().hex, datetime.now(UTC))
    try:
        handlers.register_customer(
            app,
            RegisterCustomer(
                meta, uuid.uuid4().hex[:24], {"email": email}, "regular", "active", [], None
            ),
        )
    except Conflict:
        return "409"
    return "201"


def queued(app: PanelApplication) -> int:
    recorder = app.recorder
    assert isinstance(recorder, PanelRecorder)
    with recorder._turn:
        return len(recorder._queue)


def race_behind_a_lock(
    app: PanelApplication,
    settings: Settings,
    emails: list[str],
    tenant: str,
    attempt: Callable[[PanelApplication, str, str], str] = register,
) -> list[str]:
    """Hold the event table's lock while every command queues, then let them commit."""
    outcomes: list[str] = []
    with psycopg.connect(settings.database_url) as blocker:
        blocker.execute("LOCK TABLE panel_events IN EXCLUSIVE MODE")
        threads = [
            # daemon: a thread never woken fails the test instead of hanging the run
            threading.Thread(
                target=lambda e=e: outcomes.append(attempt(app, tenant, e)), daemon=True
            )
            for e in emails
        ]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 30
        while queued(app) < len(emails) - 1 and time.monotonic() < deadline:
            time.sleep(0.01)  # one leader waits on the lock, the others in the queue
        blocker.rollback()
    deadline = time.monotonic() + 30
    for thread in threads:
        thread.join(max(deadline - time.monotonic(), 0))
    return outcomes


def transactions_of(settings: Settings, tenant: str) -> int:
    with psycopg.connect(settings.database_url) as conn:
        row = conn.execute(
            "SELECT count(DISTINCT xmin::text) FROM panel_events WHERE originator_id LIKE %s",
            (f"customer:{tenant}:%",),
        ).fetchone()
    return int(row[0]) if row else -1


def test_concurrent_commands_commit_together(app: PanelApplication, settings: Settings) -> None:
    tenant = uuid.uuid4().hex
    emails = [f"{i}@{tenant}.example" for i in range(24)]
    outcomes = race_behind_a_lock(app, settings, emails, tenant)
    assert outcomes.count("201") == 24
    assert transactions_of(settings, tenant) <= 3  # the leader's group, then everyone else


def test_a_queue_longer_than_a_group_is_committed_group_by_group(
    app: PanelApplication, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The leader hands the lead to the first command left in the queue, and so on: every
    command is committed and every thread woken, a group at a time."""
    monkeypatch.setattr("commands.recorder.MAX_GROUP", 4)
    tenant = uuid.uuid4().hex
    emails = [f"{i}@{tenant}.example" for i in range(23)]
    outcomes = race_behind_a_lock(app, settings, emails, tenant)
    assert outcomes.count("201") == 23
    # the leader alone (it took the group before the others queued), then 22 in fours
    assert transactions_of(settings, tenant) == 1 + 6
    assert queued(app) == 0


class Interrupted(BaseException):
    """What a signal's handler may raise in a thread that waits for its group."""


def test_a_command_leaving_when_handed_the_lead_hands_it_on(
    app: PanelApplication, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first command woken to lead leaves instead (an exception as it wakes): it is taken
    out of the queue, never stored, and the lead goes to the next, so no command waits
    forever."""
    monkeypatch.setattr("commands.recorder.MAX_GROUP", 4)
    sleep, left = _Pending.sleep, threading.Lock()

    def sleep_then_leave_once(pending: _Pending) -> None:
        sleep(pending)
        if pending.leads and not pending.done and left.acquire(blocking=False):
            raise Interrupted

    monkeypatch.setattr(_Pending, "sleep", sleep_then_leave_once)

    def attempt(app: PanelApplication, tenant: str, email: str) -> str:
        try:
            return register(app, tenant, email)
        except Interrupted:
            return "left"

    tenant = uuid.uuid4().hex
    emails = [f"{i}@{tenant}.example" for i in range(23)]
    outcomes = race_behind_a_lock(app, settings, emails, tenant, attempt)
    assert Counter(outcomes) == {"201": 22, "left": 1}
    assert transactions_of(settings, tenant) == 1 + 6  # the leader alone, then 21 in fours
    assert queued(app) == 0


def test_in_a_group_a_duplicate_loses_alone(app: PanelApplication, settings: Settings) -> None:
    tenant = uuid.uuid4().hex
    same = [f"same@{tenant}.example"] * 10
    unique = [f"{i}@{tenant}.example" for i in range(10)]
    outcomes = race_behind_a_lock(app, settings, [*same, *unique], tenant)
    assert Counter(outcomes) == {"201": 11, "409": 9}
    with psycopg.connect(settings.database_url) as conn:
        customers = conn.execute(
            "SELECT count(*) FROM panel_events WHERE originator_id LIKE %s",
            (f"customer:{tenant}:%",),
        ).fetchone()
    assert customers == (11,)


def test_a_command_alone_commits_at_once(app: PanelApplication, settings: Settings) -> None:
    tenant = uuid.uuid4().hex
    started = time.monotonic()
    assert register(app, tenant, f"alone@{tenant}.example") == "201"
    assert time.monotonic() - started < 2
    assert transactions_of(settings, tenant) == 1


def test_a_command_clashing_only_with_one_left_out_goes_in(
    app: PanelApplication, settings: Settings
) -> None:
    """A collides with a stored event and is left out; B shares an event with A only, so B
    commits, as it would have alone."""
    from eventsourcing.persistence import StoredEvent

    from commands.recorder import _Pending

    recorder = app.recorder
    assert isinstance(recorder, PanelRecorder)
    stem = f"unique:{uuid.uuid4().hex}"

    def event(name: str, version: int) -> StoredEvent:
        return StoredEvent(f"{stem}:{name}", version, "tests:Nothing", b"{}")

    recorder.insert_events([event("k1", 1)])
    a = _Pending([event("k1", 1), event("k2", 1)], [])
    b = _Pending([event("k2", 1)], [])
    recorder._commit_group([a, b])
    assert a.error is not None
    assert b.error is None
    assert b.ids


def test_a_command_whose_new_key_is_taken_or_clashes_is_left_out_with_its_events(
    app: PanelApplication, settings: Settings
) -> None:
    """A data key made by a command goes in with its events; a subject that has a key, or
    whose key an earlier command of the group makes, leaves the command out whole."""
    from commands.recorder import _Pending

    recorder, event = _recorder_and_events(app)
    tenant = uuid.uuid4().hex

    with psycopg.connect(settings.database_url) as conn:
        conn.execute(
            "INSERT INTO pii_keys (tenant_id, subject_id, wrapped) VALUES (%s, 'old', 'x')",
            (tenant,),
        )
    taken = _Pending([event("a")], [(tenant, "old", b"new")])
    first = _Pending([event("b")], [(tenant, "s1", b"one")])
    clash = _Pending([event("c")], [(tenant, "s1", b"two")])
    plain = _Pending([event("d")], [])
    recorder._commit_group([taken, first, clash, plain])
    assert taken.error is not None
    assert clash.error is not None
    assert first.ids
    assert plain.ids
    with psycopg.connect(settings.database_url) as conn:
        keys = conn.execute(
            "SELECT subject_id, wrapped FROM pii_keys WHERE tenant_id = %s ORDER BY 1", (tenant,)
        ).fetchall()
        stored = conn.execute(
            "SELECT originator_id FROM panel_events WHERE originator_id LIKE %s ORDER BY 1",
            (event("%").originator_id,),
        ).fetchall()
    assert [(s, bytes(w)) for s, w in keys] == [("old", b"x"), ("s1", b"one")]
    assert [r[0] for r in stored] == [event("b").originator_id, event("d").originator_id]


def test_a_key_made_elsewhere_during_the_group_insert_undoes_the_whole_group(
    app: PanelApplication, settings: Settings
) -> None:
    """A key for the same subject committed by another transaction while the group's insert
    runs (after its check) is skipped by the insert: then nothing of the group is stored
    and every command gets an IntegrityError, so each decides again."""
    from eventsourcing.persistence import IntegrityError

    from commands.recorder import _Pending

    recorder, event = _recorder_and_events(app)
    tenant = uuid.uuid4().hex

    keyed = _Pending([event("b")], [(tenant, "s1", b"ours")])
    plain = _Pending([event("d")], [])
    with psycopg.connect(settings.database_url) as other:
        other.execute(
            "INSERT INTO pii_keys (tenant_id, subject_id, wrapped) VALUES (%s, 's1', 'theirs')",
            (tenant,),
        )  # not committed yet: the group's insert will wait on it
        committing = threading.Thread(target=recorder._commit, args=([keyed, plain],))
        committing.start()
        time.sleep(0.5)
        assert committing.is_alive()
        other.commit()
        committing.join(10)
    assert isinstance(keyed.error, IntegrityError)
    assert isinstance(plain.error, IntegrityError)
    with psycopg.connect(settings.database_url) as conn:
        keys = conn.execute(
            "SELECT wrapped FROM pii_keys WHERE tenant_id = %s", (tenant,)
        ).fetchall()
        stored = conn.execute(
            "SELECT count(*) FROM panel_events WHERE originator_id LIKE %s",
            (event("%").originator_id,),
        ).fetchone()
    assert [bytes(k[0]) for k in keys] == [b"theirs"]
    assert stored == (0,)


def _recorder_and_events(
    app: PanelApplication,
) -> tuple[PanelRecorder, Callable[[str], StoredEvent]]:
    """The app's recorder, and stored events of made-up records of one run (version 1)."""
    recorder = app.recorder
    assert isinstance(recorder, PanelRecorder)
    stem = f"unique:{uuid.uuid4().hex}"

    def event(name: str) -> StoredEvent:
        return StoredEvent(f"{stem}:{name}", 1, "tests:Nothing", b"{}")

    return recorder, event


def test_a_full_group_looks_up_stored_events_and_keys_by_index_probes(
    app: PanelApplication, settings: Settings
) -> None:
    """A full group (256 commands of 3 events and a key each) against a store of 30,000
    events and keys: each of its events and keys is one probe of the table's index, never a
    hash of the whole table, which the commit would read under the table lock."""
    from commands.recorder import MAX_GROUP

    recorder, event = _recorder_and_events(app)
    tenant = uuid.uuid4().hex
    stem = str(event("x").originator_id).rsplit(":", 1)[0]
    commands = range(MAX_GROUP)
    batch = [(n, f"{stem}:c{n}", v) for n in commands for v in (1, 2, 3)]
    params = (
        [n for n, _, _ in batch],
        [o for _, o, _ in batch],
        [v for _, _, v in batch],
        ["tests:Nothing"] * len(batch),
        [b"{}"] * len(batch),
        list(commands),
        [tenant] * MAX_GROUP,
        [f"c{n}" for n in commands],
        [b"k"] * MAX_GROUP,
    )
    with psycopg.connect(settings.database_url) as conn:
        conn.execute(
            "INSERT INTO panel_events (originator_id, originator_version, topic, state) "
            "SELECT %s || ':old' || n, 1, 'tests:Nothing', '\\x00'::bytea "
            "FROM generate_series(1, 30000) AS n",
            (stem,),
        )
        conn.execute(
            "INSERT INTO pii_keys (tenant_id, subject_id, wrapped) "
            "SELECT %s, 'old' || n, '\\x00'::bytea FROM generate_series(1, 30000) AS n",
            (tenant,),
        )
        conn.execute("ANALYZE panel_events")
        conn.execute("ANALYZE pii_keys")
        plan = "\n".join(
            line
            for (line,) in conn.execute(b"EXPLAIN " + recorder._group_insert.as_bytes(conn), params)
        )
        conn.rollback()
    assert "Seq Scan on panel_events" not in plan, plan
    assert "Seq Scan on pii_keys" not in plan, plan
    assert (
        "Index Only Scan using panel_events" in plan or "Index Scan using panel_events" in plan
    ), plan


def test_a_commit_is_planned_for_the_store_it_meets_not_the_one_it_first_met(
    settings: Settings,
) -> None:
    """A plan cached while the store was small would be kept as it grows: the group insert
    is planned at every commit (never prepared), however many commits a connection made."""
    application = panel_application(settings, pool_size=1)
    try:
        tenant = uuid.uuid4().hex
        outcomes = [register(application, tenant, f"p{n}@example.com") for n in range(8)]
        with application.recorder.datastore.get_connection() as conn:  # type: ignore[attr-defined]
            prepared = [
                row["statement"]
                for row in conn.execute("SELECT statement FROM pg_prepared_statements")
            ]
    finally:
        application.close()
    assert outcomes == ["201"] * 8
    assert any("LOCK TABLE" in s for s in prepared), prepared  # the same connection
    assert not [s for s in prepared if "WITH batch" in s], prepared


def test_commands_of_a_group_writing_one_position_settle_by_what_each_stored(
    app: PanelApplication, settings: Settings
) -> None:
    """Two commands of a group that write the same position (two changes of one entity
    decided on one version): the first goes in, and the second gets the collision, not the
    first one's success (whose event it never stored)."""
    recorder, event = _recorder_and_events(app)
    ours = StoredEvent(event("x").originator_id, 1, "tests:Nothing", b'{"by": "first"}')
    theirs = StoredEvent(event("x").originator_id, 1, "tests:Nothing", b'{"by": "second"}')
    first, second = _Pending([ours], []), _Pending([theirs], [])
    recorder._commit_group([first, second])
    assert first.ids
    assert second.error is not None
    assert second.ids is None
    with psycopg.connect(settings.database_url) as conn:
        stored = conn.execute(
            "SELECT state FROM panel_events WHERE originator_id = %s", (ours.originator_id,)
        ).fetchall()
    assert [bytes(s) for (s,) in stored] == [b'{"by": "first"}']


def test_a_command_left_out_only_for_one_that_was_left_out_goes_in(
    app: PanelApplication, settings: Settings
) -> None:
    """c1 clashes with c0 (which goes in) and is left out; c2 shares a position with c1
    only, so it goes in, as it would have committing after the other two."""
    recorder, event = _recorder_and_events(app)
    c0 = _Pending([event("x")], [])
    c1 = _Pending([event("x"), event("y")], [])
    c2 = _Pending([event("y")], [])
    recorder._commit_group([c0, c1, c2])
    assert c0.ids
    assert c1.error is not None
    assert c2.ids
    with psycopg.connect(settings.database_url) as conn:
        stored = conn.execute(
            "SELECT count(*) FROM panel_events WHERE originator_id LIKE %s",
            (event("%").originator_id,),
        ).fetchone()
    assert stored == (2,)


def test_a_chain_of_clashes_settles_as_one_by_one_commits_would(
    app: PanelApplication, settings: Settings
) -> None:
    """c0 {a}, c1 {a, b, key k}, c2 {b, c}, c3 {e, key k}, c4 {d, stored}: one by one, c0
    goes in, c1 collides with it, c2 and c3 go in (what they share is c1's only), c4
    collides with the store. A new key's subject counts as a position."""
    recorder, event = _recorder_and_events(app)
    tenant = uuid.uuid4().hex
    recorder.insert_events([event("stored")])
    c0 = _Pending([event("a")], [])
    c1 = _Pending([event("a"), event("b")], [(tenant, "k", b"1")])
    c2 = _Pending([event("b"), event("c")], [])
    c3 = _Pending([event("e")], [(tenant, "k", b"3")])
    c4 = _Pending([event("d"), event("stored")], [])
    recorder._commit_group([c0, c1, c2, c3, c4])
    assert [p.ids is not None for p in (c0, c1, c2, c3, c4)] == [True, False, True, True, False]
    assert c2.ids is not None
    assert len(c2.ids) == 2
    with psycopg.connect(settings.database_url) as conn:
        keys = conn.execute(
            "SELECT wrapped FROM pii_keys WHERE tenant_id = %s", (tenant,)
        ).fetchall()
    assert [bytes(k) for (k,) in keys] == [b"3"]  # c1's never went in; c3's did


def test_two_changes_of_one_customer_in_one_group_are_both_stored(
    app: PanelApplication, settings: Settings
) -> None:
    """Two PUTs of one customer decided on one version and committed in one group (behind
    another command's commit): the first goes in, the second decides again on top of it.
    Neither is answered with a state that was not stored."""
    from commands.customer import UpdateCustomer

    tenant = uuid.uuid4().hex
    customer = uuid.uuid4().hex[:24]
    meta = Meta(tenant, "user-1", uuid.uuid4().hex, datetime.now(UTC))
    handlers.register_customer(
        app, RegisterCustomer(meta, customer, {"firstName": "Zero"}, "regular", "active", [], None)
    )
    recorder = app.recorder
    assert isinstance(recorder, PanelRecorder)
    outcomes: dict[str, handlers.CustomerOutcome] = {}

    def change(name: str) -> None:
        outcomes[name] = handlers.update_customer(
            app, UpdateCustomer(meta, customer, {"firstName": name}, "regular", "active", [], None)
        )

    def leading() -> bool:
        with recorder._turn:
            return recorder._committing and not recorder._queue

    with psycopg.connect(settings.database_url) as blocker:
        blocker.execute("LOCK TABLE panel_events IN EXCLUSIVE MODE")
        leader = threading.Thread(
            target=register, args=(app, tenant, f"lead@{tenant}.example"), daemon=True
        )
        leader.start()
        deadline = time.monotonic() + 30
        while not leading() and time.monotonic() < deadline:
            time.sleep(0.01)  # the leader took its group and waits on the lock
        changes = [threading.Thread(target=change, args=(n,), daemon=True) for n in ("A", "B")]
        for thread in changes:
            thread.start()
        while queued(app) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)  # both decided on version 1, queued as one group
        assert queued(app) == 2
        blocker.rollback()
    for thread in [leader, *changes]:
        thread.join(30)
    assert sorted(o.state.version for o in outcomes.values()) == [2, 3]
    for name, outcome in outcomes.items():
        stored = app.repository.get(f"customer:{tenant}:{customer}", version=outcome.state.version)
        assert stored.state.personal["firstName"] == name
    assert app.repository.get(f"customer:{tenant}:{customer}").version == 3
