"""GDPR: a customer's data exported as one portable document, or erased everywhere it lives.

Export (`beeoclock gdpr export`, `GET /api/v1/customer/{id}/export`): the customer's current
state and every event with its personal data opened, and every place the customer appears.

Erasure (`beeoclock gdpr erase`): a `CustomerErased` event (who, when, why; no personal
data), the release of the customer's email and phone, and the destruction of their data key
commit in one transaction (commands/handlers.py); from then on every sealed copy of their
personal data (events, snapshots, Kafka messages, backups) is unreadable. Then the customer
leaves the read model for a tombstone (so no replay or redelivery brings them back), and the
staging tables of stopped replays; their snapshots are deleted (time travel folds the sealed
events instead), error texts of their dead letters redacted, and the cached answers of the
tenant's customers dropped. Events and snapshots from before sealing (a release without it)
are sealed, or deleted, first. Erasing again changes nothing more.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg
import redis
from eventsourcing.utils import get_topic, resolve_topic
from psycopg import sql
from psycopg.rows import tuple_row

from beeoclock import kafka
from beeoclock.settings import Settings
from beeoclock.text import printable
from commands import handlers, uniqueness
from commands.application import PanelApplication
from commands.context import Meta
from commands.customer import EraseCustomer, unique_values
from commands.errors import DomainError, InvalidCommand, NotFound
from events.base import PanelEvent, stream_id
from events.customer import CUSTOMER_EVENTS, CustomerState, evolve
from events.history import event_record
from events.pii import is_sealed
from events.timefmt import iso_ms
from projections import cache, customers

SCHEMA = "beeoclock.gdpr-export.v1"


class CachePurgeFailed(DomainError):
    """The erasure is done, but cached copies may remain until the purge is run again."""


MAX_REASON = 500
#: what a redacted dead letter of an erased customer says instead of its error
REDACTED = "[erased with the customer's personal data]"


def _events(app: PanelApplication, tenant_id: str, customer_id: str) -> list[PanelEvent]:
    found = app.events.get(stream_id(customers.STREAM, tenant_id, customer_id))
    events = [e for e in found if isinstance(e, PanelEvent)]
    if not events:
        msg = f"customer {customer_id} not found"
        raise NotFound(msg)
    return events


def _cached_keys(client: redis.Redis | None, pattern: str) -> list[bytes] | None:
    if client is None:
        return None
    try:
        return list(client.scan_iter(match=pattern, count=1000))
    except (redis.RedisError, OSError):
        return None


def export_customer(
    app: PanelApplication,
    conn: psycopg.Connection[Any],
    settings: Settings,
    tenant_id: str,
    customer_id: str,
    redis_client: redis.Redis | None = None,
) -> dict[str, Any]:
    """Everything about one customer of one tenant, as one JSON-ready document."""
    stream = stream_id(customers.STREAM, tenant_id, customer_id)
    with app.keys():
        events = _events(app, tenant_id, customer_id)
        state: CustomerState | None = None
        for event in events:
            state = evolve(state, event)
        assert state is not None
        held = []
        for kind, value in sorted(unique_values(state).items()):
            if value is None:
                continue
            rid = uniqueness.record_id(app.uniqueness_key, tenant_id, kind, value)
            record = uniqueness.load_record(app, rid)
            if record is not None and record.owner == customer_id:
                held.append(kind)
        key_present = app.vault is not None and app.vault.key((tenant_id, customer_id)) is not None
    cur = conn.cursor(row_factory=tuple_row)
    row = cur.execute(
        "SELECT version FROM customers WHERE tenant_id = %s AND id = %s", (tenant_id, customer_id)
    ).fetchone()
    snapshots = cur.execute(
        "SELECT count(*) FROM panel_snapshots WHERE originator_id = %s", (stream,)
    ).fetchone()
    tombstone = cur.execute(
        "SELECT version FROM customer_tombstones WHERE tenant_id = %s AND id = %s",
        (tenant_id, customer_id),
    ).fetchone()
    cached = _cached_keys(redis_client, f"v:{tenant_id}:customer:{customer_id}:*")
    partition = kafka.partition_of(tenant_id, settings.kafka_partitions)
    sealed = "sealed with the customer's own key" if not state.erased else "sealed; key erased"
    return {
        "schema": SCHEMA,
        "exportedAt": iso_ms(datetime.now(UTC)),
        "tenantId": tenant_id,
        "customerId": customer_id,
        "erased": state.erased,
        "current": state.to_dto(),
        "events": [event_record(e) for e in events],
        "appearsIn": [
            {
                "place": "event store",
                "table": "panel_events",
                "stream": stream,
                "events": len(events),
                "personalData": sealed,
            },
            {
                "place": "snapshots",
                "table": "panel_snapshots",
                "snapshots": int(snapshots[0]) if snapshots else 0,
                "personalData": sealed,
            },
            {
                "place": "read model",
                "table": "customers",
                "present": row is not None,
                "tombstone": tombstone is not None,
            },
            {
                "place": "uniqueness records",
                "held": held,
                "note": "ids are keyed hashes of the values, never the values",
            },
            {"place": "data key", "table": "pii_keys", "present": key_present},
            {
                "place": "kafka",
                "topic": settings.topic_customer,
                "partition": partition,
                "messages": len(events),
                "personalData": sealed,
            },
            {
                "place": "cache",
                "entries": len(cached) if cached is not None else None,
                "note": f"pages of the customer list may hold the customer for up to "
                f"{settings.cache_page_ttl_s} s after a change",
            },
        ],
    }


#: the personal data fields of customer events (events/customer.py)
PERSONAL_FIELDS = sorted(
    {name for cls in CUSTOMER_EVENTS for name in getattr(cls, "personal_data", ())}
)
#: legacy events sealed per transaction
SEAL_BATCH = 500

#: customer events in a scope (a stream, or streams starting with a prefix) holding a personal
#: data field in plain text: an object that is not a sealed value. Decided from the parsed
#: document: a plain value that merely contains the text "sealed" is still plain.
_PLAIN_EVENTS = (
    "SELECT e.originator_id, e.originator_version, e.topic, e.state, e.notification_id "
    "FROM panel_events e, LATERAL (SELECT convert_from(e.state, 'UTF8')::jsonb AS doc) d "
    "WHERE (e.originator_id = %(prefix)s "
    "OR NOT %(whole)s AND starts_with(e.originator_id, %(prefix)s)) "
    "AND e.notification_id > %(after)s AND e.topic = ANY(%(topics)s) "
    "AND EXISTS (SELECT 1 FROM unnest(%(names)s::text[]) AS f(name) "
    "WHERE jsonb_typeof(d.doc -> f.name) = 'object' "
    "AND jsonb_typeof(d.doc -> f.name -> 'sealed') IS DISTINCT FROM 'string') "
    "ORDER BY e.notification_id LIMIT %(limit)s FOR UPDATE OF e"
)


def seal_plain(
    app: PanelApplication, conn: psycopg.Connection[Any], prefix: str, *, whole: bool = False
) -> int:
    """Seal personal data that events stored before crypto-shredding still hold in plain
    text (the streams starting with `prefix`, e.g. `customer:<tenant>:`; `whole`: the one
    stream named so, and not those whose name goes on). The one edit of stored events this
    system makes: the same event, its personal data now sealed, so that erasure can reach it.
    A transaction per `SEAL_BATCH` events, each batch going on from the last one's last
    notification (never reading the ones before again). Returns how many events were
    sealed.

    Snapshots an old release wrote hold the same data in plain text: see
    `drop_plain_snapshots`."""
    assert app.vault is not None
    topics = [get_topic(cls) for cls in CUSTOMER_EVENTS if getattr(cls, "personal_data", ())]
    query = {
        "prefix": prefix,
        "whole": whole,
        "topics": topics,
        "names": PERSONAL_FIELDS,
        "limit": SEAL_BATCH,
        "after": 0,
    }
    sealed = 0
    with app.keys():  # one key fetch per customer, not per event
        while True:
            with conn.transaction():
                rows = conn.execute(_PLAIN_EVENTS, query).fetchall()
                for originator_id, version, topic, raw, notification_id in rows:
                    query["after"] = notification_id  # the next batch goes on from here
                    state = app.mapper.transcoder.decode(bytes(raw))
                    subject = PanelApplication.subjects_of_ids([originator_id]).pop()
                    for name in resolve_topic(topic).personal_data:
                        if isinstance(state.get(name), dict) and not is_sealed(state[name]):
                            state[name] = app.vault.seal(subject, state[name])
                    conn.execute(
                        "UPDATE panel_events SET state = %s WHERE originator_id = %s "
                        "AND originator_version = %s",
                        (app.mapper.transcoder.encode(state), originator_id, version),
                    )
                sealed += len(rows)
            if len(rows) < SEAL_BATCH:
                return sealed


def _holds_plain_personal(node: Any) -> bool:
    """Whether a decoded snapshot holds a personal data field that is not sealed (at any
    depth: an entity's state is nested in the snapshot's own document)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if (
                key in PERSONAL_FIELDS
                and isinstance(value, dict)
                and value
                and not is_sealed(value)
            ):
                return True
            if _holds_plain_personal(value):
                return True
    elif isinstance(node, list):
        return any(_holds_plain_personal(item) for item in node)
    return False


