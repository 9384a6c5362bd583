"""Crypto-shredding against the real event store: personal data is sealed in stored events and
snapshots with the customer's own key, opened transparently, bound to its customer, and
unreadable for good once the key is deleted."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg
import pytest
from psycopg import sql

from beeoclock.bootstrap import panel_application
from beeoclock.settings import Settings
from commands import handlers
from commands.application import SNAPSHOT_EVERY, PanelApplication
from commands.context import Meta
from commands.customer import Customer, EraseCustomer, RegisterCustomer, UpdateCustomer
from commands.errors import Conflict
from events.base import stream_id
from events.pii import ERASED, VaultError, is_sealed

PERSONAL = {
    "firstName": "Zofia",
    "lastName": "Wiśniewska",
    "email": "zofia.w@example.com",
    "phone": "48601234567",
    "note": "prefers mornings",
}


@pytest.fixture(scope="module")
def app(settings: Settings) -> Iterator[PanelApplication]:
    application = panel_application(settings)
    yield application
    application.close()


def meta(tenant: str) -> Meta:
    return Meta(tenant, "user-1", uuid.uuid4().hex, datetime.now(UTC))


def register(app: PanelApplication, tenant: str, customer_id: str, **personal: Any) -> None:
    handlers.register_customer(
        app,
        RegisterCustomer(
            meta(tenant),
            customer_id,
            {**PERSONAL, **personal},
            "regular",
            "active",
            [],
            None,
        ),
    )


def stored_states(
    settings: Settings, originator_id: str, table: str = "panel_events"
) -> list[bytes]:
    with psycopg.connect(settings.database_url) as conn:
        rows = conn.execute(
            f"SELECT state FROM {table} WHERE originator_id = %s ORDER BY originator_version",
            (originator_id,),
        ).fetchall()
    return [bytes(r[0]) for r in rows]


def test_stored_events_hold_ciphertext_and_the_application_reads_plain_values(
    app: PanelApplication, settings: Settings
) -> None:
    tenant, customer_id = uuid.uuid4().hex, "c1"
    register(app, tenant, customer_id)
    stream = stream_id("customer", tenant, customer_id)
    (state,) = stored_states(settings, stream)
    assert b'"sealed"' in state
    for value in PERSONAL.values():
        assert value.encode() not in state
        assert value.encode("unicode_escape") not in state
    customer = handlers.load_customer(app, tenant, customer_id)
    assert customer.state.personal == PERSONAL


def test_a_sealed_value_is_bound_to_its_customer(app: PanelApplication, settings: Settings) -> None:
    tenant = uuid.uuid4().hex
    register(app, tenant, "victim", email="victim@example.com", phone=None)
    register(app, tenant, "thief", email="thief@example.com", phone=None)
    victim, thief = (stream_id("customer", tenant, c) for c in ("victim", "thief"))
    with psycopg.connect(settings.database_url) as conn:
        conn.execute(
            "UPDATE panel_events SET state = (SELECT state FROM panel_events WHERE "
            "originator_id = %s) WHERE originator_id = %s",
            (victim, thief),
        )
    with pytest.raises(VaultError):
        handlers.load_customer(app, tenant, "thief")


def test_after_erasure_every_copy_reads_as_erased_and_the_key_is_gone(
    app: PanelApplication, settings: Settings
) -> None:
    tenant, customer_id = uuid.uuid4().hex, "c2"
    register(app, tenant, customer_id, note=None)
    handlers.update_customer(
        app,
        UpdateCustomer(
            meta(tenant),
            customer_id,
            {**PERSONAL, "firstName": "Zosia", "note": None},
            "regular",
            "active",
            [],
            None,
        ),
    )
    outcome = handlers.erase_customer(app, EraseCustomer(meta(tenant), customer_id, "request #12"))
    assert outcome.state.erased
    assert outcome.state.personal == {k: ERASED for k in PERSONAL if k != "note"}
    with psycopg.connect(settings.database_url) as conn:
        keys = conn.execute(
            "SELECT wrapped IS NULL, erased_at IS NOT NULL FROM pii_keys WHERE tenant_id = %s",
            (tenant,),
        ).fetchall()
    assert keys == [(True, True)], "the key is destroyed; its row stays as a marker"
    with app.keys():
        events = list(app.events.get(stream_id("customer", tenant, customer_id)))
    assert events[0].personal == {k: ERASED for k in PERSONAL if k != "note"}
    assert events[1].personal["firstName"] == ERASED
    assert type(events[-1]).__name__ == "CustomerErased"
    assert events[-1].reason == "request #12"


def test_snapshots_seal_personal_data_and_load_plain(
    app: PanelApplication, settings: Settings
) -> None:
    tenant, customer_id = uuid.uuid4().hex, "c3"
    register(app, tenant, customer_id)
    stream = stream_id("customer", tenant, customer_id)
    with app.keys():
        app.take_snapshot(stream)
    (snapshot,) = stored_states(settings, stream, table="panel_snapshots")
    assert b'"sealed"' in snapshot
    assert PERSONAL["email"].encode() not in snapshot
    with app.keys():
        loaded: Customer = app.repository.get(stream)
    assert loaded.state.personal == PERSONAL


def test_an_erased_customers_id_never_gets_a_new_key(
    app: PanelApplication, settings: Settings
) -> None:
    tenant, customer_id = uuid.uuid4().hex, "c5"
    register(app, tenant, customer_id)
    handlers.erase_customer(app, EraseCustomer(meta(tenant), customer_id, "asked"))
    with pytest.raises(Conflict, match="already exists"):
        register(app, tenant, customer_id, email="new@example.com")
    with app.keys():
        events = list(app.events.get(stream_id("customer", tenant, customer_id)))
    assert events[0].personal["email"] == ERASED


def test_the_wrong_master_key_cannot_open_anything(settings: Settings) -> None:
    import base64
    import secrets

    tenant = uuid.uuid4().hex
    right = panel_application(settings)
    wrong = panel_application(
        settings.model_copy(
            update={"master_key": base64.b64encode(secrets.token_bytes(32)).decode()}
        )
    )
    try:
        register(right, tenant, "c4")
        with pytest.raises(VaultError, match="MASTER_KEY"):
            handlers.load_customer(wrong, tenant, "c4")
    finally:
        right.close()
        wrong.close()


def test_erasing_a_customer_stored_before_crypto_shredding_seals_then_shreds(
    app: PanelApplication, settings: Settings, servers: dict[str, str]
) -> None:
    """Events written by a release without sealing hold personal data in plain text: erasure
    seals them first, so destroying the key reaches them too."""
    import redis

    from workers.gdpr import erase_customer

    # and another customer of the tenant, whose id begins with the first one's
    tenant, customer_id, neighbour = uuid.uuid4().hex, "legacy", "legacy2"
    transcoder = app.mapper.transcoder
    for cid, unique in ((customer_id, {}), (neighbour, {"email": None, "phone": None})):
        register(app, tenant, cid, **unique)
        with psycopg.connect(settings.database_url) as conn:  # as the old release stored it
            (raw,) = conn.execute(
                "SELECT state FROM panel_events WHERE originator_id = %s",
                (stream_id("customer", tenant, cid),),
            ).fetchone()
            state = transcoder.decode(bytes(raw))
            state["personal"] = dict(PERSONAL)
            conn.execute(
                "UPDATE panel_events SET state = %s WHERE originator_id = %s",
                (transcoder.encode(state), stream_id("customer", tenant, cid)),
            )
    with psycopg.connect(settings.database_url) as conn:
        conn.execute(
            "DELETE FROM pii_keys WHERE tenant_id = %s", (tenant,)
        )  # the old release had no keys
    stream = stream_id("customer", tenant, customer_id)
    assert PERSONAL["email"].encode() in stored_states(settings, stream)[0]

    client = redis.Redis.from_url(servers["redis"])
    with psycopg.connect(settings.database_url) as conn:
        summary = erase_customer(
            app, conn, settings, tenant, customer_id, "request #7", "dpo", client
        )
    assert summary["legacyEventsSealed"] == 1
    assert summary["erasedNow"] is True
    for value in PERSONAL.values():
        assert all(value.encode() not in s for s in stored_states(settings, stream))
    with app.keys():
        events = list(app.events.get(stream))
    assert events[0].personal == dict.fromkeys(PERSONAL, ERASED)
    # the neighbour's events are not this erasure's to touch
    neighbours = stored_states(settings, stream_id("customer", tenant, neighbour))
    assert PERSONAL["firstName"].encode() in neighbours[0]


def _email_of(app: PanelApplication, tenant: str, customer_id: str) -> str:
    return str(handlers.load_customer(app, tenant, customer_id).state.personal["email"])


def _key_rows(settings: Settings, tenant: str) -> list[tuple[str, bytes | None]]:
    with psycopg.connect(settings.database_url) as conn:
        rows = conn.execute(
            "SELECT subject_id, wrapped FROM pii_keys WHERE tenant_id = %s ORDER BY subject_id",
            (tenant,),
        ).fetchall()
    return [(r[0], bytes(r[1]) if r[1] is not None else None) for r in rows]


def test_a_new_customers_key_is_saved_with_its_events_and_a_losing_create_leaves_it(
    app: PanelApplication, settings: Settings
) -> None:
    tenant, customer_id = uuid.uuid4().hex, "c6"
    register(app, tenant, customer_id)
    ((subject, wrapped),) = _key_rows(settings, tenant)
    assert subject == customer_id
    assert wrapped
    # a create of the same id by another request guesses a key of its own: it loses, and
    # neither its key nor its events go in; the stored customer still opens
    with pytest.raises(Conflict, match="already exists"):
        register(app, tenant, customer_id, email="other@example.com")
    assert _key_rows(settings, tenant) == [(customer_id, wrapped)]
    assert _email_of(app, tenant, customer_id) == PERSONAL["email"]


def test_a_create_whose_email_was_taken_makes_no_key(
    app: PanelApplication, settings: Settings
) -> None:
    tenant = uuid.uuid4().hex
    register(app, tenant, "c7")
    with pytest.raises(Conflict, match="email"):
        register(app, tenant, "c8", phone="48601234568")
    assert [s for s, _ in _key_rows(settings, tenant)] == ["c7"]
    assert stored_states(settings, stream_id("customer", tenant, "c8")) == []


def test_a_key_stored_without_events_serves_the_create_that_comes_later(
    app: PanelApplication, settings: Settings
) -> None:
    """A key made outside a command (an earlier release made keys before saving) and never
    used: the guessed key collides with it, and the retry seals with the stored one."""
    tenant, customer_id = uuid.uuid4().hex, "c9"
    assert app.vault is not None
    with app.keys():
        app.vault.key((tenant, customer_id), create=True)
    before = _key_rows(settings, tenant)
    register(app, tenant, customer_id)
    assert _key_rows(settings, tenant) == before
    assert _email_of(app, tenant, customer_id) == PERSONAL["email"]


def test_racing_creates_of_one_customer_store_one_key_and_one_customer(
    app: PanelApplication, settings: Settings
) -> None:
    import threading

    tenant, customer_id = uuid.uuid4().hex, "c10"
    outcomes: list[str] = []
    start = threading.Barrier(8)

    def attempt(n: int) -> None:
        start.wait()
        try:
            register(app, tenant, customer_id, email=f"n{n}@example.com", phone=f"4860123{n:04d}")
            outcomes.append("created")
        except Conflict:
            outcomes.append("conflict")

    threads = [threading.Thread(target=attempt, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["conflict"] * 7 + ["created"]
    assert [s for s, _ in _key_rows(settings, tenant)] == [customer_id]
    assert _email_of(app, tenant, customer_id).startswith("n")


def test_a_new_customer_is_saved_without_reading_records_or_inserting_its_key_apart(
    app: PanelApplication, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A create's one round trip: no read of uniqueness records before the save, and the
    data key goes in with the events, not through the vault's own cursor."""
    from commands import uniqueness

    def no_round_trip(*_: object) -> None:
        msg = "a create with new values made a round trip of its own"
        raise AssertionError(msg)

    assert app.vault is not None
    monkeypatch.setattr(uniqueness, "load_records", no_round_trip)
    monkeypatch.setattr(app.vault, "cursor", no_round_trip)
    tenant, customer_id = uuid.uuid4().hex, "c11"
    register(app, tenant, customer_id)
    monkeypatch.undo()
    assert _email_of(app, tenant, customer_id) == PERSONAL["email"]


