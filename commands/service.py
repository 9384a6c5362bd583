"""The service aggregate: commands in, decisions out (pure: time and ids come on the command).

Field rules (a title, durations in whole seconds, known currencies...) are checked where the
request is read (write_api/services.py, 400). The aggregate decides what needs the current
state: a PUT may not remove every language or duration version (422), the id can't change
(422), a stale If-Match is a conflict (409), a banner to remove must exist (404), and a
service holds at most MAX_BANNERS banners (422).
"""

from __future__ import annotations

from dataclasses import dataclass

from eventsourcing.domain import BaseAggregate

from commands.context import Meta
from commands.errors import FieldError, NotFound, RuleViolation
from commands.lifecycle import check_version, first_history, next_history
from events.base import PanelEvent, stream_id
from events.service import (
    Banner,
    Details,
    ImageMeta,
    Resource,
    ServiceBannerAdded,
    ServiceBannerRemoved,
    ServiceBannerReplaced,
    ServiceCreated,
    ServiceDetailsChanged,
    ServicePresentationChanged,
    ServiceResourcesSet,
    ServiceState,
    ServiceStateChanged,
    StateEntry,
    evolve,
    removed_banner,
)
from events.timefmt import iso_ms

KIND = "service"
NOUN = "service"
MAX_BANNERS = 10

#: The panel's languages (`LanguageCodeEnum`); add one here to accept it everywhere.
LANGUAGES = ("en", "pl", "uk", "da")
_ISO_4217 = """
    AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BRL BSD BTN BWP
    BYN BZD CAD CDF CHF CLP CNY COP CRC CUC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD FKP
    GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES KGS
    KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR
    MWK MXN MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF
    SAR SBD SCR SDG SEK SGD SHP SLE SLL SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD
    TWD TZS UAH UGX USD UYU UZS VED VES VND VUV WST XAF XCD XCG XOF XPF YER ZAR ZMW ZWG ZWL
"""
#: ISO 4217 currencies in use (funds, precious metals and test codes left out).
CURRENCIES = frozenset(_ISO_4217.split())


@dataclass(frozen=True)
class CreateService:
    meta: Meta
    service_id: str
    details: Details
    color: str | None
    required_resources: list[Resource]
    state: str
    state_history: list[StateEntry]
    created_at: str | None


@dataclass(frozen=True)
class UpdateService:
    """Full replace (PUT) of the details, colour and state. Banners are server-managed and
    stay; `required_resources` None keeps them (they have their own endpoint)."""

    meta: Meta
    service_id: str
    sent_id: str | None
    details: Details
    color: str | None
    required_resources: list[Resource] | None
    state: str
    state_history: list[StateEntry]
    expected_version: int | None


@dataclass(frozen=True)
class SetRequiredResources:
    meta: Meta
    service_id: str
    required_resources: list[Resource]
    expected_version: int | None


@dataclass(frozen=True)
class DeleteService:
    """Soft delete: the service's state becomes `deleted`; data and history stay."""

    meta: Meta
    service_id: str
    expected_version: int | None


@dataclass(frozen=True)
class PutServiceBanner:
    """A banner image: a new banner, or a new image for the banner `media_id` if the service
    has one (same id, same position). The bytes are already in the blob store."""

    meta: Meta
    service_id: str
    media_id: str
    image: ImageMeta
    description: str | None
    expected_version: int | None


@dataclass(frozen=True)
class RemoveServiceBanner:
    meta: Meta
    service_id: str
    media_id: str
    expected_version: int | None


