"""Service write routes: POST, PUT, PUT required-resources and DELETE under /api/v1/service.

The bodies accept the ServiceDto as the panel's form sends it, partly filled: nulls and missing
parts get their defaults (VARIABLE durations, no break, a prepayment policy of "not required",
no schedules, no order). Field rules answer 400 with field errors; what needs the stored
service (a PUT that removes every language or duration version, a changed `_id`) answers 422.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal

from fastapi import APIRouter
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    RootModel,
    field_validator,
    model_validator,
)
from starlette.responses import Response

from beeoclock.deps import ExpectedVersionDep, MetaDep
from beeoclock.ids import ENTITY_ID, RESERVED_IDS, entity_id, new_object_id
from beeoclock.text import printable
from commands import service_handlers as handlers
from commands.service import (
    CURRENCIES,
    LANGUAGES,
    CreateService,
    DeleteService,
    SetRequiredResources,
    UpdateService,
)
from events.service import Details, Resource, StateEntry
from write_api.deps import ApplicationDep
from write_api.fields import Instant, State, StateEntryBody
from write_api.responses import entity_response

router = APIRouter(prefix="/api/v1/service", tags=["service"])

DAY_S = 86_400
MAX_DURATION_S = 30 * DAY_S
MAX_ORDER = 1_000_000_000
MAX_PRICE = 1_000_000_000
MAX_DECIMAL_PLACES = 4
_COLOR = re.compile(r"^#(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6})$")


def _null_is(default: Any) -> BeforeValidator:
    """The form sends null for a field the user left alone: it means the default."""
    return BeforeValidator(lambda value: default if value is None else value)


def _not_bool(value: object) -> object:
    if isinstance(value, bool):
        msg = "must be a number, not a boolean"
        raise ValueError(msg)  # noqa: TRY004 (pydantic reports ValueError as a field error)
    return value


def _whole_if_integral(value: float) -> float:
    """60.0 is 60: prices come back as the client's numbers."""
    return int(value) if value.is_integer() else value


def _amount_text(value: object) -> str:
    """A non-negative number kept as text, as the DTO has it ("0", "12.5")."""
    if value is None:
        return "0"
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        msg = "must be a number"
        raise ValueError(msg)  # noqa: TRY004
    text = str(value).strip()
    try:
        number = Decimal(text) if len(text) <= 32 else None
    except InvalidOperation:
        number = None
    if number is None or not number.is_finite():
        msg = "must be a number"
        raise ValueError(msg)
    # bounded in value AND in digits: "1e-999999" is tiny but a million characters long
    places = -int(number.normalize().as_tuple().exponent)
    if number < 0 or number > MAX_PRICE or places > MAX_DECIMAL_PLACES:
        msg = f"must be a number from 0 to {MAX_PRICE} with at most {MAX_DECIMAL_PLACES} decimals"
        raise ValueError(msg)
    text = format(number.normalize(), "f")
    return "0" if text in ("-0", "0.0") else text


def _flag(value: object) -> object:
    """`active` is 0 or 1; null means the default (1), and booleans are read as such."""
    if value is None:
        return 1
    return int(value) if isinstance(value, bool) else value


def _language(value: str) -> str:
    if value not in LANGUAGES:
        msg = f"must be one of {', '.join(LANGUAGES)}"
        raise ValueError(msg)
    return value


def _currency(value: str) -> str:
    code = value.strip().upper()
    if code not in CURRENCIES:
        msg = "must be an ISO 4217 currency code such as PLN, EUR, USD, DKK or UAH"
        raise ValueError(msg)
    return code


def _color(value: str | None) -> str | None:
    if value is None or not value.strip():
        return None
    if not _COLOR.fullmatch(value.strip()):
        msg = "must be a hex colour such as #ff8800 or #f80"
        raise ValueError(msg)
    return value.strip()


Whole = Annotated[int, BeforeValidator(_not_bool)]
Line = Annotated[str, AfterValidator(printable), AfterValidator(str.strip)]
Text = Annotated[str, AfterValidator(lambda v: printable(v, multiline=True))]
Language = Annotated[str, AfterValidator(_language)]
Currency = Annotated[str, Field(max_length=8), AfterValidator(_currency)]
Amount = Annotated[str, BeforeValidator(_amount_text)]
Color = Annotated[str | None, Field(max_length=16), AfterValidator(_color)]
Price = Annotated[
    float,
    BeforeValidator(_not_bool),
    Field(ge=0, le=MAX_PRICE, allow_inf_nan=False),
    AfterValidator(_whole_if_integral),
]


class _Part(BaseModel):
    """Unknown fields (the DTOs' `object` tags among them) are dropped, never stored."""

    model_config = ConfigDict(extra="ignore")