def test_a_large_batch_of_keys_is_fetched_by_index_probes(settings: Settings) -> None:
    """A replay fetches the keys of 5,000 customers at once: each is one probe of the key
    table's index, never a hash of the whole table (read from end to end per batch)."""
    from events.pii import _GET_MANY

    tenant = uuid.uuid4().hex
    with psycopg.connect(settings.database_url) as conn:
        conn.execute(
            "INSERT INTO pii_keys (tenant_id, subject_id, wrapped) "
            "SELECT %s, 's' || n, '\\x00'::bytea FROM generate_series(1, 30000) AS n",
            (tenant,),
        )
        conn.execute("ANALYZE pii_keys")
        subjects = [f"s{n}" for n in range(1, 30000, 6)]
        plan = "\n".join(
            line
            for (line,) in conn.execute(
                "EXPLAIN " + _GET_MANY, ([tenant] * len(subjects), subjects)
            ).fetchall()
        )
        found = conn.execute(_GET_MANY, ([tenant] * len(subjects), subjects)).fetchall()
        conn.execute("DELETE FROM pii_keys WHERE tenant_id = %s", (tenant,))
    assert "Index Scan" in plan, plan
    assert "Seq Scan" not in plan, plan
    assert sorted(s for _, s, _ in found) == sorted(subjects)


