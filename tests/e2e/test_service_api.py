"""The service API end to end: the real client's bodies, every rule, order uniqueness under
concurrency, paging and search, optimistic concurrency and tenant isolation."""

from __future__ import annotations

import copy
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from beeoclock.bootstrap import panel_application
from beeoclock.settings import Settings
from tests.e2e.test_customer_slice import assert_error
from tests.support import Tenant, new_tenant

# The body the panel's Angular form sends on create, as it sends it.
CLIENT_CREATE_BODY: dict[str, Any] = {
    "object": "ServiceDto",
    "_id": "67c2dd0f2b9a4c1d8e7f6a5b",
    "state": "active",
    "stateHistory": [],
    "order": None,
    "configuration": {
        "object": "ServiceConfigurationDto",
        "duration": {"object": "DurationConfiguration", "durationVersionType": "RANGE"},
    },
    "prepaymentPolicy": {
        "object": "PrepaymentPolicyDto",
        "isRequired": None,
        "isPercentage": None,
        "value": None,
        "minimalCancelTime": None,
    },
    "languageVersions": [
        {
            "object": "LanguageVersionDto",
            "title": "Strzyżenie",
            "description": "",
            "language": "pl",
            "active": 1,
        }
    ],
    "durationVersions": [
        {
            "object": "DurationVersionDto",
            "breakInSeconds": None,
            "durationInSeconds": 1800,
            "prices": [
                {"object": "PriceDto", "price": 60, "currency": "PLN", "preferredLanguages": []}
            ],
        }
    ],
    "presentation": {"color": "#ff8800"},
}
ISO_MS = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"


def body(title: str = "Haircut", **overrides: Any) -> dict[str, Any]:
    """A client body without an `_id` (the server makes one)."""
    doc = copy.deepcopy(CLIENT_CREATE_BODY)
    del doc["_id"]
    doc["languageVersions"][0]["title"] = title
    doc.update(overrides)
    return doc


def create(tenant: Tenant, **overrides: Any) -> dict[str, Any]:
    created = tenant.post("/api/v1/service", json=body(**overrides))
    assert created.status_code == 201, created.text
    dto: dict[str, Any] = created.json()
    return dto


def total(tenant: Tenant) -> int:
    page = tenant.get("/api/v1/service/paged")
    assert page.status_code == 200, page.text
    return int(page.json()["totalSize"])


def test_the_real_clients_create_body_gets_defaults_and_is_readable_at_once(
    client: httpx.Client, settings: Settings
) -> None:
    tenant = new_tenant(client, settings)
    created = tenant.post("/api/v1/service", json=CLIENT_CREATE_BODY)
    assert created.status_code == 201, created.text
    assert created.headers["ETag"] == '"1"'
    assert int(created.headers["X-Event-Position"]) > 0
    dto = created.json()
    assert dto["_id"] == CLIENT_CREATE_BODY["_id"]
    assert dto["object"] == "ServiceDto"
    assert dto["_version"] == "1"
    assert re.fullmatch(ISO_MS, dto["createdAt"])
    assert dto["stateHistory"] == [{"state": "active", "setAt": dto["createdAt"]}]
    assert dto["order"] is None
    assert dto["prepaymentPolicy"] == {
        "object": "PrepaymentPolicyDto",
        "isRequired": False,
        "isPercentage": False,
        "value": "0",
        "minimalCancelTime": "0",
    }
    assert dto["configuration"]["duration"]["durationVersionType"] == "RANGE"
    assert dto["durationVersions"][0]["breakInSeconds"] == 0
    assert dto["durationVersions"][0]["prices"] == [
        {"object": "PriceDto", "price": 60, "currency": "PLN", "preferredLanguages": []}
    ]
    assert dto["languageVersions"][0]["title"] == "Strzyżenie"
    assert dto["presentation"] == {"object": "PresentationDto", "color": "#ff8800", "banners": []}
    assert dto["schedules"] == []
    assert dto["requiredResources"] == []

    fetched = tenant.get(f"/api/v1/service/{dto['_id']}")
    assert fetched.status_code == 200
    assert fetched.json() == dto
    assert fetched.headers["ETag"] == '"1"'
    page = tenant.get("/api/v1/service/paged", params={"page": 1, "size": 500, "extra": "x"})
    assert page.json() == {"items": [dto], "totalSize": 1}


