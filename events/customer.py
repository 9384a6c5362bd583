"""Customer events and the customer's state, folded from them.

The personal fields (names, email, phone, note) travel together in one `personal` mapping on
the events that carry them, so that one place can protect them (per-customer encryption).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

from events.base import PanelCreated, PanelEvent
from events.pii import ERASED
from events.timefmt import iso_ms

PERSONAL_FIELDS = ("firstName", "lastName", "email", "phone", "note")

Personal = dict[str, str | None]
StateEntry = dict[str, str]


@dataclass(frozen=True)
class CustomerRegistered(PanelCreated):
    #: sealed with the customer's own key when stored (events/pii.py)
    personal_data: ClassVar[tuple[str, ...]] = ("personal",)

    personal: Personal
    customer_type: str
    state: str
    state_history: list[StateEntry]
    created_at: str


@dataclass(frozen=True)
class CustomerDetailsChanged(PanelEvent):
    """The personal details or the type changed; carries the full new details."""

    personal_data: ClassVar[tuple[str, ...]] = ("personal",)

    personal: Personal
    customer_type: str


@dataclass(frozen=True)
class CustomerStateChanged(PanelEvent):
    state: str
    state_history: list[StateEntry]


@dataclass(frozen=True)
class CustomerErased(PanelEvent):
    """The customer's personal data was erased (GDPR): their data key is deleted in the same
    transaction, so every sealed copy of it is unreadable. Who (`actor`), when and why; no
    personal data."""

    reason: str


CUSTOMER_EVENTS: tuple[type[PanelEvent], ...] = (
    CustomerRegistered,
    CustomerDetailsChanged,
    CustomerStateChanged,
    CustomerErased,
)


@dataclass(frozen=True)
class CustomerState:
    """A customer as the events say it is; the DTO is a view of this."""

    tenant_id: str
    id: str
    version: int
    personal: Personal
    customer_type: str
    state: str
    state_history: list[StateEntry] = field(default_factory=list)
    created_at: str = ""
    updated_at: str = ""
    #: erased (GDPR): gone from the read model, its personal fields unreadable everywhere
    erased: bool = False

    @classmethod
    def from_dto(cls, tenant_id: str, dto: dict[str, Any]) -> CustomerState:
        return cls(
            tenant_id=tenant_id,
            id=dto["_id"],
            version=int(dto["_version"]),
            personal={name: dto.get(name) for name in PERSONAL_FIELDS},
            customer_type=dto["customerType"],
            state=dto["state"],
            state_history=list(dto["stateHistory"]),
            created_at=dto["createdAt"],
            updated_at=dto["updatedAt"],
        )

    def to_dto(self) -> dict[str, Any]:
        return {
            "_id": self.id,
            "object": "CustomerDto",
            "customerType": self.customer_type,
            **{name: self.personal.get(name) for name in PERSONAL_FIELDS},
            "state": self.state,
            "stateHistory": list(self.state_history),
            "_version": str(self.version),
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
        }


def evolve(state: CustomerState | None, event: PanelEvent) -> CustomerState:
    """Fold one event into the customer's state (pure)."""
    updated_at = iso_ms(event.timestamp)
    if isinstance(event, CustomerRegistered):
        _, _, entity_id = event.originator_id.split(":", 2)
        return CustomerState(
            tenant_id=event.tenant_id,
            id=entity_id,
            version=event.originator_version,
            personal=dict(event.personal),
            customer_type=event.customer_type,
            state=event.state,
            state_history=list(event.state_history),
            created_at=event.created_at,
            updated_at=updated_at,
        )
    if state is None:
        msg = f"{type(event).__name__} before CustomerRegistered in {event.originator_id}"
        raise ValueError(msg)
    common: dict[str, Any] = {"version": event.originator_version, "updated_at": updated_at}
    if isinstance(event, CustomerDetailsChanged):
        return replace(
            state, personal=dict(event.personal), customer_type=event.customer_type, **common
        )
    if isinstance(event, CustomerStateChanged):
        return replace(state, state=event.state, state_history=list(event.state_history), **common)
    if isinstance(event, CustomerErased):
        personal: Personal = {n: ERASED for n, value in state.personal.items() if value is not None}
        return replace(state, personal=personal, erased=True, **common)
    msg = f"not a customer event: {type(event).__name__}"
    raise TypeError(msg)