def _unsealed(app: PanelApplication, tenant: str, customer_id: str, node: Any) -> Any:
    """A stored document with every sealed value opened, as a release without sealing wrote
    it."""
    if isinstance(node, dict):
        if is_sealed(node):
            assert app.vault is not None
            return app.vault.open((tenant, customer_id), node)
        return {k: _unsealed(app, tenant, customer_id, v) for k, v in node.items()}
    if isinstance(node, list):
        return [_unsealed(app, tenant, customer_id, v) for v in node]
    return node


def _as_an_old_release_stored_it(
    app: PanelApplication, settings: Settings, tenant: str, customer_id: str
) -> None:
    """The customer's events and snapshots with their personal data in plain text, and no
    data key (the release before crypto-shredding had none)."""
    stream = stream_id("customer", tenant, customer_id)
    with app.keys(), psycopg.connect(settings.database_url) as conn:
        for table in ("panel_events", "panel_snapshots"):
            for version, raw in conn.execute(
                f"SELECT originator_version, state FROM {table} WHERE originator_id = %s",
                (stream,),
            ).fetchall():
                plain = _unsealed(app, tenant, customer_id, orjson.loads(bytes(raw)))
                conn.execute(
                    f"UPDATE {table} SET state = %s WHERE originator_id = %s "
                    "AND originator_version = %s",
                    (orjson.dumps(plain), stream, version),
                )
        conn.execute("DELETE FROM pii_keys WHERE tenant_id = %s", (tenant,))