def test_a_fully_filled_service_round_trips(client: httpx.Client, settings: Settings) -> None:
    tenant = new_tenant(client, settings)
    full = body(
        order=7,
        configuration={"duration": {"durationVersionType": "VARIABLE"}},
        prepaymentPolicy={
            "isRequired": True,
            "isPercentage": True,
            "value": 30,
            "minimalCancelTime": "3600",
        },
        schedules=[{"workDays": [1, 2, 3, 4, 5], "startInSeconds": 32400, "endInSeconds": 61200}],
        requiredResources=[{"resourceId": "chair-1", "quantity": 2}],
        durationVersions=[
            {
                "breakInSeconds": 300,
                "durationInSeconds": 3600,
                "prices": [
                    {"price": 99.5, "currency": "EUR", "preferredLanguages": ["en"]},
                    {"price": 0, "currency": "DKK"},
                ],
            }
        ],
    )
    full["languageVersions"].append(
        {"title": "Strzyżenie", "description": "Opis", "language": "uk", "active": 0}
    )
    created = tenant.post("/api/v1/service", json=full)
    assert created.status_code == 201, created.text
    dto = created.json()
    assert dto["order"] == 7
    assert dto["prepaymentPolicy"]["value"] == "30"
    assert dto["prepaymentPolicy"]["minimalCancelTime"] == "3600"
    assert dto["schedules"] == [
        {"object": "Schedule", "workDays": [1, 2, 3, 4, 5], "startInSeconds": 32400,
         "endInSeconds": 61200}
    ]  # fmt: skip
    assert dto["requiredResources"] == [{"resourceId": "chair-1", "quantity": 2}]
    assert [p["price"] for p in dto["durationVersions"][0]["prices"]] == [99.5, 0]
    assert [v["active"] for v in dto["languageVersions"]] == [1, 0]
    assert tenant.get(f"/api/v1/service/{dto['_id']}").json() == dto


def durations(seconds: object = 60, prices: object = None, **extra: object) -> dict[str, Any]:
    """A `durationVersions` change with one version."""
    priced = [{"price": 1, "currency": "PLN"}] if prices is None else prices
    return {"durationVersions": [{"durationInSeconds": seconds, "prices": priced, **extra}]}


def schedule(days: list[int], start: int, end: int) -> dict[str, Any]:
    return {"schedules": [{"workDays": days, "startInSeconds": start, "endInSeconds": end}]}


TWO_POLISH = [{"title": "A", "language": "pl"}, {"title": "B", "language": "pl"}]
RULES = [
    ({"languageVersions": []}, "languageVersions"),
    ({"languageVersions": None}, "languageVersions"),
    ({"durationVersions": []}, "durationVersions"),
    ({"languageVersions": [{"title": " ", "language": "pl"}]}, "languageVersions"),
    ({"languageVersions": [{"title": "A", "language": "de"}]}, "languageVersions.0.language"),
    ({"languageVersions": TWO_POLISH}, "languageVersions"),
    (durations(prices=[]), "durationVersions.0.prices"),
    (durations(0), "durationVersions.0.durationInSeconds"),
    (durations(90.5), "durationVersions.0.durationInSeconds"),
    (durations(breakInSeconds=-1), "durationVersions.0.breakInSeconds"),
    (durations(prices=[{"price": -1, "currency": "PLN"}]), "durationVersions.0.prices.0.price"),
    (durations(prices=[{"price": 1, "currency": "ABC"}]), "durationVersions.0.prices.0.currency"),
    ({"presentation": {"color": "orange"}}, "presentation.color"),
    ({"presentation": {"color": "#ff880"}}, "presentation.color"),
    (schedule([1], 600, 600), "schedules.0"),
    (schedule([0, 8], 0, 60), "schedules.0.workDays.0"),
    ({"prepaymentPolicy": {"isPercentage": True, "value": 101}}, "prepaymentPolicy"),
    ({"prepaymentPolicy": {"isPercentage": False, "value": -5}}, "prepaymentPolicy.value"),
    ({"order": -1}, "order"),
    ({"order": "first"}, "order"),
    ({"requiredResources": [{"resourceId": "r1", "quantity": 0}]}, "requiredResources.0.quantity"),
    ({"requiredResources": [{"resourceId": "r1"}, {"resourceId": "r1"}]}, "requiredResources"),
    ({"state": "gone"}, "state"),
    ({"_id": "paged"}, "_id"),
    ({"prepaymentPolicy": {"value": "1e-999999"}}, "prepaymentPolicy.value"),
    (
        {"prepaymentPolicy": {"minimalCancelTime": "0." + "0" * 40 + "1"}},
        "prepaymentPolicy.minimalCancelTime",
    ),
    ({"prepaymentPolicy": {"value": "0.00001"}}, "prepaymentPolicy.value"),
    (
        durations(prices=[{"price": 1, "currency": "PLN", "preferredLanguages": ["pl", "pl"]}]),
        "durationVersions.0.prices.0.preferredLanguages",
    ),
    ({"createdAt": "0001-01-01T00:00:00+01:00"}, "createdAt"),
    ({"createdAt": "0999-06-01T00:00:00Z"}, "createdAt"),
]


