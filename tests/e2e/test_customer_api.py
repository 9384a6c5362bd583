"""The customer API end to end, as CONTRACT.md describes it and as the real panel client uses it:
create, read, full replace, soft delete, paged lists with every parameter, validation,
duplicate prevention (also under concurrent requests), optimistic concurrency and tenant
isolation. Complements test_customer_slice.py (which covers the basic pipeline)."""

from __future__ import annotations

import math
import re
import secrets
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus
from typing import Any

import httpx
import pytest

from beeoclock.settings import Settings
from tests.support import Tenant, new_tenant

BASE = "/api/v1/customer"
PAGED = f"{BASE}/paged"
ISO_MS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
CONTRACT_FIELDS = {
    "_id",
    "object",
    "customerType",
    "firstName",
    "lastName",
    "email",
    "phone",
    "note",
    "state",
    "stateHistory",
    "_version",
    "createdAt",
    "updatedAt",
}
SYNC = {
    "page": 1,
    "pageSize": 500,
    "orderBy": "createdAt",
    "orderDir": "desc",
    "updatedSince": "1970-01-01T00:00:00.000Z",
}

Params = dict[str, Any] | Sequence[tuple[str, Any]]


# --- helpers -------------------------------------------------------------------------------


def object_id() -> str:
    return secrets.token_hex(12)


def assert_error(response: httpx.Response, status: int, field: str | None = None) -> dict[str, Any]:
    """The contract's error shape; with `field`, `errors` must name that field."""
    assert response.status_code == status, response.text
    doc: dict[str, Any] = response.json()
    assert set(doc) <= {"statusCode", "error", "message", "errors"}, doc
    assert doc["statusCode"] == status
    assert doc["error"] == HTTPStatus(status).phrase
    assert isinstance(doc["message"], str)
    assert doc["message"]
    errors = doc.get("errors", [])
    assert isinstance(errors, list)
    for entry in errors:
        assert set(entry) <= {"error", "message", "detail"}, entry
        assert isinstance(entry["error"], str)
        assert isinstance(entry["message"], str)
        assert isinstance(entry.get("detail", ""), str)
    if field is not None:
        named = [e["error"] for e in errors]
        assert any(n == field or n.startswith(f"{field}.") for n in named), (field, doc)
    return doc


def create(tenant: Tenant, **body: Any) -> dict[str, Any]:
    response = tenant.post(BASE, json=body)
    assert response.status_code == 201, response.text
    dto: dict[str, Any] = response.json()
    return dto


def replace(
    tenant: Tenant, dto: dict[str, Any], headers: dict[str, str] | None = None, **changes: Any
) -> httpx.Response:
    """A PUT as the real client sends it: the DTO it holds, with some fields changed."""
    return tenant.put(f"{BASE}/{dto['_id']}", json={**dto, **changes}, headers=headers or {})


def fetch(tenant: Tenant, customer_id: str) -> dict[str, Any]:
    response = tenant.get(f"{BASE}/{customer_id}")
    assert response.status_code == 200, response.text
    dto: dict[str, Any] = response.json()
    return dto


def listing(tenant: Tenant, params: Params | None = None) -> dict[str, Any]:
    response = tenant.get(PAGED, params=params or {})
    assert response.status_code == 200, response.text
    doc: dict[str, Any] = response.json()
    assert isinstance(doc["totalSize"], int)
    assert isinstance(doc["items"], list)
    return doc


def ids_of(doc: dict[str, Any]) -> list[str]:
    return [item["_id"] for item in doc["items"]]


def found_by(tenant: Tenant, phrase: str) -> list[str]:
    doc = listing(tenant, {"phrase": phrase, "pageSize": 100})
    assert doc["totalSize"] == len(doc["items"])
    return ids_of(doc)


def tenant_sees(tenant: Tenant) -> list[tuple[str, str]]:
    return [(i["_id"], i["firstName"]) for i in listing(tenant, SYNC)["items"]]


def assert_nothing_stored(tenant: Tenant, total_before: int, customer_id: str) -> None:
    assert listing(tenant)["totalSize"] == total_before
    assert_error(tenant.get(f"{BASE}/{customer_id}"), 404)


def race(
    base_url: str, tenant: Tenant, requests: list[tuple[str, str, dict[str, Any]]]
) -> list[httpx.Response]:
    """Sends all requests at once, one thread and one connection each."""
    barrier = threading.Barrier(len(requests))

    def send(request: tuple[str, str, dict[str, Any]]) -> httpx.Response:
        method, path, body = request
        with httpx.Client(base_url=base_url, timeout=60) as http:
            me = Tenant(http, tenant.tenant_id, tenant.token)
            barrier.wait(timeout=60)
            return me.request(method, path, json=body)

    with ThreadPoolExecutor(max_workers=len(requests)) as pool:
        return list(pool.map(send, requests))


def mixed_case(text: str, seed: int) -> str:
    return "".join(ch.upper() if (seed >> (i % 5)) & 1 else ch.lower() for i, ch in enumerate(text))


# --- create and read -------------------------------------------------------------------------