class Service(BaseAggregate[str]):
    """Folds service events with `events.service.evolve`; decides with the methods below."""

    state: ServiceState

    def __init__(self) -> None:
        """The state comes from the creation event's `apply`."""

    def evolve(self, event: PanelEvent) -> None:
        self.state = evolve(getattr(self, "state", None), event)

    @classmethod
    def create(cls, cmd: CreateService) -> Service:
        _check_versions(cmd.details)
        history = first_history(cmd.state, cmd.state_history, cmd.meta.at)
        return cls._create(
            ServiceCreated,
            id=stream_id(KIND, cmd.meta.tenant_id, cmd.service_id),
            details=dict(cmd.details),
            color=cmd.color,
            required_resources=list(cmd.required_resources),
            state=cmd.state,
            state_history=history,
            created_at=cmd.created_at or iso_ms(cmd.meta.at),
            **cmd.meta.event_fields(),
        )

    def update(self, cmd: UpdateService) -> None:
        self._check_version(cmd.expected_version)
        if cmd.sent_id is not None and cmd.sent_id != self.state.id:
            msg = "the _id of a service can't change"
            raise RuleViolation(msg, [FieldError("_id", "can't change", f"value: {cmd.sent_id!r}")])
        _check_versions(cmd.details)
        if cmd.details != self.state.details:
            self.trigger_event(
                ServiceDetailsChanged, details=dict(cmd.details), **cmd.meta.event_fields()
            )
        if cmd.color != self.state.color:
            self.trigger_event(
                ServicePresentationChanged, color=cmd.color, **cmd.meta.event_fields()
            )
        if cmd.required_resources is not None:
            self._set_resources(cmd.meta, cmd.required_resources)
        self._set_state(cmd.meta, cmd.state, cmd.state_history)

    def set_required_resources(self, cmd: SetRequiredResources) -> None:
        self._check_version(cmd.expected_version)
        self._set_resources(cmd.meta, cmd.required_resources)

    def delete(self, cmd: DeleteService) -> None:
        self._check_version(cmd.expected_version)
        self._set_state(cmd.meta, "deleted", [])

    def check_banner(self, media_id: str, expected_version: int | None) -> None:
        """Whether banner `media_id` may be put: decided before the upload is decoded, so a
        request that must fail costs no decoding and leaves no blob."""
        self._check_version(expected_version)
        if self.state.state == "deleted":
            msg = "a deleted service can't get banners"
            raise RuleViolation(msg, [FieldError("file", "the service is deleted")])
        if self.state.banner(media_id) is None and len(self.state.banners) >= MAX_BANNERS:
            msg = f"a service has at most {MAX_BANNERS} banners; replace or remove one"
            raise RuleViolation(msg, [FieldError("file", "too many banners")])

    def put_banner(self, cmd: PutServiceBanner) -> Banner:
        """Returns the banner as it now is."""
        self.check_banner(cmd.media_id, cmd.expected_version)
        existing = self.state.banner(cmd.media_id)
        fields = {
            "media_id": cmd.media_id,
            "image": dict(cmd.image),
            **cmd.meta.event_fields(),
        }
        if existing is None:
            self.trigger_event(ServiceBannerAdded, description=cmd.description, **fields)
        else:
            # A replacement without a description keeps the banner's.
            description = existing["description"] if cmd.description is None else cmd.description
            if existing["image"] != cmd.image or description != existing["description"]:
                self.trigger_event(ServiceBannerReplaced, description=description, **fields)
        banner = self.state.banner(cmd.media_id)
        assert banner is not None
        return banner

    def remove_banner(self, cmd: RemoveServiceBanner) -> Banner:
        """Returns the banner as removed. NotFound for one the service does not have (the
        handler answers a repeated removal from the history: commands/service_handlers.py)."""
        self._check_version(cmd.expected_version)
        banner = self.state.banner(cmd.media_id)
        if banner is None:
            msg = f"media {cmd.media_id} not found in service {self.state.id}"
            raise NotFound(msg)
        self.trigger_event(ServiceBannerRemoved, media_id=cmd.media_id, **cmd.meta.event_fields())
        return removed_banner(banner, self.state.updated_at)

    def _set_resources(self, meta: Meta, resources: list[Resource]) -> None:
        if resources != self.state.required_resources:
            self.trigger_event(
                ServiceResourcesSet, required_resources=list(resources), **meta.event_fields()
            )

    def _set_state(self, meta: Meta, state: str, sent_history: list[StateEntry]) -> None:
        current = self.state
        history = next_history(current.state, current.state_history, state, sent_history, meta.at)
        if state != current.state or history != current.state_history:
            self.trigger_event(
                ServiceStateChanged, state=state, state_history=history, **meta.event_fields()
            )

    def _check_version(self, expected: int | None) -> None:
        check_version(NOUN, self.version, expected)


def _check_versions(details: Details) -> None:
    """Whatever else changes, a service keeps a language version and a duration version."""
    missing = [
        FieldError(name, "can't be empty: a service needs at least one")
        for name in ("languageVersions", "durationVersions")
        if not details.get(name)
    ]
    if missing:
        names = " and ".join(e.field for e in missing)
        msg = f"{names} can't be removed: a service needs at least one of each"
        raise RuleViolation(msg, missing)


def unique_values(state: ServiceState | None) -> dict[str, str | None]:
    """The values no two services of a tenant may share; a deleted service holds none."""
    if state is None or state.state == "deleted" or state.order is None:
        return {"order": None}
    return {"order": str(state.order)}
