"""Customer write routes: POST, PUT and DELETE under /api/v1/customer."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)
from starlette.responses import Response

from beeoclock.deps import ExpectedVersionDep, MetaDep
from beeoclock.ids import ENTITY_ID, RESERVED_IDS, entity_id, new_object_id
from beeoclock.text import printable
from commands import handlers
from commands.contact import normalize_email, normalize_phone
from commands.customer import DeleteCustomer, RegisterCustomer, UpdateCustomer
from commands.errors import FieldError, InvalidCommand
from events.customer import PERSONAL_FIELDS, Personal, StateEntry
from write_api.deps import ApplicationDep
from write_api.fields import Instant, State, StateEntryBody
from write_api.responses import entity_response

router = APIRouter(prefix="/api/v1/customer", tags=["customer"])

CustomerType = Literal["regular", "unregistered", "new", "anonymous"]


def _blank_is_absent(value: object) -> object:
    """`""` (or only spaces) counts as absent, as in the panel's forms."""
    return None if isinstance(value, str) and not value.strip() else value


Absent = BeforeValidator(_blank_is_absent)
Name = Annotated[
    str, StringConstraints(strip_whitespace=True, max_length=50), AfterValidator(printable)
]
Note = Annotated[
    str, Field(max_length=1000), AfterValidator(lambda v: printable(v, multiline=True))
]
Email = Annotated[str, Field(max_length=254), AfterValidator(normalize_email)]
Phone = Annotated[str, Field(max_length=32), AfterValidator(normalize_phone)]


class CustomerBody(BaseModel):
    """The CustomerDto as clients send it. Unknown fields are dropped, never stored; tenant,
    version and timestamps are the server's."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    id: str | None = Field(None, alias="_id", pattern=ENTITY_ID.pattern)
    customerType: CustomerType | None = "regular"  # noqa: N815
    firstName: Annotated[Name | None, Absent] = None  # noqa: N815
    lastName: Annotated[Name | None, Absent] = None  # noqa: N815
    email: Annotated[Email | None, Absent] = None
    phone: Annotated[Phone | None, Absent] = None
    note: Annotated[Note | None, Absent] = None
    state: State | None = "active"
    stateHistory: list[StateEntryBody] | None = Field(None, max_length=1000)  # noqa: N815
    createdAt: Instant | None = None  # noqa: N815

    @field_validator("id")
    @classmethod
    def _not_reserved(cls, value: str | None) -> str | None:
        if value in RESERVED_IDS:
            msg = f"{value!r} is reserved"
            raise ValueError(msg)
        return value

    @model_validator(mode="after")
    def _someone(self) -> CustomerBody:
        if not any(getattr(self, f) for f in ("firstName", "lastName", "email", "phone")):
            msg = "at least one of firstName, lastName, email or phone is required"
            raise ValueError(msg)
        return self

    def personal(self) -> Personal:
        return {f: (getattr(self, f) or None) for f in PERSONAL_FIELDS}

    def history(self) -> list[StateEntry]:
        return [{"state": e.state, "setAt": e.setAt} for e in self.stateHistory or []]


@router.post("", status_code=201)
def create_customer(body: CustomerBody, meta: MetaDep, app: ApplicationDep) -> Response:
    customer_id = body.id or new_object_id()
    outcome = handlers.register_customer(
        app,
        RegisterCustomer(
            meta=meta,
            customer_id=customer_id,
            personal=body.personal(),
            customer_type=body.customerType or "regular",
            state=body.state or "active",
            state_history=body.history(),
            created_at=body.createdAt,
        ),
    )
    return entity_response(outcome.state.to_dto(), 201, outcome.position)


@router.put("/{customer_id}")
def update_customer(
    customer_id: str,
    body: CustomerBody,
    meta: MetaDep,
    app: ApplicationDep,
    expected_version: ExpectedVersionDep,
) -> Response:
    entity_id(customer_id, "customer")
    if body.id is not None and body.id != customer_id:
        msg = "_id can't change"
        raise InvalidCommand(msg, [FieldError("_id", "must equal the id in the path")])
    outcome = handlers.update_customer(
        app,
        UpdateCustomer(
            meta=meta,
            customer_id=customer_id,
            personal=body.personal(),
            customer_type=body.customerType or "regular",
            state=body.state or "active",
            state_history=body.history(),
            expected_version=expected_version,
        ),
    )
    return entity_response(outcome.state.to_dto(), 200, outcome.position)


@router.delete("/{customer_id}")
def delete_customer(
    customer_id: str, meta: MetaDep, app: ApplicationDep, expected_version: ExpectedVersionDep
) -> Response:
    outcome = handlers.delete_customer(
        app,
        DeleteCustomer(
            meta=meta,
            customer_id=entity_id(customer_id, "customer"),
            expected_version=expected_version,
        ),
    )
    return entity_response(outcome.state.to_dto(), 200, outcome.position)
