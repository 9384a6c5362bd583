"""Service events and the service's state, folded from them.

What a service offers (language versions, duration versions with their prices, the
configuration, the prepayment policy, schedules and its `order`) travels as one `details`
mapping: a PUT replaces it whole, so one event says "the details are now these". The colour,
the required resources, the banners and the state each change on their own and have their
own events. Banner events carry the image's metadata and content hash, never its bytes (the
bytes are in the blob store, addressed by that hash).

Values are kept in the wire's shape without the DTOs' `object` tags, which `to_dto` adds.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from events.base import PanelCreated, PanelEvent, split_stream_id
from events.timefmt import iso_ms

#: {"languageVersions", "durationVersions", "configuration", "prepaymentPolicy", "schedules",
#: "order"}, see DETAIL_FIELDS
Details = dict[str, Any]
#: {"resourceId": str, "quantity": int}
Resource = dict[str, Any]
#: {"sha256", "contentType", "format", "width", "height", "size"}
ImageMeta = dict[str, Any]
#: {"id", "image": ImageMeta, "description", "version", "createdAt", "updatedAt"}
Banner = dict[str, Any]
StateEntry = dict[str, str]

DETAIL_FIELDS = (
    "order",
    "configuration",
    "prepaymentPolicy",
    "languageVersions",
    "durationVersions",
    "schedules",
)
CONTENT_TYPES = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp"}


@dataclass(frozen=True)
class ServiceCreated(PanelCreated):
    details: Details
    color: str | None
    required_resources: list[Resource]
    state: str
    state_history: list[StateEntry]
    created_at: str


@dataclass(frozen=True)
class ServiceDetailsChanged(PanelEvent):
    """What the service offers changed; carries the full new details."""

    details: Details


@dataclass(frozen=True)
class ServicePresentationChanged(PanelEvent):
    color: str | None


@dataclass(frozen=True)
class ServiceResourcesSet(PanelEvent):
    """The resources a booking of the service needs, as a whole new list."""

    required_resources: list[Resource]


@dataclass(frozen=True)
class ServiceBannerAdded(PanelEvent):
    media_id: str
    image: ImageMeta
    description: str | None


@dataclass(frozen=True)
class ServiceBannerReplaced(PanelEvent):
    """A new image in place of a banner's: same `_id`, same position."""

    media_id: str
    image: ImageMeta
    description: str | None


@dataclass(frozen=True)
class ServiceBannerRemoved(PanelEvent):
    media_id: str


@dataclass(frozen=True)
class ServiceStateChanged(PanelEvent):
    state: str
    state_history: list[StateEntry]


SERVICE_EVENTS: tuple[type[PanelEvent], ...] = (
    ServiceCreated,
    ServiceDetailsChanged,
    ServicePresentationChanged,
    ServiceResourcesSet,
    ServiceBannerAdded,
    ServiceBannerReplaced,
    ServiceBannerRemoved,
    ServiceStateChanged,
)


def media_url(service_id: str, banner: Banner) -> str:
    """Where the read API serves a banner's bytes. The content hash in the query makes each
    image version its own URL, so browsers may cache it forever (see read_api/service_media)."""
    return f"/api/v1/service-media/{service_id}/{banner['id']}?v={banner['image']['sha256'][:16]}"