def drop_plain_snapshots(conn: psycopg.Connection[Any], prefix: str) -> int:
    """Delete the snapshots of the streams starting with `prefix` that hold personal data in
    plain text (written by a release without sealing): a snapshot is only a shortcut, and the
    next one is written sealed. Returns how many were deleted. (An erasure deletes all of
    the customer's snapshots.)"""
    dropped = 0
    with conn.transaction():
        rows = conn.execute(
            "SELECT originator_id, originator_version, state FROM panel_snapshots "
            "WHERE starts_with(originator_id, %s) FOR UPDATE",
            (prefix,),
        ).fetchall()
        for originator_id, version, raw in rows:
            if _holds_plain_personal(orjson.loads(bytes(raw))):
                conn.execute(
                    "DELETE FROM panel_snapshots WHERE originator_id = %s "
                    "AND originator_version = %s",
                    (originator_id, version),
                )
                dropped += 1
    return dropped


def erase_customer(
    app: PanelApplication,
    conn: psycopg.Connection[Any],
    settings: Settings,
    tenant_id: str,
    customer_id: str,
    reason: str,
    actor: str,
    redis_client: redis.Redis | None = None,
) -> dict[str, Any]:
    """Erase one customer's personal data everywhere; returns what was done (no personal
    data). Raises NotFound for a customer the tenant never had."""
    reason = reason.strip()
    try:
        printable(reason)
    except ValueError as exc:
        raise InvalidCommand(f"reason {exc}") from None
    if not reason or len(reason) > MAX_REASON:
        msg = f"a reason of 1 to {MAX_REASON} characters is required"
        raise InvalidCommand(msg)
    if redis_client is None:
        msg = "erasure purges the cache too: BEEOCLOCK_REDIS_URL is needed"
        raise InvalidCommand(msg)
    # events from before crypto-shredding: sealed first, so destroying the key erases them too
    stream = stream_id(customers.STREAM, tenant_id, customer_id)
    legacy = seal_plain(app, conn, stream, whole=True)
    meta = Meta(tenant_id, actor, f"gdpr-erase-{uuid.uuid4().hex}", datetime.now(UTC))
    outcome = handlers.erase_customer(app, EraseCustomer(meta, customer_id, reason))

    # out of the read model now (the projector would do it too, when it gets there)
    with app.keys():
        last = next(iter(app.events.get(stream, desc=True, limit=1)))

        with conn.transaction(), conn.cursor() as cur:
            assert isinstance(last, PanelEvent)
            customers.project(cur, [last], app.missing_events)
            # dead letters of theirs: an error's text may quote a value, and a message from
            # before crypto-shredding holds it in clear
            redacted = cur.execute(
                "UPDATE projector_dead_letters SET error = %s, message = '' "
                "WHERE tenant_id = %s AND aggregate_id = %s AND topic = %s",
                (REDACTED, tenant_id, customer_id, settings.topic_customer),
            ).rowcount
            redacted += cur.execute(
                "UPDATE relay_dead_letters SET error = %s WHERE originator_id = %s",
                (REDACTED, stream),
            ).rowcount
            # snapshots are only shortcuts: without them, as of any version, the customer is
            # folded from the events, whose personal data no key opens now (a snapshot from
            # before sealing would have shown it)
            snapshots = cur.execute(
                "DELETE FROM panel_snapshots WHERE originator_id = %s", (stream,)
            ).rowcount
            staged = _erase_from_staging(cur, tenant_id, customer_id)

    # and out of the cache: the tenant's customer answers, lists included. New generations
    # first, so no answer computed before this point can be stored after it (cache.py).
    generations = [
        cache.generation_key(tenant_id, customers.STREAM),
        cache.generation_key(tenant_id, customers.STREAM, customer_id),
    ]
    ttl_s = cache.generation_ttl_s(settings)
    try:
        pipe = redis_client.pipeline(transaction=False)
        for key in generations:
            pipe.incr(key)
            pipe.expire(key, ttl_s)
        pipe.execute()
        keys = list(redis_client.scan_iter(match=f"v:{tenant_id}:{customers.STREAM}:*", count=1000))
        for start in range(0, len(keys), 500):
            redis_client.unlink(*keys[start : start + 500])
    except (redis.RedisError, OSError) as exc:
        msg = (
            f"customer {customer_id} is erased, but the cache could not be purged "
            f"({type(exc).__name__}); run the same command again"
        )
        raise CachePurgeFailed(msg) from None
    return {
        "tenantId": tenant_id,
        "customerId": customer_id,
        "erasedNow": outcome.position is not None,
        "position": outcome.position,
        "version": outcome.state.version,
        "legacyEventsSealed": legacy,
        "readModel": "removed (tombstone kept)",
        "deadLettersRedacted": redacted,
        "snapshotsDeleted": snapshots,
        "replayStagingRowsDeleted": staged,
        "cacheEntriesRemoved": len(keys),
        "actor": actor,
    }


def _erase_from_staging(cur: psycopg.Cursor[Any], tenant_id: str, customer_id: str) -> int:
    """The customer's rows in replay staging tables (workers/replay.py) of the customers read
    model: a replay killed or given up leaves its table behind, rows and search text in plain
    text. A replay still running applies the erasure itself when it catches up (the event
    comes after the position it rebuilds to). Returns how many rows were deleted."""
    deleted = 0
    for (staging,) in cur.execute(
        "SELECT DISTINCT staging FROM replay_runs WHERE projection = %s "
        "AND to_regclass(staging) IS NOT NULL ORDER BY staging",
        (customers.TABLE,),
    ).fetchall():
        deleted += cur.execute(
            sql.SQL("DELETE FROM {} WHERE tenant_id = %s AND id = %s").format(
                sql.Identifier(staging)
            ),
            (tenant_id, customer_id),
        ).rowcount
    return deleted