@pytest.mark.parametrize(
    ("change", "field"), RULES, ids=[f"{i}-{f}" for i, (_, f) in enumerate(RULES)]
)
def test_a_body_breaking_a_rule_is_400_with_the_field_and_stores_nothing(
    client: httpx.Client, settings: Settings, change: dict[str, Any], field: str
) -> None:
    tenant = new_tenant(client, settings)
    sent = {**body(), "_id": "67c2dd0f2b9a4c1d8e7f0001", **change}
    doc = assert_error(tenant.post("/api/v1/service", json=sent), 400)
    assert field in [e["error"] for e in doc["errors"]], doc  # type: ignore[attr-defined]
    assert total(tenant) == 0
    if sent["_id"] != "paged":
        assert tenant.get(f"/api/v1/service/{sent['_id']}").status_code == 404


def test_a_put_replaces_the_service_and_keeps_resources_it_does_not_send(
    client: httpx.Client, settings: Settings
) -> None:
    tenant = new_tenant(client, settings)
    dto = create(tenant, requiredResources=[{"resourceId": "r1", "quantity": 1}], order=1)
    replaced = copy.deepcopy(dto)
    del replaced["requiredResources"]
    replaced["languageVersions"] = [{"title": "Nowe", "description": "d", "language": "en"}]
    replaced["presentation"] = {"color": "#000000", "banners": []}
    replaced["order"] = None
    replaced["state"] = "inactive"
    replaced["stateHistory"] = []  # keep the stored history, appending the change
    updated = tenant.put(f"/api/v1/service/{dto['_id']}", json=replaced)
    assert updated.status_code == 200, updated.text
    got = updated.json()
    assert got["languageVersions"][0]["title"] == "Nowe"
    assert got["presentation"]["color"] == "#000000"
    assert got["order"] is None
    assert got["requiredResources"] == [{"resourceId": "r1", "quantity": 1}]
    assert [e["state"] for e in got["stateHistory"]] == ["active", "inactive"]
    assert got["createdAt"] == dto["createdAt"]
    assert int(got["_version"]) > 1
    assert updated.headers["ETag"] == f'"{got["_version"]}"'
    assert tenant.get(f"/api/v1/service/{dto['_id']}").json() == got
    again = tenant.put(f"/api/v1/service/{dto['_id']}", json=replaced)
    assert again.json()["_version"] == got["_version"]  # nothing changed, nothing recorded


@pytest.mark.parametrize("emptied", ["languageVersions", "durationVersions"])
def test_a_put_removing_every_language_or_duration_version_is_422(
    client: httpx.Client, settings: Settings, emptied: str
) -> None:
    tenant = new_tenant(client, settings)
    dto = create(tenant)
    doc = assert_error(tenant.put(f"/api/v1/service/{dto['_id']}", json={**dto, emptied: []}), 422)
    assert [e["error"] for e in doc["errors"]] == [emptied]  # type: ignore[attr-defined]
    assert tenant.get(f"/api/v1/service/{dto['_id']}").json() == dto