class LanguageVersionBody(_Part):
    title: Annotated[Line, Field(max_length=200), _null_is("")] = ""
    description: Annotated[Text, Field(max_length=5000), _null_is("")] = ""
    language: Language
    active: Annotated[Literal[0, 1], BeforeValidator(_flag)] = 1


class PriceBody(_Part):
    price: Price
    currency: Currency
    preferredLanguages: Annotated[  # noqa: N815
        list[Language], Field(max_length=len(LANGUAGES)), _null_is([])
    ] = []

    @field_validator("preferredLanguages")
    @classmethod
    def _distinct(cls, languages: list[str]) -> list[str]:
        if len(set(languages)) != len(languages):
            msg = "must not repeat a language"
            raise ValueError(msg)
        return languages


class DurationVersionBody(_Part):
    breakInSeconds: Annotated[Whole, Field(ge=0, le=MAX_DURATION_S), _null_is(0)] = 0  # noqa: N815
    durationInSeconds: Annotated[Whole, Field(gt=0, le=MAX_DURATION_S)]  # noqa: N815
    prices: list[PriceBody] = Field(min_length=1, max_length=20)


class DurationConfigurationBody(_Part):
    durationVersionType: Annotated[  # noqa: N815
        Literal["RANGE", "VARIABLE"], _null_is("VARIABLE")
    ] = "VARIABLE"


class ConfigurationBody(_Part):
    duration: Annotated[DurationConfigurationBody, _null_is({})] = Field(
        default_factory=DurationConfigurationBody
    )


class PrepaymentPolicyBody(_Part):
    isRequired: Annotated[bool, _null_is(False)] = False  # noqa: N815
    isPercentage: Annotated[bool, _null_is(False)] = False  # noqa: N815
    value: Amount = "0"
    minimalCancelTime: Amount = "0"  # noqa: N815

    @model_validator(mode="after")
    def _percentage(self) -> PrepaymentPolicyBody:
        if self.isPercentage and Decimal(self.value) > 100:
            msg = "value is a percentage (isPercentage) and must be from 0 to 100"
            raise ValueError(msg)
        return self


class ScheduleBody(_Part):
    workDays: list[Annotated[Whole, Field(ge=1, le=7)]] = Field(  # noqa: N815
        min_length=1, max_length=7
    )
    startInSeconds: Annotated[Whole, Field(ge=0, le=DAY_S)]  # noqa: N815
    endInSeconds: Annotated[Whole, Field(ge=0, le=DAY_S)]  # noqa: N815

    @field_validator("workDays")
    @classmethod
    def _distinct_days(cls, days: list[int]) -> list[int]:
        if len(set(days)) != len(days):
            msg = "must not repeat a day"
            raise ValueError(msg)
        return days

    @model_validator(mode="after")
    def _start_before_end(self) -> ScheduleBody:
        if self.startInSeconds >= self.endInSeconds:
            msg = "startInSeconds must be before endInSeconds"
            raise ValueError(msg)
        return self


class PresentationBody(_Part):
    """Only the colour: banners are server-managed (the media routes), whatever is sent."""

    color: Color = None


class RequiredResourceBody(_Part):
    resourceId: str = Field(pattern=ENTITY_ID.pattern)  # noqa: N815
    quantity: Annotated[Whole, Field(ge=1, le=10_000)] = 1


def _distinct_resources(resources: list[RequiredResourceBody]) -> list[RequiredResourceBody]:
    ids = [r.resourceId for r in resources]
    if len(set(ids)) != len(ids):
        msg = "must not name a resource twice"
        raise ValueError(msg)
    return resources


Resources = Annotated[
    list[RequiredResourceBody], Field(max_length=100), AfterValidator(_distinct_resources)
]


class ResourcesBody(RootModel[Resources]):
    """`PUT /{id}/required-resources`: `[{resourceId, quantity}]` (quantity >= 1, ids unique)."""

    @model_validator(mode="before")
    @classmethod
    def _unwrap(cls, value: object) -> object:
        """The docs send a bare list; `{"requiredResources": [...]}` is read the same."""
        if isinstance(value, dict) and set(value) == {"requiredResources"}:
            return value["requiredResources"]
        return value