def test_erasure_reaches_legacy_snapshots_and_values_that_read_sealed(
    app: PanelApplication, settings: Settings, servers: dict[str, str]
) -> None:
    """A release without sealing wrote snapshots with personal data in plain text too, and
    time travel to a snapshot's version read them after an erasure; and a legacy event whose
    plain personal data merely held the text "sealed" (a note) was taken for sealed, and
    kept in plain text through the erasure."""
    import redis

    from workers.gdpr import erase_customer

    tenant, customer_id = uuid.uuid4().hex, "legacy-snap"
    register(app, tenant, customer_id, note="sealed")
    for n in range(SNAPSHOT_EVERY):  # versions 2 to 51: a snapshot at 50
        handlers.update_customer(
            app,
            UpdateCustomer(
                meta(tenant),
                customer_id,
                {**PERSONAL, "note": f"visit {n}"},
                "regular",
                "active",
                [],
                None,
            ),
        )
    stream = stream_id("customer", tenant, customer_id)
    assert len(stored_states(settings, stream, "panel_snapshots")) == 1
    _as_an_old_release_stored_it(app, settings, tenant, customer_id)
    assert PERSONAL["email"].encode() in stored_states(settings, stream, "panel_snapshots")[0]
    assert b'"note":"sealed"' in stored_states(settings, stream)[0]

    client = redis.Redis.from_url(servers["redis"])
    with psycopg.connect(settings.database_url) as conn:
        summary = erase_customer(app, conn, settings, tenant, customer_id, "DSR-4", "dpo", client)
    assert summary["legacyEventsSealed"] == SNAPSHOT_EVERY + 1
    assert summary["snapshotsDeleted"] == 1
    for value in (*PERSONAL.values(), "visit 49"):
        for table in ("panel_events", "panel_snapshots"):
            assert all(value.encode() not in s for s in stored_states(settings, stream, table))
    with app.keys():
        first = next(iter(app.events.get(stream)))
        then = app.repository.get(stream, version=SNAPSHOT_EVERY)
    assert first.personal == dict.fromkeys(PERSONAL, ERASED)
    assert set(then.state.personal.values()) == {ERASED}