def test_a_put_cannot_change_the_id_and_invalid_puts_are_400(
    client: httpx.Client, settings: Settings
) -> None:
    tenant = new_tenant(client, settings)
    dto = create(tenant)
    path = f"/api/v1/service/{dto['_id']}"
    assert_error(tenant.put(path, json={**dto, "_id": "aaaaaaaaaaaaaaaaaaaaaaaa"}), 422)
    assert_error(tenant.put(path, json={**dto, "presentation": {"color": "nope"}}), 400)
    assert_error(tenant.put("/api/v1/service/aaaaaaaaaaaaaaaaaaaaaaaa", json=dto), 404)
    assert tenant.get(path).json() == dto


def test_required_resources_are_set_with_204_and_validated(
    client: httpx.Client, settings: Settings
) -> None:
    tenant = new_tenant(client, settings)
    dto = create(tenant)
    path = f"/api/v1/service/{dto['_id']}/required-resources"
    resources = [{"resourceId": "r1", "quantity": 2}, {"resourceId": "r2", "quantity": 1}]
    done = tenant.put(path, json=resources)
    assert done.status_code == 204, done.text
    assert done.content == b""
    assert done.headers["ETag"] == '"2"'
    assert int(done.headers["X-Event-Position"]) > 0
    assert tenant.get(f"/api/v1/service/{dto['_id']}").json()["requiredResources"] == resources
    for bad in (
        [{"resourceId": "r1", "quantity": 0}],
        [{"resourceId": "r1", "quantity": 1}, {"resourceId": "r1", "quantity": 2}],
        [{"quantity": 1}],
        {"resourceId": "r1"},
    ):
        assert_error(tenant.put(path, json=bad), 400)
    assert tenant.get(f"/api/v1/service/{dto['_id']}").json()["_version"] == "2"
    assert tenant.put(path, json=[]).status_code == 204
    assert tenant.get(f"/api/v1/service/{dto['_id']}").json()["requiredResources"] == []
    missing = "/api/v1/service/aaaaaaaaaaaaaaaaaaaaaaaa/required-resources"
    assert_error(tenant.put(missing, json=resources), 404)


def test_delete_is_soft_and_repeatable(client: httpx.Client, settings: Settings) -> None:
    tenant = new_tenant(client, settings)
    dto = create(tenant)
    first = tenant.delete(f"/api/v1/service/{dto['_id']}")
    assert first.status_code == 200
    assert first.json()["state"] == "deleted"
    assert first.json()["languageVersions"] == dto["languageVersions"]
    again = tenant.delete(f"/api/v1/service/{dto['_id']}")
    assert again.status_code == 200
    assert again.json()["_version"] == first.json()["_version"]
    assert tenant.get(f"/api/v1/service/{dto['_id']}").json()["state"] == "deleted"
    listed = tenant.get("/api/v1/service/paged").json()
    assert [i["state"] for i in listed["items"]] == ["deleted"]  # deletions are listed
    assert_error(tenant.delete("/api/v1/service/aaaaaaaaaaaaaaaaaaaaaaaa"), 404)


def test_an_order_is_unique_among_a_tenants_services_until_released(
    client: httpx.Client, settings: Settings
) -> None:
    tenant = new_tenant(client, settings)
    first = create(tenant, order=1)
    doc = assert_error(tenant.post("/api/v1/service", json=body("Other", order=1)), 409)
    assert [e["error"] for e in doc["errors"]] == ["order"]  # type: ignore[attr-defined]
    second = create(tenant, order=2)
    moved = tenant.put(f"/api/v1/service/{second['_id']}", json={**second, "order": 1})
    assert_error(moved, 409)
    assert tenant.get(f"/api/v1/service/{second['_id']}").json()["order"] == 2
    # the same order in another tenant is another order
    assert create(new_tenant(client, settings), order=1)["order"] == 1
    # moving away releases the old order; deleting releases the current one
    assert tenant.put(f"/api/v1/service/{first['_id']}", json={**first, "order": 5}).is_success
    assert tenant.put(f"/api/v1/service/{second['_id']}", json={**second, "order": 1}).is_success
    assert tenant.delete(f"/api/v1/service/{second['_id']}").status_code == 200
    assert create(tenant, order=1)["order"] == 1
    # a deleted service coming back can't take an order that is taken now
    revived = {**second, "order": 1, "state": "active"}
    assert_error(tenant.put(f"/api/v1/service/{second['_id']}", json=revived), 409)
    assert total(tenant) == 3


