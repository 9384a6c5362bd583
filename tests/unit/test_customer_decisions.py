"""Given events / when a command / then events: the customer's decisions, without I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from commands.context import Meta
from commands.customer import Customer, DeleteCustomer, RegisterCustomer, UpdateCustomer
from commands.errors import Conflict
from events.customer import CustomerDetailsChanged, CustomerRegistered, CustomerStateChanged

T0 = datetime(2025, 2, 25, 9, 37, 56, 123000, tzinfo=UTC)
PERSONAL = {
    "firstName": "Anna",
    "lastName": "Nowak",
    "email": "anna@example.com",
    "phone": "48512345678",
    "note": None,
}


def meta(at: datetime = T0, request_id: str = "req-1") -> Meta:
    return Meta("tenant-a", "user-1", request_id, at)


def registered(**overrides: object) -> Customer:
    fields: dict[str, object] = {
        "meta": meta(),
        "customer_id": "c1",
        "personal": PERSONAL,
        "customer_type": "regular",
        "state": "active",
        "state_history": [],
        "created_at": None,
    }
    fields.update(overrides)
    customer = Customer.register(RegisterCustomer(**fields))  # type: ignore[arg-type]
    customer.collect_events()
    return customer


def test_registration_records_tenant_actor_request_and_a_first_state_entry() -> None:
    customer = Customer.register(
        RegisterCustomer(meta(), "c1", PERSONAL, "regular", "active", [], None)
    )
    [event] = customer.collect_events()
    assert isinstance(event, CustomerRegistered)
    assert (event.tenant_id, event.actor, event.request_id) == ("tenant-a", "user-1", "req-1")
    assert event.originator_id == "customer:tenant-a:c1"
    assert event.state_history == [{"state": "active", "setAt": "2025-02-25T09:37:56.123Z"}]
    assert customer.state.created_at == "2025-02-25T09:37:56.123Z"


def test_registration_keeps_a_client_history_and_creation_time_verbatim() -> None:
    history = [{"state": "active", "setAt": "2024-01-01T00:00:00.000Z"}]
    customer = registered(state_history=history, created_at="2024-01-01T00:00:00.000Z")
    assert customer.state.state_history == history
    assert customer.state.created_at == "2024-01-01T00:00:00.000Z"


def test_same_id_in_two_tenants_is_two_streams() -> None:
    a = registered()
    b = registered(meta=Meta("tenant-b", "user-1", "r", T0))
    assert a.id != b.id


def test_changing_details_records_the_full_new_details_only() -> None:
    customer = registered()
    new = {**PERSONAL, "lastName": "Kowalska"}
    customer.update(
        UpdateCustomer(meta(T0 + timedelta(seconds=1)), "c1", new, "regular", "active", [], None)
    )
    [event] = customer.collect_events()
    assert isinstance(event, CustomerDetailsChanged)
    assert event.personal == new
    assert customer.version == 2


def test_an_unchanged_put_records_nothing() -> None:
    customer = registered()
    customer.update(UpdateCustomer(meta(), "c1", dict(PERSONAL), "regular", "active", [], None))
    assert customer.collect_events() == []


def test_a_state_change_with_empty_history_appends_an_entry() -> None:
    customer = registered()
    later = T0 + timedelta(minutes=1)
    customer.update(UpdateCustomer(meta(later), "c1", PERSONAL, "regular", "archived", [], None))
    [event] = customer.collect_events()
    assert isinstance(event, CustomerStateChanged)
    assert [e["state"] for e in event.state_history] == ["active", "archived"]
    assert event.state_history[-1]["setAt"] == "2025-02-25T09:38:56.123Z"


def test_a_sent_history_is_stored_verbatim() -> None:
    customer = registered()
    history = [
        {"state": "active", "setAt": "2020-01-01T00:00:00.000Z"},
        {"state": "inactive", "setAt": "2020-02-02T00:00:00.5Z"},
    ]
    customer.update(UpdateCustomer(meta(), "c1", PERSONAL, "regular", "inactive", history, None))
    assert customer.state.state_history == history


def test_delete_makes_the_customer_inactive_and_again_changes_nothing() -> None:
    customer = registered()
    customer.delete(DeleteCustomer(meta(), "c1", None))
    assert customer.state.state == "inactive"
    assert len(customer.collect_events()) == 1
    customer.delete(DeleteCustomer(meta(), "c1", None))
    assert customer.collect_events() == []


def test_a_stale_expected_version_is_a_conflict() -> None:
    customer = registered()
    with pytest.raises(Conflict):
        customer.delete(DeleteCustomer(meta(), "c1", expected_version=7))
    assert customer.collect_events() == []


def test_delete_leaves_a_deleted_customer_deleted() -> None:
    customer = registered(state="deleted")
    customer.delete(DeleteCustomer(meta(), "c1", None))
    assert customer.state.state == "deleted"
    assert customer.collect_events() == []