class ServiceBody(_Part):
    """The ServiceDto of a PUT (a full replace). Tenant, version, timestamps and banners are
    the server's. Empty language or duration versions pass here and are refused by the
    service itself (422: a service can't lose them all)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    id: str | None = Field(None, alias="_id", pattern=ENTITY_ID.pattern)
    state: Annotated[State, _null_is("active")] = "active"
    stateHistory: list[StateEntryBody] | None = Field(None, max_length=1000)  # noqa: N815
    order: Annotated[Whole | None, Field(ge=0, le=MAX_ORDER)] = None
    configuration: Annotated[ConfigurationBody, _null_is({})] = Field(
        default_factory=ConfigurationBody
    )
    prepaymentPolicy: Annotated[PrepaymentPolicyBody, _null_is({})] = Field(  # noqa: N815
        default_factory=PrepaymentPolicyBody
    )
    languageVersions: Annotated[  # noqa: N815
        list[LanguageVersionBody], Field(max_length=len(LANGUAGES)), _null_is([])
    ] = []
    durationVersions: Annotated[  # noqa: N815
        list[DurationVersionBody], Field(max_length=50), _null_is([])
    ] = []
    presentation: Annotated[PresentationBody, _null_is({})] = Field(
        default_factory=PresentationBody
    )
    schedules: Annotated[list[ScheduleBody], Field(max_length=100), _null_is([])] = []
    requiredResources: Resources | None = None  # noqa: N815

    @field_validator("languageVersions")
    @classmethod
    def _titled_and_distinct(cls, versions: list[LanguageVersionBody]) -> list[LanguageVersionBody]:
        if versions and not any(v.title for v in versions):
            msg = "needs a language version with a title"
            raise ValueError(msg)
        languages = [v.language for v in versions]
        if len(set(languages)) != len(languages):
            msg = "must not have two versions in one language"
            raise ValueError(msg)
        return versions

    def details(self) -> Details:
        return {
            "order": self.order,
            "configuration": {
                "duration": {"durationVersionType": self.configuration.duration.durationVersionType}
            },
            "prepaymentPolicy": self.prepaymentPolicy.model_dump(),
            "languageVersions": [v.model_dump() for v in self.languageVersions],
            "durationVersions": [v.model_dump() for v in self.durationVersions],
            "schedules": [s.model_dump() for s in self.schedules],
        }

    def resources(self) -> list[Resource] | None:
        if self.requiredResources is None:
            return None
        return [r.model_dump() for r in self.requiredResources]

    def history(self) -> list[StateEntry]:
        return [{"state": e.state, "setAt": e.setAt} for e in self.stateHistory or []]


class NewServiceBody(ServiceBody):
    """The ServiceDto of a POST: a service starts with a titled language version and a
    priced duration version (400 otherwise)."""

    languageVersions: Annotated[  # noqa: N815
        list[LanguageVersionBody], Field(min_length=1, max_length=len(LANGUAGES))
    ]
    durationVersions: list[DurationVersionBody] = Field(min_length=1, max_length=50)  # noqa: N815
    createdAt: Instant | None = None  # noqa: N815

    @field_validator("id")
    @classmethod
    def _not_reserved(cls, value: str | None) -> str | None:
        if value in RESERVED_IDS:
            msg = f"{value!r} is reserved"
            raise ValueError(msg)
        return value


@router.post("", status_code=201)
def create_service(body: NewServiceBody, meta: MetaDep, app: ApplicationDep) -> Response:
    outcome = handlers.create_service(
        app,
        CreateService(
            meta=meta,
            service_id=body.id or new_object_id(),
            details=body.details(),
            color=body.presentation.color,
            required_resources=body.resources() or [],
            state=body.state,
            state_history=body.history(),
            created_at=body.createdAt,
        ),
    )
    return entity_response(outcome.state.to_dto(), 201, outcome.position)


@router.put("/{service_id}")
def update_service(
    service_id: str,
    body: ServiceBody,
    meta: MetaDep,
    app: ApplicationDep,
    expected_version: ExpectedVersionDep,
) -> Response:
    outcome = handlers.update_service(
        app,
        UpdateService(
            meta=meta,
            service_id=entity_id(service_id, "service"),
            sent_id=body.id,
            details=body.details(),
            color=body.presentation.color,
            required_resources=body.resources(),
            state=body.state,
            state_history=body.history(),
            expected_version=expected_version,
        ),
    )
    return entity_response(outcome.state.to_dto(), 200, outcome.position)


@router.put("/{service_id}/required-resources", status_code=204)
def set_required_resources(
    service_id: str,
    body: ResourcesBody,
    meta: MetaDep,
    app: ApplicationDep,
    expected_version: ExpectedVersionDep,
) -> Response:
    outcome = handlers.set_required_resources(
        app,
        SetRequiredResources(
            meta=meta,
            service_id=entity_id(service_id, "service"),
            required_resources=[r.model_dump() for r in body.root],
            expected_version=expected_version,
        ),
    )
    headers = {"ETag": f'"{outcome.state.version}"'}
    if outcome.position is not None:
        headers["X-Event-Position"] = str(outcome.position)
    return Response(status_code=204, headers=headers)


@router.delete("/{service_id}")
def delete_service(
    service_id: str, meta: MetaDep, app: ApplicationDep, expected_version: ExpectedVersionDep
) -> Response:
    outcome = handlers.delete_service(
        app,
        DeleteService(
            meta=meta,
            service_id=entity_id(service_id, "service"),
            expected_version=expected_version,
        ),
    )
    return entity_response(outcome.state.to_dto(), 200, outcome.position)
