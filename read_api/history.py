"""History, time travel and the GDPR export, answered from the event store (not a read
model): an entity's events with who and when (`GET /{id}/history`), the entity as it was at a
version or an instant (`GET /{id}?version=N`, `?asOf=<ISO>`), and everything about a customer
(`GET /api/v1/customer/{id}/export`, workers/gdpr.py). All need READ_AUDIT
(beeoclock/permissions.py).

Reading starts from the nearest snapshot (commands/application.py), so a long stream costs
at most SNAPSHOT_EVERY events past it. Personal data is opened per request; an erased
customer's fields read as erased (events/pii.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

import orjson
from eventsourcing.application import AggregateNotFoundError
from eventsourcing.postgres import PostgresApplicationRecorder
from fastapi import APIRouter, Depends, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from beeoclock.deps import PrincipalDep, SettingsDep
from beeoclock.ids import entity_id
from beeoclock.settings import Settings
from commands.application import PanelApplication
from commands.errors import FieldError, InvalidCommand, NotFound
from events import customer, service
from events.base import PanelEvent, stream_id
from events.history import entries

router = APIRouter(tags=["history"])


@dataclass(frozen=True)
class Kind:
    name: str
    evolve: Callable[[Any, PanelEvent], Any]

    def to_dto(self, state: Any) -> dict[str, Any]:
        dto: dict[str, Any] = state.to_dto()
        return dto


CUSTOMER = Kind("customer", customer.evolve)
SERVICE = Kind("service", service.evolve)


async def get_panel(request: Request) -> PanelApplication:
    panel: PanelApplication = request.app.state.panel
    return panel


PanelDep = Annotated[PanelApplication, Depends(get_panel)]


def _ms(moment: datetime) -> datetime:
    """Instants as clients see them (milliseconds): `asOf=<a version's updatedAt>` is that
    version."""
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def _panel(events: Iterable[Any]) -> list[PanelEvent]:
    return [e for e in events if isinstance(e, PanelEvent)]


def _latest_version(app: PanelApplication, stream: str) -> int | None:
    latest = app.recorder.select_events(stream, desc=True, limit=1)
    return latest[0].originator_version if latest else None


def _state_at(app: PanelApplication, stream: str, version: int) -> Any:
    try:
        return app.repository.get(stream, version=version).state
    except AggregateNotFoundError:
        return None


def history_page(app: PanelApplication, kind: Kind, stream: str, page: int, size: int) -> bytes:
    """`{"items": [entries oldest first], "totalSize": n}` for versions of one page."""
    with app.keys():
        total = _latest_version(app, stream)
        if total is None:
            raise NotFound(f"{kind.name} {stream.split(':', 2)[2]} not found")
        first = (page - 1) * size + 1
        last = min(total, first + size - 1)
        items: list[dict[str, Any]] = []
        if first <= total:
            before = _state_at(app, stream, first - 1) if first > 1 else None
            events = _panel(app.events.get(stream, gt=first - 1, lte=last))
            items = list(entries(before, events, kind.evolve, kind.to_dto))
    return orjson.dumps({"items": items, "totalSize": total})


def as_it_was(
    app: PanelApplication,
    kind: Kind,
    stream: str,
    version: int | None,
    as_of: datetime | None,
) -> dict[str, Any]:
    """The entity's DTO at `version`, or after the last event at or before `as_of`."""
    name = f"{kind.name} {stream.split(':', 2)[2]}"
    with app.keys():
        if version is not None:
            state = _state_at(app, stream, version)
            if state is None or state.version != version:
                raise NotFound(f"{name} has no version {version}")
            return kind.to_dto(state)
        assert as_of is not None
        state, after = None, 0
        snapshots: Iterable[Any] = app.snapshots.get(stream, desc=True) if app.snapshots else ()
        for snapshot in snapshots:
            if _ms(snapshot.state["_modified_on"]) <= as_of:
                state = snapshot.state["state"]
                after = snapshot.originator_version
                break
        for event in app.events.get(stream, gt=after):
            assert isinstance(event, PanelEvent)
            if _ms(event.timestamp) > as_of:
                break
            state = kind.evolve(state, event)
        if state is None:
            raise NotFound(f"{name} did not exist at {as_of.isoformat()}")
        return kind.to_dto(state)


async def time_travel(
    app: PanelApplication,
    kind: Kind,
    tenant_id: str,
    raw_id: str,
    version: int | None,
    as_of: datetime | None,
) -> Response:
    if version is not None and as_of is not None:
        msg = "give version or asOf, not both"
        raise InvalidCommand(msg, [FieldError("asOf", msg)])
    stream = stream_id(kind.name, tenant_id, entity_id(raw_id, kind.name))
    dto = await run_in_threadpool(as_it_was, app, kind, stream, version, as_of)
    headers = {"ETag": f'"{dto["_version"]}"', "Cache-Control": "private, no-store"}
    return Response(orjson.dumps(dto), 200, headers, media_type="application/json")


Page = Annotated[int, Query(ge=1, le=1_000_000)]
PageSize = Annotated[int, Query(alias="pageSize", ge=1, le=1000)]


async def _history(
    app: PanelApplication, kind: Kind, tenant_id: str, raw_id: str, page: int, size: int
) -> Response:
    stream = stream_id(kind.name, tenant_id, entity_id(raw_id, kind.name))
    body = await run_in_threadpool(history_page, app, kind, stream, page, size)
    headers = {"Cache-Control": "private, no-store"}
    return Response(body, 200, headers, media_type="application/json")


@router.get("/api/v1/customer/{customer_id}/history")
async def customer_history(
    customer_id: str,
    principal: PrincipalDep,
    app: PanelDep,
    page: Page = 1,
    page_size: PageSize = 50,
) -> Response:
    """The customer's events, oldest first: `{version, type, at, actor, requestId, changes}`."""
    return await _history(app, CUSTOMER, principal.tenant_id, customer_id, page, page_size)


@router.get("/api/v1/service/{service_id}/history")
async def service_history(
    service_id: str,
    principal: PrincipalDep,
    app: PanelDep,
    page: Page = 1,
    page_size: PageSize = 50,
) -> Response:
    """The service's events, oldest first: `{version, type, at, actor, requestId, changes}`."""
    return await _history(app, SERVICE, principal.tenant_id, service_id, page, page_size)


def _export(app: PanelApplication, settings: Settings, tenant_id: str, customer_id: str) -> bytes:
    from workers.gdpr import export_customer

    # the event store's own pool: the auditor role in a read-only process, when configured
    recorder = app.recorder
    assert isinstance(recorder, PostgresApplicationRecorder)
    with recorder.datastore.get_connection() as conn:
        return orjson.dumps(export_customer(app, conn, settings, tenant_id, customer_id))


@router.get("/api/v1/customer/{customer_id}/export")
async def customer_export(
    customer_id: str, principal: PrincipalDep, app: PanelDep, settings: SettingsDep
) -> Response:
    """GDPR data portability: the customer's current state, every event with its personal
    data, and every place the customer appears, as one JSON document."""
    entity_id(customer_id, "customer")
    body = await run_in_threadpool(_export, app, settings, principal.tenant_id, customer_id)
    headers = {
        "Cache-Control": "private, no-store",
        "Content-Disposition": f'attachment; filename="customer-{customer_id}.json"',
    }
    return Response(body, 200, headers, media_type="application/json")