def test_twenty_concurrent_creates_with_one_order_make_one_service(
    settings: Settings, stack: Any
) -> None:
    with httpx.Client(base_url=stack.base_url, timeout=60) as setup:
        tenant = new_tenant(setup, settings)

    def attempt(i: int) -> int:
        with httpx.Client(base_url=stack.base_url, timeout=60) as http:
            sent = body(f"Service {i}", order=42)
            return http.post("/api/v1/service", json=sent, headers=tenant.headers).status_code

    with ThreadPoolExecutor(max_workers=20) as pool:
        statuses = sorted(pool.map(attempt, range(20)))
    assert statuses == [201] + [409] * 19
    with httpx.Client(base_url=stack.base_url, timeout=60) as http:
        check = Tenant(http, tenant.tenant_id, tenant.token)
        assert total(check) == 1


def test_a_stale_if_match_is_a_conflict_and_changes_nothing(
    client: httpx.Client, settings: Settings
) -> None:
    tenant = new_tenant(client, settings)
    dto = create(tenant)
    path = f"/api/v1/service/{dto['_id']}"
    ok = tenant.put(path, json={**dto, "order": 3}, headers={"If-Match": '"1"'})
    assert ok.status_code == 200, ok.text
    stale = {"If-Match": '"1"'}
    assert_error(tenant.put(path, json={**dto, "order": 4}, headers=stale), 409)
    assert_error(tenant.put(f"{path}/required-resources", json=[], headers=stale), 409)
    assert_error(tenant.delete(path, headers=stale), 409)
    current = tenant.get(path)
    assert current.json()["order"] == 3
    assert current.json()["state"] == "active"
    fresh = {"If-Match": current.headers["ETag"]}
    assert tenant.delete(path, headers=fresh).status_code == 200


def test_paging_search_filters_and_cursors(client: httpx.Client, settings: Settings) -> None:
    tenant = new_tenant(client, settings)
    made = []
    for i in range(12):
        extra = {"order": i} if i % 3 else {}
        made.append(create(tenant, title=f"Usługa {i:02d}", **extra))
    beard = body("Broda")
    beard["languageVersions"].append(
        {"title": "Beard", "description": "Hot TOWEL shave", "language": "en", "active": 1}
    )
    beard_dto = tenant.post("/api/v1/service", json=beard).json()
    tenant.delete(f"/api/v1/service/{made[0]['_id']}")

    first = tenant.get("/api/v1/service/paged").json()
    assert first["totalSize"] == 13
    assert len(first["items"]) == 10  # the services' default page size
    assert len(tenant.get("/api/v1/service/paged", params={"pageSize": 4}).json()["items"]) == 4
    assert len(tenant.get("/api/v1/service/paged", params={"size": 3}).json()["items"]) == 3
    assert first["items"][0]["_id"] == made[0]["_id"]  # most recently updated first

    found = tenant.get("/api/v1/service/paged", params={"phrase": "towel"}).json()
    assert [i["_id"] for i in found["items"]] == [beard_dto["_id"]]
    found = tenant.get("/api/v1/service/paged", params={"phrase": "BRODA"}).json()
    assert [i["_id"] for i in found["items"]] == [beard_dto["_id"]]
    assert (
        tenant.get("/api/v1/service/paged", params={"phrase": "usŁuga 1"}).json()["totalSize"] == 2
    )
    assert tenant.get("/api/v1/service/paged", params={"phrase": "%"}).json()["totalSize"] == 0

    deleted = tenant.get("/api/v1/service/paged", params={"state": "deleted"}).json()
    assert [i["_id"] for i in deleted["items"]] == [made[0]["_id"]]
    both = tenant.get("/api/v1/service/paged", params={"state": ["deleted", "active"]}).json()
    assert both["totalSize"] == 13

    since = beard_dto["updatedAt"]
    recent = tenant.get("/api/v1/service/paged", params={"updatedSince": since}).json()
    assert {i["_id"] for i in recent["items"]} == {beard_dto["_id"], made[0]["_id"]}

    by_order = tenant.get(
        "/api/v1/service/paged", params={"orderBy": "order", "orderDir": "asc", "size": 100}
    ).json()["items"]
    orders = [i["order"] for i in by_order]
    assert orders[:8] == [1, 2, 4, 5, 7, 8, 10, 11]
    assert orders[8:] == [None] * 5  # services without an order come last

    walked: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"orderBy": "order", "orderDir": "desc", "size": 4}
        if cursor:
            params["cursor"] = cursor
        got = tenant.get("/api/v1/service/paged", params=params).json()
        walked += [i["_id"] for i in got["items"]]
        cursor = got.get("nextCursor")
        if not cursor:
            break
    assert sorted(walked) == sorted(i["_id"] for i in by_order)
    assert len(walked) == 13
    by_page = []
    for page in (1, 2, 3, 4):
        got = tenant.get(
            "/api/v1/service/paged",
            params={"orderBy": "createdAt", "orderDir": "asc", "page": page, "pageSize": 4},
        ).json()
        by_page += [i["_id"] for i in got["items"]]
    assert by_page == [m["_id"] for m in made] + [beard_dto["_id"]]
    assert_error(tenant.get("/api/v1/service/paged", params={"cursor": "garbage"}), 400)
    assert_error(tenant.get("/api/v1/service/paged", params={"pageSize": 1001}), 400)