def test_every_field_round_trips_with_millisecond_timestamps(
    client: httpx.Client, settings: Settings
) -> None:
    tenant = new_tenant(client, settings)
    customer_id = object_id()
    created = tenant.post(
        BASE,
        json={
            "_id": customer_id,
            "object": "CustomerDto",
            "customerType": "new",
            "firstName": "Anna",
            "lastName": "Nowak",
            "email": "anna.nowak@example.com",
            "phone": "+48 512-345-678",
            "note": "Allergic to latex.\nPrefers mornings.",
            "state": "active",
            "stateHistory": [],
            "_version": "1",
            "createdAt": "2025-02-25T09:37:56.085Z",
        },
    )
    assert created.status_code == 201, created.text
    assert created.headers["ETag"] == '"1"'
    dto = created.json()
    assert set(dto) >= CONTRACT_FIELDS
    assert {k: dto[k] for k in CONTRACT_FIELDS - {"stateHistory", "updatedAt"}} == {
        "_id": customer_id,
        "object": "CustomerDto",
        "customerType": "new",
        "firstName": "Anna",
        "lastName": "Nowak",
        "email": "anna.nowak@example.com",
        "phone": "48512345678",
        "note": "Allergic to latex.\nPrefers mornings.",
        "state": "active",
        "_version": "1",
        "createdAt": "2025-02-25T09:37:56.085Z",
    }
    assert ISO_MS.fullmatch(dto["updatedAt"])
    [entry] = dto["stateHistory"]
    assert entry["state"] == "active"
    assert ISO_MS.fullmatch(entry["setAt"])

    fetched = tenant.get(f"{BASE}/{customer_id}")
    assert fetched.json() == dto
    assert fetched.headers["ETag"] == '"1"'
    assert listing(tenant)["items"] == [dto]


def test_a_customer_created_in_another_state_gets_a_history_entry_for_it(
    client: httpx.Client, settings: Settings
) -> None:
    tenant = new_tenant(client, settings)
    for state in ("inactive", "archived"):
        dto = create(tenant, firstName=state, state=state, stateHistory=[])
        assert dto["state"] == state
        [entry] = dto["stateHistory"]
        assert entry["state"] == state
        assert ISO_MS.fullmatch(entry["setAt"])
        assert fetch(tenant, dto["_id"]) == dto


def test_generated_ids_are_distinct_object_ids(client: httpx.Client, settings: Settings) -> None:
    tenant = new_tenant(client, settings)
    ids = {create(tenant, firstName=f"N{i}")["_id"] for i in range(5)}
    assert len(ids) == 5
    assert all(re.fullmatch(r"[0-9a-f]{24}", i) for i in ids)
    assert set(ids_of(listing(tenant))) == ids


def test_customer_type_defaults_to_regular_and_accepts_every_contract_value(
    client: httpx.Client, settings: Settings
) -> None:
    tenant = new_tenant(client, settings)
    assert create(tenant, firstName="Default")["customerType"] == "regular"
    assert create(tenant, firstName="Null", customerType=None)["customerType"] == "regular"
    for kind in ("regular", "unregistered", "new", "anonymous"):
        dto = create(tenant, firstName=kind, customerType=kind)
        assert fetch(tenant, dto["_id"])["customerType"] == kind


def test_empty_strings_and_nulls_count_as_absent(client: httpx.Client, settings: Settings) -> None:
    tenant = new_tenant(client, settings)
    for body in (
        {"firstName": "Anna", "lastName": "", "email": "", "phone": "", "note": ""},
        {"firstName": "Anna", "lastName": None, "email": None, "phone": None, "note": None},
        {"lastName": "", "email": "", "phone": "48512345678"},
    ):
        dto = create(tenant, **body)
        for name, value in body.items():
            assert dto[name] == (value or None), name
        assert fetch(tenant, dto["_id"]) == dto


def test_values_at_the_length_limits_are_accepted(client: httpx.Client, settings: Settings) -> None:
    tenant = new_tenant(client, settings)
    body = {"firstName": "F" * 50, "lastName": "ł" * 50, "note": "ż" * 1000}
    dto = create(tenant, **body)
    assert {k: dto[k] for k in body} == body
    assert fetch(tenant, dto["_id"]) == dto


@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        ("+48 512-345-678", "48512345678"),
        ("48512345678", "48512345678"),
        ("+48512345678", "48512345678"),
        ("48 512 345 678", "48512345678"),
        ("+1 650-253-0000", "16502530000"),
        ("+44 7911 123456", "447911123456"),
    ],
)
def test_a_phone_in_any_accepted_format_is_stored_as_digits_only(
    client: httpx.Client, settings: Settings, sent: str, stored: str
) -> None:
    tenant = new_tenant(client, settings)
    dto = create(tenant, firstName="Phoned", phone=sent)
    assert dto["phone"] == stored
    assert fetch(tenant, dto["_id"])["phone"] == stored
    assert found_by(tenant, stored) == [dto["_id"]]


# --- validation ------------------------------------------------------------------------------