@dataclass(frozen=True)
class ServiceState:
    """A service as the events say it is; the DTO is a view of this."""

    tenant_id: str
    id: str
    version: int
    details: Details
    color: str | None
    required_resources: list[Resource] = field(default_factory=list)
    banners: list[Banner] = field(default_factory=list)
    state: str = "active"
    state_history: list[StateEntry] = field(default_factory=list)
    created_at: str = ""
    updated_at: str = ""

    @property
    def order(self) -> int | None:
        order: int | None = self.details.get("order")
        return order

    def banner(self, media_id: str) -> Banner | None:
        return next((b for b in self.banners if b["id"] == media_id), None)

    def media_hashes(self) -> dict[str, str]:
        """Banner id -> content hash: what the DTO does not show, kept beside it."""
        return {b["id"]: b["image"]["sha256"] for b in self.banners}

    @classmethod
    def from_dto(cls, tenant_id: str, dto: dict[str, Any], hashes: dict[str, str]) -> ServiceState:
        """The inverse of `to_dto`, given the banners' content hashes (`media_hashes`)."""
        return cls(
            tenant_id=tenant_id,
            id=dto["_id"],
            version=int(dto["_version"]),
            details={
                "order": dto["order"],
                "configuration": {
                    "duration": {
                        "durationVersionType": dto["configuration"]["duration"][
                            "durationVersionType"
                        ]
                    }
                },
                "prepaymentPolicy": _untagged(dto["prepaymentPolicy"]),
                "languageVersions": [_untagged(v) for v in dto["languageVersions"]],
                "durationVersions": [
                    {**_untagged(v), "prices": [_untagged(p) for p in v["prices"]]}
                    for v in dto["durationVersions"]
                ],
                "schedules": [_untagged(s) for s in dto["schedules"]],
            },
            color=dto["presentation"]["color"],
            required_resources=[dict(r) for r in dto["requiredResources"]],
            banners=[_banner_of(m, hashes[m["_id"]]) for m in dto["presentation"]["banners"]],
            state=dto["state"],
            state_history=list(dto["stateHistory"]),
            created_at=dto["createdAt"],
            updated_at=dto["updatedAt"],
        )

    def to_dto(self) -> dict[str, Any]:
        details = self.details
        return {
            "_id": self.id,
            "object": "ServiceDto",
            "state": self.state,
            "stateHistory": list(self.state_history),
            "_version": str(self.version),
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
            "order": details["order"],
            "configuration": {
                "object": "ServiceConfigurationDto",
                "duration": {
                    "object": "DurationConfiguration",
                    **details["configuration"]["duration"],
                },
            },
            "prepaymentPolicy": {"object": "PrepaymentPolicyDto", **details["prepaymentPolicy"]},
            "languageVersions": [
                {"object": "LanguageVersionDto", **v} for v in details["languageVersions"]
            ],
            "durationVersions": [
                {
                    "object": "DurationVersionDto",
                    **v,
                    "prices": [{"object": "PriceDto", **p} for p in v["prices"]],
                }
                for v in details["durationVersions"]
            ],
            "presentation": {
                "object": "PresentationDto",
                "color": self.color,
                "banners": [self.media_dto(b) for b in self.banners],
            },
            "schedules": [{"object": "Schedule", **s} for s in details["schedules"]],
            "requiredResources": [dict(r) for r in self.required_resources],
        }

    def media_dto(self, banner: Banner, state: str = "active") -> dict[str, Any]:
        image = banner["image"]
        history = [{"state": "active", "setAt": banner["createdAt"]}]
        if state != "active":  # a removed banner's last change is its removal
            history.append({"state": state, "setAt": banner["updatedAt"]})
        return {
            "_id": banner["id"],
            "object": "MediaDto",
            "mediaType": "serviceBanner",
            "url": media_url(self.id, banner),
            "description": banner["description"],
            "metadata": {
                "object": "MediaMetadataDto",
                "width": image["width"],
                "height": image["height"],
                "size": image["size"],
                "format": image["format"],
            },
            "state": state,
            "stateHistory": history,
            "createdAt": banner["createdAt"],
            "updatedAt": banner["updatedAt"],
            "_version": str(banner["version"]),
        }


def _untagged(value: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in value.items() if k != "object"}


def _banner_of(media: dict[str, Any], sha256: str) -> Banner:
    meta = media["metadata"]
    fmt = meta["format"]
    return {
        "id": media["_id"],
        "image": {
            "sha256": sha256,
            "contentType": CONTENT_TYPES[fmt],
            "format": fmt,
            "width": meta["width"],
            "height": meta["height"],
            "size": meta["size"],
        },
        "description": media["description"],
        "version": int(media["_version"]),
        "createdAt": media["createdAt"],
        "updatedAt": media["updatedAt"],
    }


def evolve(state: ServiceState | None, event: PanelEvent) -> ServiceState:
    """Fold one event into the service's state (pure)."""
    updated_at = iso_ms(event.timestamp)
    if isinstance(event, ServiceCreated):
        _, _, entity_id = split_stream_id(event.originator_id)
        return ServiceState(
            tenant_id=event.tenant_id,
            id=entity_id,
            version=event.originator_version,
            details=dict(event.details),
            color=event.color,
            required_resources=list(event.required_resources),
            state=event.state,
            state_history=list(event.state_history),
            created_at=event.created_at,
            updated_at=updated_at,
        )
    if state is None:
        msg = f"{type(event).__name__} before ServiceCreated in {event.originator_id}"
        raise ValueError(msg)
    common: dict[str, Any] = {"version": event.originator_version, "updated_at": updated_at}
    if isinstance(event, ServiceDetailsChanged):
        return replace(state, details=dict(event.details), **common)
    if isinstance(event, ServicePresentationChanged):
        return replace(state, color=event.color, **common)
    if isinstance(event, ServiceResourcesSet):
        return replace(state, required_resources=list(event.required_resources), **common)
    if isinstance(event, ServiceBannerAdded):
        banner = {
            "id": event.media_id,
            "image": dict(event.image),
            "description": event.description,
            "version": 1,
            "createdAt": updated_at,
            "updatedAt": updated_at,
        }
        return replace(state, banners=[*state.banners, banner], **common)
    if isinstance(event, ServiceBannerReplaced):
        banners = [
            {
                **b,
                "image": dict(event.image),
                "description": event.description,
                "version": b["version"] + 1,
                "updatedAt": updated_at,
            }
            if b["id"] == event.media_id
            else b
            for b in state.banners
        ]
        return replace(state, banners=banners, **common)
    if isinstance(event, ServiceBannerRemoved):
        banners = [b for b in state.banners if b["id"] != event.media_id]
        return replace(state, banners=banners, **common)
    if isinstance(event, ServiceStateChanged):
        return replace(state, state=event.state, state_history=list(event.state_history), **common)
    msg = f"not a service event: {type(event).__name__}"
    raise TypeError(msg)


def removed_banner(before: Banner, removed_at: str) -> Banner:
    """A banner as its removal left it: its last change, the removal (`media_dto` of state
    `deleted` shows it so)."""
    return {**before, "version": before["version"] + 1, "updatedAt": removed_at}
