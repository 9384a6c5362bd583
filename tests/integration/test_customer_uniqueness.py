"""Email and phone uniqueness through the handlers and the real event store: race-free (the
store's own constraint decides), released on change and on deletion, tenant-scoped, and with
no email or phone in clear in the uniqueness records."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import psycopg
import pytest
from eventsourcing.persistence import OperationalError

from beeoclock.bootstrap import panel_application
from beeoclock.settings import Settings
from commands import handlers
from commands.application import PanelApplication
from commands.context import Meta
from commands.customer import RegisterCustomer, UpdateCustomer
from commands.errors import Conflict
from commands.recorder import PanelRecorder, _Pending


@pytest.fixture
def app(settings: Settings) -> Iterator[PanelApplication]:
    application = panel_application(settings, pool_size=20)
    yield application
    application.close()


def meta(tenant: str) -> Meta:
    return Meta(tenant, "u1", uuid.uuid4().hex, datetime.now(UTC))


def register(
    app: PanelApplication, tenant: str, cid: str, email: str | None, phone: str | None = None
) -> None:
    handlers.register_customer(
        app,
        RegisterCustomer(
            meta(tenant), cid, {"email": email, "phone": phone}, "regular", "active", [], None
        ),
    )


def update(
    app: PanelApplication,
    tenant: str,
    cid: str,
    email: str | None,
    phone: str | None = None,
    state: str = "active",
) -> None:
    handlers.update_customer(
        app,
        UpdateCustomer(
            meta(tenant), cid, {"email": email, "phone": phone}, "regular", state, [], None
        ),
    )


def test_of_many_concurrent_registrations_with_one_email_exactly_one_wins(
    app: PanelApplication,
) -> None:
    tenant = uuid.uuid4().hex

    def attempt(i: int) -> str:
        email = "Same@Example.com" if i % 2 else "same@example.com"
        try:
            register(app, tenant, f"c{i}", email)
        except Conflict as exc:
            return f"conflict on {exc.errors[0].field}"
        return "created"

    with ThreadPoolExecutor(20) as pool:
        outcomes = list(pool.map(attempt, range(20)))
    assert sorted(outcomes).count("created") == 1
    assert outcomes.count("conflict on email") == 19


def test_a_changed_email_is_released_for_another_customer(app: PanelApplication) -> None:
    tenant = uuid.uuid4().hex
    register(app, tenant, "a", "old@example.com", "48512345678")
    with pytest.raises(Conflict):
        register(app, tenant, "b", "OLD@example.com")
    update(app, tenant, "a", "new@example.com", "48512345678")
    register(app, tenant, "b", "old@example.com")
    with pytest.raises(Conflict, match="phone"):
        register(app, tenant, "c", None, "48512345678")


def test_a_deleted_customer_releases_its_values_and_cannot_take_them_back_once_reused(
    app: PanelApplication,
) -> None:
    tenant = uuid.uuid4().hex
    register(app, tenant, "a", "ann@example.com", "48512345678")
    update(app, tenant, "a", "ann@example.com", "48512345678", state="deleted")
    register(app, tenant, "b", "ann@example.com", "48512345678")
    with pytest.raises(Conflict, match="email and phone"):
        update(app, tenant, "a", "ann@example.com", "48512345678", state="active")


def test_an_inactive_customer_keeps_its_values(app: PanelApplication) -> None:
    tenant = uuid.uuid4().hex
    register(app, tenant, "a", "ann@example.com")
    handlers.delete_customer(app, handlers.DeleteCustomer(meta(tenant), "a", None))
    with pytest.raises(Conflict):
        register(app, tenant, "b", "ann@example.com")


def test_the_same_values_are_free_in_another_tenant(app: PanelApplication) -> None:
    register(app, uuid.uuid4().hex, "a", "ann@example.com", "48512345678")
    register(app, uuid.uuid4().hex, "a", "ann@example.com", "48512345678")


def test_a_failed_registration_stores_nothing(app: PanelApplication, settings: Settings) -> None:
    tenant = uuid.uuid4().hex
    register(app, tenant, "a", "ann@example.com")
    register(app, tenant, "b", "bob@example.com")
    with pytest.raises(Conflict):
        register(app, tenant, "c", "ann@example.com", "48600000000")
    with psycopg.connect(settings.database_url) as conn:
        ids = [
            r[0]
            for r in conn.execute(
                "SELECT originator_id FROM panel_events WHERE originator_id LIKE %s",
                (f"%:{tenant}:%",),
            )
        ]
    assert f"customer:{tenant}:c" not in ids
    assert len([i for i in ids if i.startswith("unique:")]) == 2  # ann's and bob's emails


def test_uniqueness_records_hold_no_email_or_phone_in_clear(
    app: PanelApplication, settings: Settings
) -> None:
    tenant = uuid.uuid4().hex
    register(app, tenant, "a", "secret.person@example.com", "48512345678")
    with psycopg.connect(settings.database_url) as conn:
        rows = conn.execute(
            "SELECT originator_id, convert_from(state, 'UTF8') FROM panel_events "
            "WHERE originator_id LIKE %s",
            (f"unique:{tenant}:%",),
        ).fetchall()
    assert len(rows) == 2
    for originator_id, state in rows:
        assert "secret" not in originator_id + state
        assert "512345678" not in originator_id + state


def test_a_change_whose_commit_acknowledgement_was_lost_is_the_requests_own_success(
    app: PanelApplication, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection is lost as the commit is acknowledged (the commit happened): the
    recorder tries again, collides with the very events it stored, and that is this
    command's success, not a version conflict, and nothing is stored twice."""
    tenant = uuid.uuid4().hex
    register(app, tenant, "a", "old@example.com")
    recorder = app.recorder
    assert isinstance(recorder, PanelRecorder)
    commit_group = recorder._commit_group

    def committed_then_lost(group: list[_Pending]) -> None:
        commit_group(group)
        monkeypatch.setattr(recorder, "_commit_group", commit_group)
        for pending in group:
            pending.done = False  # the acknowledgement never came
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(recorder, "_commit_group", committed_then_lost)
    outcome = handlers.update_customer(
        app,
        UpdateCustomer(meta(tenant), "a", {"email": "new@example.com"}, "regular", "active", [], 1),
    )
    assert outcome.state.personal["email"] == "new@example.com"
    assert outcome.state.version == 2
    assert outcome.position is not None
    assert app.repository.get(f"customer:{tenant}:a").version == 2
    register(app, tenant, "b", "old@example.com")  # released exactly once