INVALID_FIELDS = [
    ({"email": "ann@"}, "email"),
    ({"email": "plainaddress"}, "email"),
    ({"email": "anna nowak@example.com"}, "email"),
    ({"email": "anna@exa mple.com"}, "email"),
    ({"email": "anna@@example.com"}, "email"),
    ({"email": "@example.com"}, "email"),
    ({"email": "48512345678"}, "email"),
    ({"phone": "5547778321"}, "phone"),
    ({"phone": "123"}, "phone"),
    ({"phone": "+48 512"}, "phone"),
    ({"phone": "call me"}, "phone"),
    ({"phone": "anna@example.com"}, "phone"),
    ({"firstName": "x" * 51}, "firstName"),
    ({"lastName": "x" * 51}, "lastName"),
    ({"note": "x" * 1001}, "note"),
    ({"customerType": "vip"}, "customerType"),
    ({"state": "gone"}, "state"),
    ({"stateHistory": [{"state": "gone", "setAt": "2025-02-25T09:37:56.123Z"}]}, "stateHistory"),
    ({"createdAt": "0001-01-01T00:00:00+01:00"}, "createdAt"),
    ({"createdAt": "9999-12-31T23:59:59-01:00"}, "createdAt"),
    ({"createdAt": "0999-06-01T00:00:00Z"}, "createdAt"),
    ({"createdAt": "yesterday"}, "createdAt"),
]


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        pytest.param(extra, field, id=f"{field}={str(extra[field])[:16]}")
        for extra, field in INVALID_FIELDS
    ],
)
def test_an_invalid_field_is_400_naming_it_and_stores_nothing(
    client: httpx.Client, settings: Settings, extra: dict[str, Any], field: str
) -> None:
    tenant = new_tenant(client, settings)
    create(tenant, lastName="Existing")
    customer_id = object_id()
    refused = tenant.post(BASE, json={"_id": customer_id, "firstName": "Anna", **extra})
    assert_error(refused, 400, field)
    assert_nothing_stored(tenant, 1, customer_id)


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"firstName": "", "lastName": "", "email": "", "phone": ""},
        {"firstName": None, "lastName": None, "email": None, "phone": None},
        {"note": "only a note", "customerType": "regular", "state": "active"},
    ],
    ids=["nothing", "empty-strings", "nulls", "only-note"],
)
def test_a_customer_without_name_email_or_phone_is_refused(
    client: httpx.Client, settings: Settings, body: dict[str, Any]
) -> None:
    tenant = new_tenant(client, settings)
    customer_id = object_id()
    doc = assert_error(tenant.post(BASE, json={"_id": customer_id, **body}), 400)
    assert doc["errors"]
    mentioned = " ".join([doc["message"], *(e["error"] + e["message"] for e in doc["errors"])])
    assert "firstName" in mentioned, doc
    assert_nothing_stored(tenant, 0, customer_id)


def test_an_invalid_replacement_is_400_naming_the_field_and_changes_nothing(
    client: httpx.Client, settings: Settings
) -> None:
    tenant = new_tenant(client, settings)
    dto = create(tenant, firstName="Anna", email="anna@example.com", phone="48512345678")
    for changes, field in (
        ({"email": "ann@"}, "email"),
        ({"phone": "5547778321"}, "phone"),
        ({"firstName": "x" * 51}, "firstName"),
        ({"lastName": "x" * 51}, "lastName"),
        ({"note": "x" * 1001}, "note"),
        ({"customerType": "vip"}, "customerType"),
        ({"state": "gone"}, "state"),
    ):
        assert_error(replace(tenant, dto, **changes), 400, field)
    nobody = replace(tenant, dto, firstName="", lastName=None, email="", phone=None)
    assert_error(nobody, 400)
    assert fetch(tenant, dto["_id"]) == dto
    assert listing(tenant)["items"] == [dto]


def test_server_owned_fields_sent_on_a_replacement_are_ignored(
    client: httpx.Client, settings: Settings
) -> None:
    tenant = new_tenant(client, settings)
    dto = create(tenant, firstName="Anna")
    updated = replace(
        tenant,
        dto,
        firstName="Anne",
        _version="99",
        object="Evil",
        createdAt="1999-01-01T00:00:00.000Z",
        updatedAt="1999-01-01T00:00:00.000Z",
        tenantId="another-tenant",
        isAdmin=True,
    )
    assert updated.status_code == 200, updated.text
    after = updated.json()
    assert after["firstName"] == "Anne"
    assert after["_version"] == "2"
    assert updated.headers["ETag"] == '"2"'
    assert after["object"] == "CustomerDto"
    assert after["createdAt"] == dto["createdAt"]
    assert after["updatedAt"] >= dto["updatedAt"]
    assert ISO_MS.fullmatch(after["updatedAt"])
    assert "tenantId" not in after
    assert "isAdmin" not in after
    assert fetch(tenant, dto["_id"]) == after


# --- replace (PUT) and delete ------------------------------------------------------------------


def test_a_put_replaces_every_field(client: httpx.Client, settings: Settings) -> None:
    tenant = new_tenant(client, settings)
    dto = create(
        tenant,
        customerType="new",
        firstName="Anna",
        lastName="Nowak",
        email="anna@example.com",
        phone="48512345678",
        note="a note",
    )
    updated = tenant.put(f"{BASE}/{dto['_id']}", json={"firstName": "Anne"})
    assert updated.status_code == 200, updated.text
    after = updated.json()
    assert {k: after[k] for k in ("firstName", "lastName", "email", "phone", "note")} == {
        "firstName": "Anne",
        "lastName": None,
        "email": None,
        "phone": None,
        "note": None,
    }
    assert after["customerType"] == "regular"
    assert after["_id"] == dto["_id"]
    assert after["createdAt"] == dto["createdAt"]
    assert fetch(tenant, dto["_id"]) == after
    assert found_by(tenant, "anna@example.com") == []