def test_another_tenant_sees_and_changes_nothing(client: httpx.Client, settings: Settings) -> None:
    owner = new_tenant(client, settings)
    other = new_tenant(client, settings)
    dto = create(owner, order=1)
    path = f"/api/v1/service/{dto['_id']}"
    assert_error(other.get(path), 404)
    assert_error(other.put(path, json=dto), 404)
    assert_error(other.put(f"{path}/required-resources", json=[]), 404)
    assert_error(other.delete(path), 404)
    assert other.get("/api/v1/service/paged").json() == {"items": [], "totalSize": 0}
    assert other.get("/api/v1/service/paged", params={"phrase": "haircut"}).json()["totalSize"] == 0
    assert owner.get(path).json() == dto


def test_server_fields_cannot_be_smuggled_in(client: httpx.Client, settings: Settings) -> None:
    tenant = new_tenant(client, settings)
    sent = body(
        _version="99",
        tenantId="other",
        updatedAt="1999-01-01T00:00:00Z",
        object="Evil",
        isAdmin=True,
    )
    sent["presentation"] = {
        "color": "#fff",
        "banners": [{"_id": "x", "url": "https://evil.example/a.png"}],
    }
    dto = tenant.post("/api/v1/service", json=sent).json()
    assert dto["_version"] == "1"
    assert dto["object"] == "ServiceDto"
    assert dto["updatedAt"] != "1999-01-01T00:00:00.000Z"
    assert "isAdmin" not in dto
    assert "tenantId" not in dto
    assert dto["presentation"]["banners"] == []


def test_the_events_are_named_for_what_happened_and_carry_who_and_why(
    client: httpx.Client, settings: Settings
) -> None:
    tenant = new_tenant(client, settings, sub="user-7")
    dto = create(tenant)
    path = f"/api/v1/service/{dto['_id']}"
    changed = {**dto, "order": 9, "presentation": {"color": "#abc"}}
    tenant.put(path, json=changed, headers={"X-Request-Id": "req-put-1"})
    tenant.put(f"{path}/required-resources", json=[{"resourceId": "r", "quantity": 1}])
    tenant.delete(path)
    app = panel_application(settings)
    try:
        events = list(app.events.get(f"service:{tenant.tenant_id}:{dto['_id']}"))
    finally:
        app.close()
    assert [type(e).__name__ for e in events] == [
        "ServiceCreated",
        "ServiceDetailsChanged",
        "ServicePresentationChanged",
        "ServiceResourcesSet",
        "ServiceStateChanged",
    ]
    assert {(e.tenant_id, e.actor) for e in events} == {(tenant.tenant_id, "user-7")}  # type: ignore[attr-defined]
    assert events[1].request_id == "req-put-1"  # type: ignore[attr-defined]
