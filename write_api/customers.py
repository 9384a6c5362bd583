"""Customer write routes: POST, PUT and DELETE under /api/v1/customer."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.responses import Response

from beeoclock.deps import ExpectedVersionDep, MetaDep
from commands import handlers
from commands.customer import DeleteCustomer, RegisterCustomer, UpdateCustomer
from events.customer import PERSONAL_FIELDS, Personal, StateEntry
from write_api.deps import ApplicationDep, new_object_id
from write_api.responses import entity_response

router = APIRouter(prefix="/api/v1/customer", tags=["customer"])

ENTITY_ID = r"^[A-Za-z0-9_-]{1,64}$"
CustomerType = Literal["regular", "unregistered", "new", "anonymous"]
State = Literal["active", "inactive", "archived", "deleted"]


class StateEntryBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    state: State
    setAt: str = Field(max_length=40)  # noqa: N815 - the wire name


class CustomerBody(BaseModel):
    """The CustomerDto as clients send it. Unknown fields are dropped, never stored; tenant,
    version and timestamps are the server's."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    id: str | None = Field(None, alias="_id", pattern=ENTITY_ID)
    customerType: CustomerType | None = "regular"  # noqa: N815
    firstName: str | None = Field(None, max_length=50)  # noqa: N815
    lastName: str | None = Field(None, max_length=50)  # noqa: N815
    email: str | None = Field(None, max_length=254)
    phone: str | None = Field(None, max_length=32)
    note: str | None = Field(None, max_length=1000)
    state: State | None = "active"
    stateHistory: list[StateEntryBody] | None = Field(None, max_length=1000)  # noqa: N815
    createdAt: str | None = Field(None, max_length=40)  # noqa: N815

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
        app, DeleteCustomer(meta=meta, customer_id=customer_id, expected_version=expected_version)
    )
    return entity_response(outcome.state.to_dto(), 200, outcome.position)