def test_after_a_lost_connection_a_collision_with_another_commands_events_is_a_conflict(
    app: PanelApplication, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection is lost before the commit, and meanwhile another process's command
    takes the version: the retry's collision is a lost race (decided again: 409 for a
    pinned version), even when that command came with the same request id."""
    tenant = uuid.uuid4().hex
    register(app, tenant, "a", "old@example.com")
    recorder = app.recorder
    assert isinstance(recorder, PanelRecorder)
    commit_group = recorder._commit_group
    same = meta(tenant)
    other = panel_application(settings, pool_size=2)  # another write-API process

    def lost_while_another_commits(group: list[_Pending]) -> None:
        monkeypatch.setattr(recorder, "_commit_group", commit_group)
        handlers.update_customer(
            other,
            UpdateCustomer(same, "a", {"email": "theirs@example.com"}, "regular", "active", [], 1),
        )
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(recorder, "_commit_group", lost_while_another_commits)
    try:
        with pytest.raises(Conflict):
            handlers.update_customer(
                app,
                UpdateCustomer(
                    same, "a", {"email": "ours@example.com"}, "regular", "active", [], 1
                ),
            )
    finally:
        other.close()
    stored = app.repository.get(f"customer:{tenant}:a")
    assert stored.version == 2
    assert stored.state.personal["email"] == "theirs@example.com"


def test_a_change_that_lost_a_race_to_one_with_its_request_id_decides_again(
    app: PanelApplication, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request id is the caller's (X-Request-Id): two changes with one id are still two
    changes. The one that loses the race decides again on the newer state, pinned to a
    version it fails (409), unpinned it applies on top."""
    tenant = uuid.uuid4().hex
    register(app, tenant, "a", "old@example.com")
    insert = app.recorder.insert_events
    same = meta(tenant)
    races = iter(range(2))

    def another_first(*args: object, **kwargs: object) -> object:
        monkeypatch.setattr(app.recorder, "insert_events", insert)
        email = f"theirs{next(races)}@example.com"
        handlers.update_customer(
            app,
            UpdateCustomer(same, "a", {"email": email}, "regular", "active", [], None),
        )
        return insert(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(app.recorder, "insert_events", another_first)
    with pytest.raises(Conflict):
        handlers.update_customer(
            app,
            UpdateCustomer(same, "a", {"email": "ours@example.com"}, "regular", "active", [], 1),
        )
    monkeypatch.setattr(app.recorder, "insert_events", another_first)
    outcome = handlers.update_customer(
        app,
        UpdateCustomer(same, "a", {"email": "last@example.com"}, "regular", "active", [], None),
    )
    assert outcome.state.version == 4
    assert app.repository.get(f"customer:{tenant}:a").state.personal["email"] == "last@example.com"


def test_a_snapshot_that_fails_after_the_commit_does_not_fail_the_committed_change(
    app: PanelApplication, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A snapshot is taken after the events commit: the database failing it then leaves the
    change stored, and the command says so (a 503 would invite a retry that repeats it)."""
    from commands.application import SNAPSHOT_EVERY

    tenant = uuid.uuid4().hex
    register(app, tenant, "a", "v1@example.com")
    for version in range(2, SNAPSHOT_EVERY):
        update(app, tenant, "a", f"v{version}@example.com")

    def failing_put(*args: object, **kwargs: object) -> None:
        raise OperationalError("the server closed the connection unexpectedly")

    assert app.snapshots is not None
    monkeypatch.setattr(app.snapshots, "put", failing_put)
    outcome = handlers.update_customer(
        app,
        UpdateCustomer(
            meta(tenant), "a", {"email": "last@example.com"}, "regular", "active", [], None
        ),
    )
    assert outcome.state.version == SNAPSHOT_EVERY
    assert outcome.position is not None
    monkeypatch.undo()
    stored = app.repository.get(f"customer:{tenant}:a")
    assert stored.version == SNAPSHOT_EVERY
    assert stored.state.personal["email"] == "last@example.com"
