"""One handler per command: load, decide, save, return."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError

from commands.application import PanelApplication
from commands.customer import KIND, Customer, DeleteCustomer, RegisterCustomer, UpdateCustomer
from commands.errors import Conflict, NotFound
from events.base import stream_id
from events.customer import CustomerState

_RETRIES = 5


@dataclass(frozen=True)
class CustomerOutcome:
    state: CustomerState
    position: int | None


def register_customer(app: PanelApplication, cmd: RegisterCustomer) -> CustomerOutcome:
    customer = Customer.register(cmd)
    try:
        position = app.commit(customer)
    except IntegrityError:
        # The id is taken, unless by this very request: a retry after a lost commit
        # acknowledgement (the store retries inserts), or the client repeating its request.
        existing = load_customer(app, cmd.meta.tenant_id, cmd.customer_id)
        first = next(iter(app.events.get(existing.id, lte=1)), None)
        if getattr(first, "request_id", None) != cmd.meta.request_id:
            msg = f"a customer with _id {cmd.customer_id} already exists"
            raise Conflict(msg) from None
        return CustomerOutcome(existing.state, None)
    return CustomerOutcome(customer.state, position)


def update_customer(app: PanelApplication, cmd: UpdateCustomer) -> CustomerOutcome:
    return _change(
        app,
        cmd.meta.tenant_id,
        cmd.customer_id,
        cmd.expected_version,
        lambda customer: customer.update(cmd),
    )


def delete_customer(app: PanelApplication, cmd: DeleteCustomer) -> CustomerOutcome:
    return _change(
        app,
        cmd.meta.tenant_id,
        cmd.customer_id,
        cmd.expected_version,
        lambda customer: customer.delete(cmd),
    )


def _change(
    app: PanelApplication,
    tenant_id: str,
    customer_id: str,
    expected_version: int | None,
    decide: Callable[[Customer], None],
) -> CustomerOutcome:
    """Load, decide, save; a concurrent writer makes us decide again on the newer state,
    unless the caller pinned a version (If-Match), which then is stale."""
    for _ in range(_RETRIES):
        customer = load_customer(app, tenant_id, customer_id)
        decide(customer)
        try:
            position = app.commit(customer)
        except IntegrityError:
            if expected_version is not None:
                msg = "the customer was changed by another request"
                raise Conflict(msg) from None
            continue
        return CustomerOutcome(customer.state, position)
    msg = "the customer is being changed by other requests; try again"
    raise Conflict(msg)


def load_customer(app: PanelApplication, tenant_id: str, customer_id: str) -> Customer:
    try:
        customer: Customer = app.repository.get(stream_id(KIND, tenant_id, customer_id))
    except AggregateNotFoundError:
        msg = f"customer {customer_id} not found"
        raise NotFound(msg) from None
    return customer
