"""One handler per service command: load, decide, save, return.

As for customers (commands/handlers.py), every save carries the service's events and its
`order` uniqueness record in one transaction, and a save that loses a race is decided again
on the newer state: the loser ends in a clear 409, never in two services with one order."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError

from commands import uniqueness
from commands.application import PanelApplication
from commands.context import Meta
from commands.errors import Conflict, NotFound
from commands.service import (
    KIND,
    NOUN,
    CreateService,
    DeleteService,
    PutServiceBanner,
    RemoveServiceBanner,
    Service,
    SetRequiredResources,
    UpdateService,
    unique_values,
)
from events.base import stream_id
from events.service import Banner, ServiceState

_RETRIES = 8
T = TypeVar("T")


@dataclass(frozen=True)
class ServiceOutcome:
    state: ServiceState
    position: int | None


@dataclass(frozen=True)
class BannerOutcome:
    state: ServiceState
    banner: Banner
    position: int | None


def create_service(app: PanelApplication, cmd: CreateService) -> ServiceOutcome:
    for _ in range(_RETRIES):
        service = Service.create(cmd)
        records = uniqueness.changes(
            app, cmd.meta, cmd.service_id, {}, unique_values(service.state), NOUN
        )
        try:
            position = app.commit(service, *records)
        except IntegrityError:
            existing = _find_service(app, cmd.meta.tenant_id, cmd.service_id)
            if existing is None:
                continue  # a uniqueness record moved under us: decide again
            # The id is taken, unless by this very request: a retry after a lost commit
            # acknowledgement (the store retries inserts), or the client repeating itself.
            first = next(iter(app.events.get(existing.id, lte=1)), None)
            if getattr(first, "request_id", None) != cmd.meta.request_id:
                msg = f"a service with _id {cmd.service_id} already exists"
                raise Conflict(msg) from None
            return ServiceOutcome(existing.state, None)
        return ServiceOutcome(service.state, position)
    raise _busy()


def update_service(app: PanelApplication, cmd: UpdateService) -> ServiceOutcome:
    return _outcome(_change(app, cmd.meta, cmd.service_id, lambda s: s.update(cmd)))


def set_required_resources(app: PanelApplication, cmd: SetRequiredResources) -> ServiceOutcome:
    return _outcome(_change(app, cmd.meta, cmd.service_id, lambda s: s.set_required_resources(cmd)))


def delete_service(app: PanelApplication, cmd: DeleteService) -> ServiceOutcome:
    return _outcome(_change(app, cmd.meta, cmd.service_id, lambda s: s.delete(cmd)))


def put_banner(app: PanelApplication, cmd: PutServiceBanner) -> BannerOutcome:
    """The image's bytes must already be in the blob store: an acknowledged event never
    points at a missing blob."""
    state, banner, position = _change(app, cmd.meta, cmd.service_id, lambda s: s.put_banner(cmd))
    return BannerOutcome(state, banner, position)


def remove_banner(app: PanelApplication, cmd: RemoveServiceBanner) -> BannerOutcome:
    state, banner, position = _change(app, cmd.meta, cmd.service_id, lambda s: s.remove_banner(cmd))
    return BannerOutcome(state, banner, position)


def _outcome(changed: tuple[ServiceState, None, int | None]) -> ServiceOutcome:
    state, _, position = changed
    return ServiceOutcome(state, position)


def _change(
    app: PanelApplication, meta: Meta, service_id: str, decide: Callable[[Service], T]
) -> tuple[ServiceState, T, int | None]:
    """Load, decide, save. After a lost race the decision is made again on the newer state;
    a command pinned to a version (If-Match) then fails its version check (409)."""
    for _ in range(_RETRIES):
        service = load_service(app, meta.tenant_id, service_id)
        before = unique_values(service.state)
        result = decide(service)
        records = uniqueness.changes(
            app, meta, service_id, before, unique_values(service.state), NOUN
        )
        try:
            position = app.commit(service, *records)
        except IntegrityError:
            done = _applied_by(app, meta.request_id, service.id, service.version)
            if done is not None:
                return done.state, result, None
            continue
        return service.state, result, position
    raise _busy()


def _applied_by(
    app: PanelApplication, request_id: str, stream: str, decided_version: int
) -> Service | None:
    """The service, if this very request's events were stored after all: the store retries an
    insert whose commit acknowledgement was lost, and the retry then collides with itself."""
    service: Service = app.repository.get(stream)
    if service.version < decided_version:
        return None
    event = next(iter(app.events.get(stream, gt=decided_version - 1, lte=decided_version)), None)
    return service if getattr(event, "request_id", None) == request_id else None


def _busy() -> Conflict:
    return Conflict("the service is being changed by other requests; try again")


def _find_service(app: PanelApplication, tenant_id: str, service_id: str) -> Service | None:
    try:
        return load_service(app, tenant_id, service_id)
    except NotFound:
        return None


def load_service(app: PanelApplication, tenant_id: str, service_id: str) -> Service:
    try:
        service: Service = app.repository.get(stream_id(KIND, tenant_id, service_id))
    except AggregateNotFoundError:
        msg = f"service {service_id} not found"
        raise NotFound(msg) from None
    return service
