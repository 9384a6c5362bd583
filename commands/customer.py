"""The customer aggregate: commands in, decisions out (pure: time and ids come on the command)."""

from __future__ import annotations

from dataclasses import dataclass

from eventsourcing.domain import BaseAggregate

from commands.contact import email_key
from commands.context import Meta
from commands.errors import NotFound
from commands.lifecycle import check_version, first_history, next_history
from events.base import PanelEvent, stream_id
from events.customer import (
    CustomerDetailsChanged,
    CustomerErased,
    CustomerRegistered,
    CustomerState,
    CustomerStateChanged,
    Personal,
    StateEntry,
    evolve,
)
from events.timefmt import iso_ms

KIND = "customer"
NOUN = "customer"


@dataclass(frozen=True)
class RegisterCustomer:
    meta: Meta
    customer_id: str
    personal: Personal
    customer_type: str
    state: str
    state_history: list[StateEntry]
    created_at: str | None


@dataclass(frozen=True)
class UpdateCustomer:
    """Full replace of the customer's details and state (PUT)."""

    meta: Meta
    customer_id: str
    personal: Personal
    customer_type: str
    state: str
    state_history: list[StateEntry]
    expected_version: int | None


@dataclass(frozen=True)
class DeleteCustomer:
    """Soft delete: the customer becomes inactive; data and history stay."""

    meta: Meta
    customer_id: str
    expected_version: int | None


@dataclass(frozen=True)
class EraseCustomer:
    """GDPR erasure: the customer's personal data becomes unreadable everywhere (their key
    is deleted with the event), their email and phone are released. `reason` is recorded; it
    must hold no personal data."""

    meta: Meta
    customer_id: str
    reason: str


class Customer(BaseAggregate[str]):
    """Folds customer events with `events.customer.evolve`; decides with the methods below."""

    state: CustomerState

    def __init__(self) -> None:
        """The state comes from the creation event's `apply`."""

    def evolve(self, event: PanelEvent) -> None:
        self.state = evolve(getattr(self, "state", None), event)

    @classmethod
    def register(cls, cmd: RegisterCustomer) -> Customer:
        history = first_history(cmd.state, cmd.state_history, cmd.meta.at)
        return cls._create(
            CustomerRegistered,
            id=stream_id(KIND, cmd.meta.tenant_id, cmd.customer_id),
            personal=dict(cmd.personal),
            customer_type=cmd.customer_type,
            state=cmd.state,
            state_history=history,
            created_at=cmd.created_at or iso_ms(cmd.meta.at),
            **cmd.meta.event_fields(),
        )

    def update(self, cmd: UpdateCustomer) -> None:
        self._check_version(cmd.expected_version)
        if cmd.personal != self.state.personal or cmd.customer_type != self.state.customer_type:
            self.trigger_event(
                CustomerDetailsChanged,
                personal=dict(cmd.personal),
                customer_type=cmd.customer_type,
                **cmd.meta.event_fields(),
            )
        self._set_state(cmd.meta, cmd.state, cmd.state_history)

    def delete(self, cmd: DeleteCustomer) -> None:
        """Soft delete makes an active or archived customer inactive; a customer already
        `deleted` stays so (it must not take its released email and phone back)."""
        self._check_version(cmd.expected_version)
        if self.state.state != "deleted":
            self._set_state(cmd.meta, "inactive", [])

    def erase(self, cmd: EraseCustomer) -> bool:
        """Erase once; erasing an erased customer changes nothing. True if erased now."""
        if self.state.erased:
            return False
        self.trigger_event(CustomerErased, reason=cmd.reason, **cmd.meta.event_fields())
        return True

    def _set_state(self, meta: Meta, state: str, sent_history: list[StateEntry]) -> None:
        current = self.state
        history = next_history(current.state, current.state_history, state, sent_history, meta.at)
        if state != current.state or history != current.state_history:
            self.trigger_event(
                CustomerStateChanged, state=state, state_history=history, **meta.event_fields()
            )

    def _check_version(self, expected: int | None) -> None:
        if self.state.erased:
            msg = f"customer {self.state.id} was erased"
            raise NotFound(msg)
        check_version(NOUN, self.version, expected)


def unique_values(state: CustomerState | None) -> dict[str, str | None]:
    """The values no two customers of a tenant may share; a deleted customer holds none."""
    if state is None or state.state == "deleted" or state.erased:
        return {"email": None, "phone": None}
    email, phone = state.personal.get("email"), state.personal.get("phone")
    return {"email": email_key(email) if email else None, "phone": phone or None}
