"""One handler per command: load, decide, save, return.

Every save carries the entity's events and its uniqueness records (commands/uniqueness.py)
in one transaction. A save that loses a race (another request took the same version of the
entity or of a uniqueness record) is decided again on the newer state, so the loser ends in
a clear 409 rather than a duplicate."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError

from commands import uniqueness
from commands.application import PanelApplication
from commands.context import Meta
from commands.customer import (
    KIND,
    NOUN,
    Customer,
    DeleteCustomer,
    RegisterCustomer,
    UpdateCustomer,
    unique_values,
)
from commands.errors import Conflict, NotFound
from events.base import stream_id
from events.customer import CustomerState

_RETRIES = 8


@dataclass(frozen=True)
class CustomerOutcome:
    state: CustomerState
    position: int | None


def register_customer(app: PanelApplication, cmd: RegisterCustomer) -> CustomerOutcome:
    for _ in range(_RETRIES):
        customer = Customer.register(cmd)
        records = uniqueness.changes(
            app, cmd.meta, cmd.customer_id, {}, unique_values(customer.state), NOUN
        )
        try:
            position = app.commit(customer, *records)
        except IntegrityError:
            existing = _find_customer(app, cmd.meta.tenant_id, cmd.customer_id)
            if existing is None:
                continue  # a uniqueness record moved under us: decide again
            # The id is taken, unless by this very request: a retry after a lost commit
            # acknowledgement (the store retries inserts), or the client repeating itself.
            first = next(iter(app.events.get(existing.id, lte=1)), None)
            if getattr(first, "request_id", None) != cmd.meta.request_id:
                msg = f"a customer with _id {cmd.customer_id} already exists"
                raise Conflict(msg) from None
            return CustomerOutcome(existing.state, None)
        return CustomerOutcome(customer.state, position)
    raise _busy()


def update_customer(app: PanelApplication, cmd: UpdateCustomer) -> CustomerOutcome:
    return _change(app, cmd.meta, cmd.customer_id, lambda customer: customer.update(cmd))


def delete_customer(app: PanelApplication, cmd: DeleteCustomer) -> CustomerOutcome:
    return _change(app, cmd.meta, cmd.customer_id, lambda customer: customer.delete(cmd))


def _change(
    app: PanelApplication, meta: Meta, customer_id: str, decide: Callable[[Customer], None]
) -> CustomerOutcome:
    """Load, decide, save. After a lost race the decision is made again on the newer state;
    a command pinned to a version (If-Match) then fails its version check (409)."""
    for _ in range(_RETRIES):
        customer = load_customer(app, meta.tenant_id, customer_id)
        before = unique_values(customer.state)
        decide(customer)
        records = uniqueness.changes(
            app, meta, customer_id, before, unique_values(customer.state), NOUN
        )
        try:
            position = app.commit(customer, *records)
        except IntegrityError:
            done = _applied_by(app, meta.request_id, customer.id, customer.version)
            if done is not None:
                return CustomerOutcome(done.state, None)
            continue
        return CustomerOutcome(customer.state, position)
    raise _busy()


def _applied_by(
    app: PanelApplication, request_id: str, stream: str, decided_version: int
) -> Customer | None:
    """The customer, if this very request's events were stored after all: the store retries an
    insert whose commit acknowledgement was lost, and the retry then collides with itself."""
    customer: Customer = app.repository.get(stream)
    if customer.version < decided_version:
        return None
    event = next(iter(app.events.get(stream, gt=decided_version - 1, lte=decided_version)), None)
    return customer if getattr(event, "request_id", None) == request_id else None


def _busy() -> Conflict:
    return Conflict("the customer is being changed by other requests; try again")


def _find_customer(app: PanelApplication, tenant_id: str, customer_id: str) -> Customer | None:
    try:
        return load_customer(app, tenant_id, customer_id)
    except NotFound:
        return None


def load_customer(app: PanelApplication, tenant_id: str, customer_id: str) -> Customer:
    try:
        customer: Customer = app.repository.get(stream_id(KIND, tenant_id, customer_id))
    except AggregateNotFoundError:
        msg = f"customer {customer_id} not found"
        raise NotFound(msg) from None
    return customer