def test_updated_names_email_and_phone_are_found_by_the_new_values_not_the_old(
    client: httpx.Client, settings: Settings
) -> None:
    tenant = new_tenant(client, settings)
    other = create(tenant, firstName="Jan", lastName="Kowalski", email="jan@example.org")
    dto = create(
        tenant,
        firstName="Anna",
        lastName="Nowak",
        email="anna.nowak@example.com",
        phone="48512345678",
    )
    updated = replace(
        tenant,
        dto,
        firstName="Zofia",
        lastName="Wiśniewska",
        email="zofia.w@example.net",
        phone="+48 601 234 567",
    )
    assert updated.status_code == 200, updated.text
    after = updated.json()
    assert (after["firstName"], after["lastName"], after["email"], after["phone"]) == (
        "Zofia",
        "Wiśniewska",
        "zofia.w@example.net",
        "48601234567",
    )
    assert after["_version"] == "2"
    assert fetch(tenant, dto["_id"]) == after
    for new in ("zofia", "wiśniewska", "zofia.w@example.net", "48601234567"):
        assert found_by(tenant, new) == [dto["_id"]], new
    for old in ("anna", "nowak", "anna.nowak@example.com", "48512345678"):
        assert found_by(tenant, old) == [], old
    assert found_by(tenant, "kowalski") == [other["_id"]]
    assert listing(tenant)["totalSize"] == 2


def test_a_state_change_by_put_keeps_a_sent_history_verbatim_and_stays_listed(
    client: httpx.Client, settings: Settings
) -> None:
    tenant = new_tenant(client, settings)
    dto = create(tenant, firstName="Anna", email="anna@example.com")
    history = [
        {"state": "active", "setAt": "2025-02-25T09:37:56.123Z"},
        {"state": "archived", "setAt": "2025-01-01T00:00:00.000Z"},
        {"state": "inactive", "setAt": "2025-03-01T10:00:00Z"},
    ]
    updated = replace(tenant, dto, state="inactive", stateHistory=history)
    assert updated.status_code == 200, updated.text
    assert updated.json()["state"] == "inactive"
    assert updated.json()["stateHistory"] == history
    assert fetch(tenant, dto["_id"])["stateHistory"] == history

    everyone = listing(tenant)
    assert everyone["totalSize"] == 1
    assert everyone["items"][0]["state"] == "inactive"
    assert everyone["items"][0]["stateHistory"] == history
    assert ids_of(listing(tenant, {"state": "inactive"})) == [dto["_id"]]
    assert listing(tenant, {"state": "active"})["totalSize"] == 0


def test_a_put_with_an_empty_history_keeps_it_and_appends_only_on_a_state_change(
    client: httpx.Client, settings: Settings
) -> None:
    tenant = new_tenant(client, settings)
    dto = create(tenant, firstName="Anna")
    first = dto["stateHistory"]

    archived = replace(tenant, dto, state="archived", stateHistory=[]).json()
    assert archived["stateHistory"][:1] == first
    assert len(archived["stateHistory"]) == 2
    appended = archived["stateHistory"][1]
    assert appended["state"] == "archived"
    assert ISO_MS.fullmatch(appended["setAt"])
    assert appended["setAt"] >= first[0]["setAt"]

    renamed = replace(tenant, archived, firstName="Anne", stateHistory=[]).json()
    assert renamed["state"] == "archived"
    assert renamed["stateHistory"] == archived["stateHistory"]

    active = replace(tenant, renamed, state="active", stateHistory=[]).json()
    assert [e["state"] for e in active["stateHistory"]] == ["active", "archived", "active"]
    assert active["stateHistory"][:2] == archived["stateHistory"]
    assert fetch(tenant, dto["_id"]) == active


def test_delete_makes_the_customer_inactive_keeping_data_and_history(
    client: httpx.Client, settings: Settings
) -> None:
    tenant = new_tenant(client, settings)
    dto = create(tenant, firstName="Anna", email="anna@example.com", phone="48512345678")
    deleted = tenant.delete(f"{BASE}/{dto['_id']}")
    assert deleted.status_code == 200, deleted.text
    after = deleted.json()
    assert after["state"] == "inactive"
    assert deleted.headers["ETag"] == f'"{after["_version"]}"'
    assert int(after["_version"]) == 2
    assert (after["firstName"], after["email"], after["phone"]) == (
        "Anna",
        "anna@example.com",
        "48512345678",
    )
    assert after["stateHistory"][0] == dto["stateHistory"][0]
    assert after["stateHistory"][-1]["state"] == "inactive"
    assert fetch(tenant, dto["_id"]) == after
    assert listing(tenant)["items"] == [after]
    assert ids_of(listing(tenant, {"state": "inactive"})) == [dto["_id"]]
    assert found_by(tenant, "anna@example.com") == [dto["_id"]]


def test_unknown_ids_are_404_for_every_endpoint(client: httpx.Client, settings: Settings) -> None:
    tenant = new_tenant(client, settings)
    create(tenant, firstName="Someone")
    missing = object_id()
    assert_error(tenant.get(f"{BASE}/{missing}"), 404)
    assert_error(tenant.put(f"{BASE}/{missing}", json={"firstName": "A"}), 404)
    assert_error(tenant.delete(f"{BASE}/{missing}"), 404)
    assert listing(tenant)["totalSize"] == 1


# --- optimistic concurrency ------------------------------------------------------------------


