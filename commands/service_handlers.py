"""One handler per service command: load, decide, save, return (the save loop, with the
uniqueness record of `order`, is commands/saving.py)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from commands import saving
from commands.application import PanelApplication
from commands.context import Meta
from commands.errors import NotFound
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
from events.service import (
    Banner,
    ServiceBannerAdded,
    ServiceBannerRemoved,
    ServiceState,
    removed_banner,
)
from events.timefmt import iso_ms

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
    service, position = saving.create(
        app, cmd.meta, cmd.service_id, NOUN, lambda: Service.create(cmd), unique_values
    )
    return ServiceOutcome(service.state, position)


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
    """A banner removed again is answered as its removal left it, and nothing changes (the
    contract's soft-delete repeat): found in the service's history, which only this rare
    path reads."""
    try:
        state, banner, position = _change(
            app, cmd.meta, cmd.service_id, lambda s: s.remove_banner(cmd)
        )
    except NotFound:
        service = load_service(app, cmd.meta.tenant_id, cmd.service_id)  # or NotFound
        removed = _removed_before(app, service, cmd.media_id)
        if removed is None:
            raise
        return BannerOutcome(service.state, removed, None)
    return BannerOutcome(state, banner, position)


def _removed_before(app: PanelApplication, service: Service, media_id: str) -> Banner | None:
    """The banner `media_id` as its last removal left it, if it was removed and not added
    again since."""
    stream = stream_id(KIND, service.state.tenant_id, service.state.id)
    removal: ServiceBannerRemoved | None = None
    for event in app.events.get(stream):
        if isinstance(event, ServiceBannerRemoved) and event.media_id == media_id:
            removal = event
        elif isinstance(event, ServiceBannerAdded) and event.media_id == media_id:
            removal = None
    if removal is None:
        return None
    before: Service = app.repository.get(stream, version=removal.originator_version - 1)
    banner = before.state.banner(media_id)
    if banner is None:
        return None
    return removed_banner(banner, iso_ms(removal.timestamp))


def _outcome(changed: tuple[ServiceState, None, int | None]) -> ServiceOutcome:
    state, _, position = changed
    return ServiceOutcome(state, position)


def _change(
    app: PanelApplication, meta: Meta, service_id: str, decide: Callable[[Service], T]
) -> tuple[ServiceState, T, int | None]:
    stream = stream_id(KIND, meta.tenant_id, service_id)
    service, result, position = saving.change(
        app, meta, stream, service_id, NOUN, decide, unique_values
    )
    return service.state, result, position


def load_service(app: PanelApplication, tenant_id: str, service_id: str) -> Service:
    service: Service = saving.load(app, stream_id(KIND, tenant_id, service_id), NOUN, service_id)
    return service