def test_seal_legacy_seals_a_tenants_events_in_batches_and_drops_plain_snapshots(
    app: PanelApplication, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`beeoclock gdpr seal-legacy`: every plain event of the tenant sealed, a transaction per
    batch (here 2), whatever its values say; snapshots holding plain data dropped, sealed
    ones kept."""
    from workers import gdpr

    monkeypatch.setattr(gdpr, "SEAL_BATCH", 2)
    tenant = uuid.uuid4().hex
    for cid, note in (("a", "sealed"), ("b", "fine"), ("c", "also fine")):
        register(app, tenant, cid, note=note, email=f"{cid}@x.pl", phone=None)
    for n in range(SNAPSHOT_EVERY):
        handlers.update_customer(
            app,
            UpdateCustomer(
                meta(tenant),
                "c",
                {**PERSONAL, "email": "c@x.pl", "phone": None, "note": f"visit {n}"},
                "regular",
                "active",
                [],
                None,
            ),
        )
    snapshot_of_c = stored_states(settings, stream_id("customer", tenant, "c"), "panel_snapshots")
    for cid in ("a", "b"):
        _as_an_old_release_stored_it(app, settings, tenant, cid)
    with psycopg.connect(settings.database_url) as conn:
        assert gdpr.seal_plain(app, conn, f"customer:{tenant}:") == 2
        assert gdpr.drop_plain_snapshots(conn, f"customer:{tenant}:") == 0
    for cid in ("a", "b"):
        assert (
            PERSONAL["firstName"].encode()
            not in stored_states(settings, stream_id("customer", tenant, cid))[0]
        )
    # c's snapshot was written sealed: it stays
    assert (
        stored_states(settings, stream_id("customer", tenant, "c"), "panel_snapshots")
        == snapshot_of_c
    )


def test_erasure_reaches_the_staging_table_a_stopped_replay_left(
    app: PanelApplication, settings: Settings, servers: dict[str, str]
) -> None:
    """A replay killed after its bulk phase leaves its staging table, rows and search text
    in plain text, until a run of the same name resumes it: the erasure deletes the
    customer's rows there too (a replay still running applies the erasure itself)."""
    import redis

    from workers.gdpr import erase_customer
    from workers.replay import TARGETS, Replay

    tenant = uuid.uuid4().hex
    register(app, tenant, "gone", email="gone@example.com", phone=None)
    register(app, tenant, "stays", email="stays@example.com", phone=None)
    replay = Replay(settings, TARGETS["customers"], tenant, progress=False)
    with replay._session() as conn:
        replay._build(conn, fresh=True)  # and stopped there, as if killed

    def staged(customer_id: str) -> list[str]:
        with psycopg.connect(settings.database_url) as conn:
            rows = conn.execute(
                sql.SQL("SELECT t::text FROM {} t WHERE tenant_id = %s AND id = %s").format(
                    sql.Identifier(replay.staging)
                ),
                (tenant, customer_id),
            ).fetchall()
        return [r[0] for r in rows]

    assert "gone@example.com" in staged("gone")[0]
    with psycopg.connect(settings.database_url) as conn:  # its error may quote a value
        conn.execute(
            "INSERT INTO relay_dead_letters (name, notification_id, originator_id, "
            "originator_version, topic, error) VALUES ('relay', -1, %s, 9, 't', %s)",
            (stream_id("customer", tenant, "gone"), "ValueError('gone@example.com')"),
        )
    client = redis.Redis.from_url(servers["redis"])
    try:
        with psycopg.connect(settings.database_url) as conn:
            summary = erase_customer(app, conn, settings, tenant, "gone", "DSR-9", "dpo", client)
        assert summary["replayStagingRowsDeleted"] == 1
        assert staged("gone") == []
        assert staged("stays")
        assert summary["deadLettersRedacted"] == 1
        with psycopg.connect(settings.database_url) as conn:
            (error,) = conn.execute(
                "SELECT error FROM relay_dead_letters WHERE originator_id = %s",
                (stream_id("customer", tenant, "gone"),),
            ).fetchone()
        assert "gone@example.com" not in error
    finally:
        with psycopg.connect(settings.database_url) as conn:
            conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(replay.staging)))
            conn.execute("DELETE FROM replay_runs WHERE staging = %s", (replay.staging,))