def test_etags_follow_the_version_and_a_stale_if_match_changes_nothing(
    client: httpx.Client, settings: Settings
) -> None:
    tenant = new_tenant(client, settings)
    dto = create(tenant, firstName="Anna")
    path = f"{BASE}/{dto['_id']}"
    assert tenant.get(path).headers["ETag"] == '"1"'

    v2 = replace(tenant, dto, firstName="Anne", headers={"If-Match": '"1"'})
    assert v2.status_code == 200, v2.text
    assert v2.headers["ETag"] == '"2"'
    assert v2.json()["_version"] == "2"
    assert tenant.get(path).headers["ETag"] == '"2"'

    assert_error(tenant.delete(path, headers={"If-Match": '"1"'}), 409)
    assert fetch(tenant, dto["_id"]) == v2.json()

    v3 = tenant.delete(path, headers={"If-Match": '"2"'})
    assert v3.status_code == 200, v3.text
    assert v3.headers["ETag"] == '"3"'
    assert v3.json()["state"] == "inactive"

    for stale in ('"1"', '"2"', '"7"'):
        refused = replace(tenant, v3.json(), firstName="Stale", headers={"If-Match": stale})
        assert_error(refused, 409)
    current = tenant.get(path)
    assert current.json() == v3.json()
    assert current.headers["ETag"] == '"3"'
    assert listing(tenant)["items"] == [v3.json()]


def test_a_put_without_if_match_applies_to_the_latest_version(
    client: httpx.Client, settings: Settings
) -> None:
    tenant = new_tenant(client, settings)
    dto = create(tenant, firstName="Anna")
    assert replace(tenant, dto, firstName="B").status_code == 200
    # the client always sends `_version: "1"`: informational, never a conflict
    last = replace(tenant, dto, firstName="C", _version="1")
    assert last.status_code == 200, last.text
    assert last.json()["_version"] == "3"
    assert fetch(tenant, dto["_id"])["firstName"] == "C"


# --- paged lists -----------------------------------------------------------------------------


def test_every_page_size_from_1_to_94_is_exact(client: httpx.Client, settings: Settings) -> None:
    tenant = new_tenant(client, settings)
    created = {create(tenant, firstName=f"P{i:02d}")["_id"] for i in range(94)}
    everything = listing(tenant, {"pageSize": 94})
    assert everything["totalSize"] == 94
    order = ids_of(everything)
    assert set(order) == created
    assert len(order) == 94

    for n in range(1, 95):
        first = listing(tenant, {"page": 1, "pageSize": n})
        assert first["totalSize"] == 94, n
        assert ids_of(first) == order[:n], n
        last_page = math.ceil(94 / n)
        last = listing(tenant, {"page": last_page, "pageSize": n})
        assert last["totalSize"] == 94, n
        assert ids_of(last) == order[(last_page - 1) * n :], n
    for n in (1, 7, 20, 94):
        assert ids_of(listing(tenant, {"page": 1, "size": n})) == order[:n], n
        assert ids_of(listing(tenant, {"page": 2, "size": n})) == order[n : 2 * n], n

    assert ids_of(listing(tenant)) == order[:20]
    for big in (95, 500, 1000):
        assert ids_of(listing(tenant, {"pageSize": big})) == order
    beyond = listing(tenant, {"page": 5, "pageSize": 30})
    assert beyond == {"items": [], "totalSize": 94}


def test_walking_pages_never_repeats_or_skips_in_either_direction_or_by_cursor(
    client: httpx.Client, settings: Settings
) -> None:
    tenant = new_tenant(client, settings)
    # few distinct creation instants: the order must break the ties by id
    instants = [f"2025-02-2{d}T09:37:56.085Z" for d in range(1, 5)]
    created = {
        create(tenant, firstName=f"W{i:03d}", createdAt=instants[i % 4])["_id"] for i in range(110)
    }
    for direction in ("asc", "desc"):
        walked: list[dict[str, Any]] = []
        for page in range(1, 7):
            doc = listing(
                tenant,
                {"page": page, "pageSize": 20, "orderBy": "createdAt", "orderDir": direction},
            )
            assert doc["totalSize"] == 110
            assert len(doc["items"]) == (20 if page < 6 else 10), (direction, page)
            walked += doc["items"]
        walked_ids = [item["_id"] for item in walked]
        assert len(set(walked_ids)) == 110, direction
        assert set(walked_ids) == created
        stamps = [item["createdAt"] for item in walked]
        assert stamps == sorted(stamps, reverse=direction == "desc"), direction

        by_cursor: list[str] = []
        params: dict[str, Any] = {"pageSize": 20, "orderBy": "createdAt", "orderDir": direction}
        for _ in range(10):
            doc = listing(tenant, params)
            assert doc["totalSize"] == 110
            by_cursor += ids_of(doc)
            if not doc.get("nextCursor"):
                break
            params = {**params, "cursor": doc["nextCursor"]}
        assert by_cursor == walked_ids, direction


