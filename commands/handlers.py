"""One handler per customer command: load, decide, save, return (the save loop, with the
uniqueness records of email and phone, is commands/saving.py)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from commands import saving
from commands.application import PanelApplication
from commands.context import Meta
from commands.customer import (
    KIND,
    NOUN,
    Customer,
    DeleteCustomer,
    EraseCustomer,
    RegisterCustomer,
    UpdateCustomer,
    unique_values,
)
from events.base import stream_id
from events.customer import CustomerState
from events.pii import FORGET


@dataclass(frozen=True)
class CustomerOutcome:
    state: CustomerState
    position: int | None


def register_customer(app: PanelApplication, cmd: RegisterCustomer) -> CustomerOutcome:
    customer, position = saving.create(
        app, cmd.meta, cmd.customer_id, NOUN, lambda: Customer.register(cmd), unique_values
    )
    return CustomerOutcome(customer.state, position)


def update_customer(app: PanelApplication, cmd: UpdateCustomer) -> CustomerOutcome:
    return _change(app, cmd.meta, cmd.customer_id, lambda customer: customer.update(cmd))


def delete_customer(app: PanelApplication, cmd: DeleteCustomer) -> CustomerOutcome:
    return _change(app, cmd.meta, cmd.customer_id, lambda customer: customer.delete(cmd))


def _change(
    app: PanelApplication, meta: Meta, customer_id: str, decide: Callable[[Customer], None]
) -> CustomerOutcome:
    stream = stream_id(KIND, meta.tenant_id, customer_id)
    customer, _, position = saving.change(
        app, meta, stream, customer_id, NOUN, decide, unique_values
    )
    return CustomerOutcome(customer.state, position)


def erase_customer(app: PanelApplication, cmd: EraseCustomer) -> CustomerOutcome:
    """Erase the customer's personal data: the erasure event, the release of their email and
    phone, and the destruction of their data key commit together (see events/pii.py)."""
    stream = stream_id(KIND, cmd.meta.tenant_id, cmd.customer_id)
    customer: Customer
    customer, _, position = saving.change(
        app,
        cmd.meta,
        stream,
        cmd.customer_id,
        NOUN,
        lambda customer: customer.erase(cmd),
        unique_values,
        also=[(FORGET, (cmd.meta.tenant_id, cmd.customer_id))],
    )
    return CustomerOutcome(customer.state, position)


def load_customer(app: PanelApplication, tenant_id: str, customer_id: str) -> Customer:
    customer: Customer = saving.load(
        app, stream_id(KIND, tenant_id, customer_id), NOUN, customer_id
    )
    return customer
