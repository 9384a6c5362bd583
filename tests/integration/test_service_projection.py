"""The service projection against real PostgreSQL and the real event store: version-gated,
idempotent, fills version gaps from the store, and keeps what the media route and the paged
query need (banner hashes, the order sort key, the search text)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import psycopg
import pytest

from beeoclock.bootstrap import panel_application
from beeoclock.settings import Settings
from commands.application import PanelApplication
from commands.context import Meta
from commands.service import (
    CreateService,
    DeleteService,
    PutServiceBanner,
    Service,
    UpdateService,
)
from events.base import PanelEvent
from projections import services
from tests.unit.test_service_decisions import DETAILS, IMAGE

T0 = datetime(2025, 1, 1, tzinfo=UTC)


@pytest.fixture
def app(settings: Settings) -> Iterator[PanelApplication]:
    application = panel_application(settings)
    yield application
    application.close()


def titled(title: str, order: int | None = None) -> dict[str, Any]:
    return {
        **DETAILS,
        "order": order,
        "languageVersions": [
            {"title": title, "description": "Krótki OPIS", "language": "pl", "active": 1},
            {"title": "Haircut", "description": "short", "language": "en", "active": 1},
        ],
    }


def history(app: PanelApplication, tenant: str, updates: int) -> tuple[str, list[PanelEvent]]:
    """A service with 1 + `updates` events (a banner among them) in the store."""
    meta = Meta(tenant, "u1", "r0", T0)
    service = Service.create(
        CreateService(meta, "s1", titled("v0", 1), "#fff", [], "active", [], None)
    )
    app.save(service)
    for i in range(1, updates + 1):
        later = Meta(tenant, "u1", f"r{i}", T0 + timedelta(seconds=i))
        if i == 1:
            service.put_banner(PutServiceBanner(later, "s1", "m1", IMAGE, "front", None))
        else:
            service.update(
                UpdateService(
                    later, "s1", None, titled(f"v{i}", i), "#fff", None, "active", [], None
                )
            )
        app.save(service)
    events = [e for e in app.events.get(service.id) if isinstance(e, PanelEvent)]
    return service.id, events


def project(
    settings: Settings, app: PanelApplication, events: list[PanelEvent], *, fresh: bool = False
) -> tuple[set[tuple[str, str]], list[tuple[str, int, int]]]:
    fetched: list[tuple[str, int, int]] = []

    def missing(originator_id: str, after: int, before: int) -> list[PanelEvent]:
        fetched.append((originator_id, after, before))
        found = app.events.get(originator_id, gt=after, lte=before - 1)
        return [e for e in found if isinstance(e, PanelEvent)]

    with psycopg.connect(settings.database_url) as conn, conn.cursor() as cur:
        changed = services.project(cur, events, missing, fresh=fresh)
    return changed, fetched


def row(settings: Settings, tenant: str) -> dict[str, Any]:
    with psycopg.connect(settings.database_url) as conn:
        found = conn.execute(
            "SELECT version, sort_order, search, media, doc FROM services "
            "WHERE tenant_id = %s AND id = 's1'",
            (tenant,),
        ).fetchone()
    assert found is not None
    version, sort_order, search, media, doc = found
    dto: dict[str, Any] = orjson.loads(doc)
    assert dto["_version"] == str(version)
    return {"dto": dto, "sort_order": sort_order, "search": search, "media": media}


def test_events_in_order_build_the_aggregates_state(
    settings: Settings, app: PanelApplication
) -> None:
    tenant = uuid.uuid4().hex
    stream, events = history(app, tenant, updates=3)
    assert project(settings, app, events) == ({(tenant, "s1")}, [])
    stored = row(settings, tenant)
    state = app.repository.get(stream).state
    assert stored["dto"] == state.to_dto()
    assert stored["media"] == {"m1": IMAGE["sha256"]}
    assert stored["sort_order"] == 3
    assert stored["search"] == "v3\nkrótki opis\nhaircut\nshort"  # one field per line


def test_duplicates_and_older_events_change_nothing(
    settings: Settings, app: PanelApplication
) -> None:
    tenant = uuid.uuid4().hex
    _, events = history(app, tenant, updates=2)
    project(settings, app, events)
    before = row(settings, tenant)
    assert project(settings, app, [events[2], events[0], events[1], events[2]]) == (set(), [])
    assert row(settings, tenant) == before


def test_a_version_gap_is_filled_from_the_event_store(
    settings: Settings, app: PanelApplication
) -> None:
    tenant = uuid.uuid4().hex
    stream, events = history(app, tenant, updates=4)
    project(settings, app, [events[0]])
    _, fetched = project(settings, app, [events[4]])  # versions 2..4 never arrived
    assert fetched == [(stream, 1, 5)]
    stored = row(settings, tenant)
    assert stored["dto"] == app.repository.get(stream).state.to_dto()
    assert stored["dto"]["_version"] == "5"
    assert stored["media"] == {"m1": IMAGE["sha256"]}


def test_a_stream_whose_start_was_lost_is_rebuilt_whole(
    settings: Settings, app: PanelApplication
) -> None:
    tenant = uuid.uuid4().hex
    stream, events = history(app, tenant, updates=2)
    _, fetched = project(settings, app, [events[2]])
    assert fetched == [(stream, 0, 3)]
    assert row(settings, tenant)["dto"] == app.repository.get(stream).state.to_dto()


def test_a_service_without_an_order_sorts_after_every_order(
    settings: Settings, app: PanelApplication
) -> None:
    tenant = uuid.uuid4().hex
    service = Service.create(
        CreateService(Meta(tenant, "u", "r", T0), "s1", titled("x"), None, [], "active", [], None)
    )
    app.save(service)
    service.delete(DeleteService(Meta(tenant, "u", "r2", T0), "s1", None))
    app.save(service)
    project(settings, app, [e for e in app.events.get(service.id) if isinstance(e, PanelEvent)])
    stored = row(settings, tenant)
    assert stored["sort_order"] == services.NO_ORDER
    assert stored["dto"]["order"] is None
    assert stored["dto"]["state"] == "deleted"


def test_a_fresh_batch_of_whole_histories_builds_the_same_row_by_copy(
    settings: Settings, app: PanelApplication
) -> None:
    """A replay's bulk phase: each service's whole history at once, for rows that don't exist
    yet, copied in (the media hashes as jsonb included)."""
    tenant = uuid.uuid4().hex
    stream, events = history(app, tenant, updates=3)
    assert project(settings, app, events, fresh=True) == ({(tenant, "s1")}, [])
    stored = row(settings, tenant)
    assert stored["dto"] == app.repository.get(stream).state.to_dto()
    assert stored["media"] == {"m1": IMAGE["sha256"]}
    assert stored["sort_order"] == 3
    assert stored["search"] == "v3\nkrótki opis\nhaircut\nshort"