def test_the_default_order_is_most_recently_updated_first_and_unknown_order_fields_fall_back(
    client: httpx.Client, settings: Settings
) -> None:
    tenant = new_tenant(client, settings)
    a, b, c = (
        fetch(
            tenant, create(tenant, firstName=name, createdAt=f"2025-01-0{day}T08:00:00.000Z")["_id"]
        )
        for day, name in ((1, "A"), (2, "B"), (3, "C"))
    )
    assert replace(tenant, a, firstName="A2").status_code == 200
    newest_first = [a["_id"], c["_id"], b["_id"]]
    assert ids_of(listing(tenant)) == newest_first
    assert ids_of(listing(tenant, {"orderBy": "updatedAt", "orderDir": "desc"})) == newest_first
    assert ids_of(listing(tenant, {"orderBy": "firstName"})) == newest_first
    assert ids_of(listing(tenant, {"orderBy": "bogus", "orderDir": "asc"})) == newest_first[::-1]
    assert ids_of(listing(tenant, {"orderBy": "x" * 500})) == newest_first  # however long
    assert ids_of(listing(tenant, {"orderBy": "createdAt"})) == [c["_id"], b["_id"], a["_id"]]
    assert ids_of(listing(tenant, {"orderBy": "createdAt", "orderDir": "asc"})) == [
        a["_id"],
        b["_id"],
        c["_id"],
    ]


def test_unknown_query_parameters_are_ignored(client: httpx.Client, settings: Settings) -> None:
    tenant = new_tenant(client, settings)
    dto = create(tenant, firstName="Anna")
    extras = {"populate": "all", "sort": "-1", "filter[x]": "y", "page[size]": "2", "limit": "0"}
    assert listing(tenant, extras) == {"items": [dto], "totalSize": 1}
    assert tenant.get(f"{BASE}/{dto['_id']}", params=extras).json() == dto


def test_phrase_searches_names_email_phone_and_note_case_insensitively(
    client: httpx.Client, settings: Settings
) -> None:
    tenant = new_tenant(client, settings)
    anna = create(
        tenant,
        firstName="Anna",
        lastName="Nowak",
        email="anna.nowak@example.com",
        phone="48512345678",
        note="Prefers mornings since 2025-02-25",
    )["_id"]
    jan = create(tenant, firstName="Jan", lastName="Kowalski", email="jan.k@example.org")["_id"]
    create(tenant, firstName="Ewa", phone="+44 7911 123456")

    # the real client: create, then find by email
    assert found_by(tenant, "anna.nowak@example.com") == [anna]
    assert found_by(tenant, "ANNA.NOWAK@Example.COM") == [anna]
    assert found_by(tenant, "nowak") == [anna]
    assert found_by(tenant, "ANNA") == [anna]
    assert found_by(tenant, "anna nowak") == [anna]  # the full name
    assert found_by(tenant, "example.com 48512") == []  # never across two fields
    assert found_by(tenant, "kowal") == [jan]
    assert found_by(tenant, "512345") == [anna]
    assert found_by(tenant, "+48 512-345") == [anna]  # phone-shaped: matches the digits
    assert found_by(tenant, "+48") == [anna]  # a country code alone
    assert found_by(tenant, "(48) 512") == [anna]
    assert found_by(tenant, "512 345 678") == [anna]
    assert found_by(tenant, "MORNING") == [anna]
    assert found_by(tenant, "2025-02-25") == [anna]  # digits-only is a variant, not a rewrite
    assert sorted(found_by(tenant, "example")) == sorted([anna, jan])
    for nothing in ("zzz", "%", "n_w", "\\"):
        assert found_by(tenant, nothing) == [], nothing
    assert listing(tenant, {"phrase": "example", "pageSize": 1})["totalSize"] == 2


def test_the_state_filter_is_repeatable_and_its_absence_means_every_state(
    client: httpx.Client, settings: Settings
) -> None:
    tenant = new_tenant(client, settings)
    by_state = {
        state: create(tenant, firstName=state, state=state)["_id"]
        for state in ("active", "inactive", "archived")
    }
    doomed = create(tenant, firstName="deleted")
    assert replace(tenant, doomed, state="deleted", stateHistory=[]).status_code == 200
    by_state["deleted"] = doomed["_id"]

    assert sorted(ids_of(listing(tenant))) == sorted(by_state.values())
    assert listing(tenant)["totalSize"] == 4
    for state, customer_id in by_state.items():
        assert ids_of(listing(tenant, {"state": state})) == [customer_id], state
    both = listing(tenant, [("state", "active"), ("state", "inactive")])
    assert both["totalSize"] == 2
    assert sorted(ids_of(both)) == sorted([by_state["active"], by_state["inactive"]])
    every = [("state", s) for s in by_state]
    assert listing(tenant, every)["totalSize"] == 4
    narrowed = listing(tenant, [("state", "archived"), ("phrase", "ARCH")])
    assert ids_of(narrowed) == [by_state["archived"]]
    assert listing(tenant, [("state", "active"), ("phrase", "arch")])["totalSize"] == 0


def test_the_client_sync_call_returns_everything_including_deleted(
    client: httpx.Client, settings: Settings
) -> None:
    tenant = new_tenant(client, settings)
    first = create(tenant, firstName="First", createdAt="2025-01-01T08:00:00.000Z")
    second = create(tenant, firstName="Second", state="inactive", createdAt="2025-01-02T08:00:00Z")
    gone = create(tenant, firstName="Gone", createdAt="2025-01-03T08:00:00.000Z")
    gone = replace(tenant, gone, state="deleted", stateHistory=[]).json()
    assert gone["state"] == "deleted"
    soft = tenant.delete(f"{BASE}/{first['_id']}").json()

    synced = listing(tenant, SYNC)
    assert synced["totalSize"] == 3
    assert ids_of(synced) == [gone["_id"], second["_id"], first["_id"]]
    assert [i["state"] for i in synced["items"]] == ["deleted", "inactive", "inactive"]
    assert synced["items"][2] == soft


