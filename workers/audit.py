"""`beeoclock audit export`: a tenant's events with their metadata (who, when, under which
request, what), as JSON lines or CSV, optionally for one entity and a time range.

Streamed: a server-side cursor reads the event store in pages and every row is written as
soon as it is decoded, so memory stays flat for any number of events. Personal data is
opened per page; an erased customer's fields read as erased.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from datetime import datetime
from typing import Any, TextIO

import orjson
import psycopg
from eventsourcing.persistence import StoredEvent

from commands.application import PanelApplication
from events.base import PanelEvent, split_stream_id
from events.envelope import aggregate_type_of
from events.history import event_record

PAGE = 2000
COLUMNS = ("position", "at", "entityType", "entityId", "version", "type", "actor", "requestId")


def _rows(
    conn: psycopg.Connection[Any], tenant_id: str, entity_id: str | None
) -> Iterator[list[tuple[Any, ...]]]:
    params: list[Any]
    if entity_id:
        where = "originator_id = ANY(%s)"
        params = [[f"{kind}:{tenant_id}:{entity_id}" for kind in ("customer", "service")]]
    else:
        where = "(starts_with(originator_id, %s) OR starts_with(originator_id, %s))"
        params = [f"customer:{tenant_id}:", f"service:{tenant_id}:"]
    with conn.transaction(), conn.cursor(name="audit_export") as cur:
        cur.itersize = PAGE
        cur.execute(
            "SELECT notification_id, originator_id, originator_version, topic, state "
            f"FROM panel_events WHERE {where} ORDER BY notification_id",
            params,
        )
        while page := cur.fetchmany(PAGE):
            yield page


def records(
    app: PanelApplication,
    conn: psycopg.Connection[Any],
    tenant_id: str,
    entity_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Iterator[dict[str, Any]]:
    """The audit records, oldest first (`since` inclusive, `until` exclusive)."""
    for page in _rows(conn, tenant_id, entity_id):
        with app.keys():
            if app.vault is not None:
                app.vault.prefetch(
                    app.subjects_of_ids(r[1] for r in page if r[1].startswith("customer:"))
                )
            for position, originator_id, version, topic, state in page:
                event = app.mapper.to_domain_event(
                    StoredEvent(originator_id, version, topic, bytes(state))
                )
                if not isinstance(event, PanelEvent) or aggregate_type_of(event) is None:
                    continue
                if (since and event.timestamp < since) or (until and event.timestamp >= until):
                    continue
                kind, _, entity = split_stream_id(originator_id)
                yield {
                    "position": position,
                    "entityType": kind,
                    "entityId": entity,
                    **event_record(event),
                }


def export(
    app: PanelApplication,
    conn: psycopg.Connection[Any],
    out: TextIO,
    tenant_id: str,
    entity_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    fmt: str = "jsonl",
) -> int:
    """Write the records to `out`; returns how many."""
    count = 0
    writer = csv.writer(out) if fmt == "csv" else None
    if writer:
        writer.writerow([*COLUMNS, "data"])
    for record in records(app, conn, tenant_id, entity_id, since, until):
        if writer:
            writer.writerow([*(record[c] for c in COLUMNS), orjson.dumps(record["data"]).decode()])
        else:
            out.write(orjson.dumps(record).decode() + "\n")
        count += 1
    out.flush()
    return count