def test_updated_since_keeps_only_items_updated_at_or_after_it(
    client: httpx.Client, settings: Settings
) -> None:
    tenant = new_tenant(client, settings)
    customers = [create(tenant, firstName=f"U{i}") for i in range(4)]
    touched = replace(tenant, customers[1], firstName="U1 again").json()
    current = {c["_id"]: c for c in [*customers, touched]}
    bound = touched["updatedAt"]
    expected = {i for i, c in current.items() if c["updatedAt"] >= bound}
    assert touched["_id"] in expected
    assert customers[0]["_id"] not in expected

    since = listing(tenant, {**SYNC, "updatedSince": bound})
    assert set(ids_of(since)) == expected
    assert since["totalSize"] == len(expected)
    assert listing(tenant, {"updatedSince": "1970-01-01T00:00:00.000Z"})["totalSize"] == 4
    assert listing(tenant, {"updatedSince": "2999-01-01T00:00:00.000Z"}) == {
        "items": [],
        "totalSize": 0,
    }


# --- duplicates ------------------------------------------------------------------------------


def test_a_second_customer_with_the_same_email_in_any_case_is_a_conflict(
    client: httpx.Client, settings: Settings
) -> None:
    tenant = new_tenant(client, settings)
    first = create(tenant, firstName="Anna", email="Anna.Nowak@Example.com")
    for email in ("anna.nowak@example.com", "ANNA.NOWAK@EXAMPLE.COM", "Anna.Nowak@Example.com"):
        customer_id = object_id()
        refused = tenant.post(BASE, json={"_id": customer_id, "firstName": "Bis", "email": email})
        assert_error(refused, 409, "email")
        assert_nothing_stored(tenant, 1, customer_id)
    assert ids_of(listing(tenant)) == [first["_id"]]


def test_a_second_customer_with_the_same_phone_in_any_format_is_a_conflict(
    client: httpx.Client, settings: Settings
) -> None:
    tenant = new_tenant(client, settings)
    first = create(tenant, firstName="Anna", phone="+48 512-345-678")
    for phone in ("48512345678", "+48512345678", "48 512 345 678", "+48 512-345-678"):
        customer_id = object_id()
        refused = tenant.post(BASE, json={"_id": customer_id, "firstName": "Bis", "phone": phone})
        assert_error(refused, 409, "phone")
        assert_nothing_stored(tenant, 1, customer_id)
    assert ids_of(listing(tenant)) == [first["_id"]]


def test_changing_to_a_taken_email_or_phone_is_a_conflict_and_changes_nothing(
    client: httpx.Client, settings: Settings
) -> None:
    tenant = new_tenant(client, settings)
    create(tenant, firstName="Anna", email="anna@example.com", phone="48512345678")
    other = create(tenant, firstName="Jan", email="jan@example.com", phone="48601234567")
    assert_error(replace(tenant, other, email="ANNA@example.com"), 409, "email")
    assert_error(replace(tenant, other, phone="+48 512 345 678"), 409, "phone")
    assert fetch(tenant, other["_id"]) == other


def test_a_customer_may_keep_or_recase_its_own_email_and_phone(
    client: httpx.Client, settings: Settings
) -> None:
    tenant = new_tenant(client, settings)
    dto = create(tenant, firstName="Anna", email="anna@example.com", phone="48512345678")
    same = replace(tenant, dto, lastName="Nowak")
    assert same.status_code == 200, same.text
    recased = replace(tenant, same.json(), email="Anna@Example.com", phone="+48 512-345-678")
    assert recased.status_code == 200, recased.text
    assert recased.json()["phone"] == "48512345678"
    assert found_by(tenant, "anna@example.com") == [dto["_id"]]


def test_changing_email_and_phone_releases_the_old_values(
    client: httpx.Client, settings: Settings
) -> None:
    tenant = new_tenant(client, settings)
    dto = create(tenant, firstName="Anna", email="anna@example.com", phone="48512345678")
    moved = replace(tenant, dto, email="anna@example.net", phone="48601234567")
    assert moved.status_code == 200, moved.text
    heir = create(tenant, firstName="Heir", email="ANNA@example.com", phone="+48512345678")
    assert sorted(found_by(tenant, "anna@example.")) == sorted([dto["_id"], heir["_id"]])
    refused = tenant.post(BASE, json={"firstName": "Late", "email": "anna@example.net"})
    assert_error(refused, 409, "email")


def test_only_the_deleted_state_releases_email_and_phone(
    client: httpx.Client, settings: Settings
) -> None:
    tenant = new_tenant(client, settings)
    dto = create(tenant, firstName="Anna", email="anna@example.com", phone="48512345678")
    copy = {"firstName": "Copy", "email": "anna@example.com", "phone": "48512345678"}

    inactive = tenant.delete(f"{BASE}/{dto['_id']}").json()
    assert inactive["state"] == "inactive"
    assert_error(tenant.post(BASE, json={"firstName": "Copy", "email": copy["email"]}), 409)
    assert_error(tenant.post(BASE, json={"firstName": "Copy", "phone": copy["phone"]}), 409)

    archived = replace(tenant, inactive, state="archived", stateHistory=[])
    assert archived.status_code == 200, archived.text
    assert_error(tenant.post(BASE, json={"firstName": "Copy", "email": copy["email"]}), 409)
    assert listing(tenant)["totalSize"] == 1

    deleted = replace(tenant, archived.json(), state="deleted", stateHistory=[])
    assert deleted.status_code == 200, deleted.text
    heir = create(tenant, **copy)
    assert sorted(found_by(tenant, "anna@example.com")) == sorted([dto["_id"], heir["_id"]])

    # reviving the deleted customer would make two customers share the values
    revived = replace(tenant, deleted.json(), state="active", stateHistory=[])
    assert_error(revived, 409)
    assert fetch(tenant, dto["_id"]) == deleted.json()


def test_absent_emails_and_phones_are_never_duplicates(
    client: httpx.Client, settings: Settings
) -> None:
    tenant = new_tenant(client, settings)
    for i in range(2):
        create(tenant, firstName=f"Blank{i}", email="", phone="")
        create(tenant, firstName=f"Null{i}", email=None, phone=None)
        create(tenant, firstName=f"Missing{i}")
    assert listing(tenant)["totalSize"] == 6


def test_twenty_concurrent_creates_with_one_email_make_exactly_one_customer(
    client: httpx.Client, settings: Settings
) -> None:
    tenant = new_tenant(client, settings)
    email = "race.winner@example.com"
    bodies = [
        {"_id": object_id(), "firstName": f"R{i}", "email": mixed_case(email, i)} for i in range(20)
    ]
    responses = race(str(client.base_url), tenant, [("POST", BASE, b) for b in bodies])
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201] + [409] * 19, [r.text for r in responses]
    for response in responses:
        if response.status_code == 409:
            assert_error(response, 409, "email")
    [winner] = [r.json()["_id"] for r in responses if r.status_code == 201]

    assert found_by(tenant, email) == [winner]
    assert ids_of(listing(tenant, SYNC)) == [winner]
    loser = next(b["_id"] for b in bodies if b["_id"] != winner)
    assert_error(tenant.get(f"{BASE}/{loser}"), 404)


def test_twenty_concurrent_creates_with_one_phone_in_any_format_make_exactly_one_customer(
    client: httpx.Client, settings: Settings
) -> None:
    tenant = new_tenant(client, settings)
    formats = ("+48 512-345-678", "48512345678", "+48512345678", "48 512 345 678")
    bodies = [
        {"_id": object_id(), "firstName": f"R{i}", "phone": formats[i % len(formats)]}
        for i in range(20)
    ]
    responses = race(str(client.base_url), tenant, [("POST", BASE, b) for b in bodies])
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201] + [409] * 19, [r.text for r in responses]
    [winner] = [r.json()["_id"] for r in responses if r.status_code == 201]

    synced = listing(tenant, SYNC)
    assert ids_of(synced) == [winner]
    assert synced["items"][0]["phone"] == "48512345678"
    assert found_by(tenant, "48512345678") == [winner]


def test_twenty_concurrent_changes_to_one_email_let_exactly_one_through(
    client: httpx.Client, settings: Settings
) -> None:
    tenant = new_tenant(client, settings)
    customers = [create(tenant, firstName=f"C{i}", email=f"c{i}@example.com") for i in range(20)]
    email = "wanted@example.com"
    responses = race(
        str(client.base_url),
        tenant,
        [
            ("PUT", f"{BASE}/{c['_id']}", {**c, "email": mixed_case(email, i)})
            for i, c in enumerate(customers)
        ],
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] + [409] * 19, [r.text for r in responses]
    [winner] = [r.json()["_id"] for r in responses if r.status_code == 200]

    assert found_by(tenant, email) == [winner]
    for i, customer in enumerate(customers):
        if customer["_id"] != winner:
            assert fetch(tenant, customer["_id"]) == customer
            assert found_by(tenant, f"c{i}@example.com") == [customer["_id"]]


# --- tenants ---------------------------------------------------------------------------------


def test_tenants_are_isolated_on_every_endpoint_and_may_reuse_ids_emails_and_phones(
    client: httpx.Client, settings: Settings
) -> None:
    owner, other = new_tenant(client, settings), new_tenant(client, settings)
    body = {
        "_id": object_id(),
        "firstName": "Anna",
        "email": "anna@example.com",
        "phone": "48512345678",
    }
    dto = create(owner, **body)
    path = f"{BASE}/{dto['_id']}"

    assert_error(other.get(path), 404)
    assert_error(other.put(path, json={**dto, "firstName": "Hijack"}), 404)
    assert_error(other.delete(path), 404)
    assert_error(other.delete(path, headers={"If-Match": '"1"'}), 404)
    for params in (
        {},
        SYNC,
        {"phrase": "anna@example.com"},
        [("state", "active"), ("state", "inactive")],
    ):
        assert listing(other, params) == {"items": [], "totalSize": 0}
    assert fetch(owner, dto["_id"]) == dto

    theirs = create(other, **{**body, "firstName": "Anna B", "phone": "+48 512-345-678"})
    assert theirs["_id"] == dto["_id"]
    assert replace(other, theirs, lastName="B").status_code == 200
    assert tenant_sees(other) == [(dto["_id"], "Anna B")]
    assert tenant_sees(owner) == [(dto["_id"], "Anna")]
    assert fetch(owner, dto["_id"]) == dto
    assert_error(owner.post(BASE, json={"firstName": "Dup", "email": "ANNA@example.com"}), 409)
    assert other.delete(path).json()["state"] == "inactive"
    assert fetch(owner, dto["_id"])["state"] == "active"
