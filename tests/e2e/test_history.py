"""History and time travel through the API, from the event store: who changed what and when,
oldest first, paged; and any customer or service as it was at a version or an instant."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import psycopg
import pytest

from beeoclock.permissions import ALL_PERMISSIONS, READ_AUDIT
from beeoclock.settings import Settings
from tests.e2e.test_service_api import body as service_body
from tests.support import Tenant, new_tenant, token


def as_user(tenant: Tenant, settings: Settings, sub: str) -> Tenant:
    bearer = token(settings, {tenant.tenant_id: list(ALL_PERMISSIONS)}, sub=sub)
    return Tenant(tenant.client, tenant.tenant_id, bearer)


def fresh(client: httpx.Client, settings: Settings) -> Tenant:
    return new_tenant(client, settings, sub="anna")


def ok(response: httpx.Response, status: int = 200) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json() if response.content else {}
    return body


def test_a_customers_history_says_who_changed_what_and_when_oldest_first(
    client: httpx.Client, settings: Settings
) -> None:
    anna = fresh(client, settings)
    bob = as_user(anna, settings, "bob")
    created = ok(
        anna.post(
            "/api/v1/customer",
            json={"firstName": "Ewa", "email": "ewa@example.com"},
            headers={"X-Request-Id": "req-create"},
        ),
        201,
    )
    path = f"/api/v1/customer/{created['_id']}"
    ok(
        bob.put(
            path, json={"firstName": "Ewa", "lastName": "Lis"}, headers={"X-Request-Id": "req-put"}
        )
    )
    ok(anna.delete(path, headers={"X-Request-Id": "req-delete"}))

    history = ok(anna.get(f"{path}/history"))
    assert history["totalSize"] == 3
    items = history["items"]
    assert [i["version"] for i in items] == [1, 2, 3]
    assert [i["type"] for i in items] == [
        "CustomerRegistered",
        "CustomerDetailsChanged",
        "CustomerStateChanged",
    ]
    assert [i["actor"] for i in items] == ["anna", "bob", "anna"]
    assert [i["requestId"] for i in items] == ["req-create", "req-put", "req-delete"]
    assert items[0]["at"] == created["createdAt"]
    assert items[0]["changes"]["firstName"] == {"from": None, "to": "Ewa"}
    assert items[1]["changes"] == {
        "email": {"from": "ewa@example.com", "to": None},
        "lastName": {"from": None, "to": "Lis"},
    }
    assert items[2]["changes"]["state"] == {"from": "active", "to": "inactive"}
    assert items[0]["at"] <= items[1]["at"] <= items[2]["at"]

    page2 = ok(anna.get(f"{path}/history", params={"page": 2, "pageSize": 2}))
    assert [i["version"] for i in page2["items"]] == [3]
    assert page2["items"][0] == items[2]
    assert ok(anna.get(f"{path}/history", params={"page": 9}))["items"] == []


def test_history_needs_read_audit_and_an_existing_entity(
    client: httpx.Client, settings: Settings
) -> None:
    anna = fresh(client, settings)
    customer = ok(anna.post("/api/v1/customer", json={"firstName": "A"}), 201)
    reader = Tenant(
        client,
        anna.tenant_id,
        token(settings, {anna.tenant_id: [p for p in ALL_PERMISSIONS if p != READ_AUDIT]}),
    )
    path = f"/api/v1/customer/{customer['_id']}"
    assert reader.get(f"{path}/history").status_code == 403
    assert reader.get(path, params={"version": 1}).status_code == 403
    assert reader.get(path).status_code == 200
    assert anna.get("/api/v1/customer/nobody/history").status_code == 404
    other = fresh(client, settings)
    assert other.get(f"{path}/history").status_code == 404


def test_a_customer_as_it_was_at_a_version_and_at_an_instant(
    client: httpx.Client, settings: Settings
) -> None:
    anna = fresh(client, settings)
    v1 = ok(anna.post("/api/v1/customer", json={"firstName": "One"}), 201)
    path = f"/api/v1/customer/{v1['_id']}"
    time.sleep(0.01)
    v2 = ok(anna.put(path, json={"firstName": "Two"}))
    time.sleep(0.01)
    v3 = ok(anna.put(path, json={"firstName": "Three"}))

    assert ok(anna.get(path, params={"version": 1})) == v1
    assert ok(anna.get(path, params={"version": 2})) == v2
    response = anna.get(path, params={"version": 3})
    assert response.json() == v3
    assert response.headers["etag"] == '"3"'
    assert ok(anna.get(path, params={"asOf": v2["updatedAt"]})) == v2
    assert ok(anna.get(path, params={"asOf": "2999-01-01T00:00:00Z"})) == v3
    assert anna.get(path, params={"version": 4}).status_code == 404
    assert anna.get(path, params={"asOf": "2000-01-01T00:00:00Z"}).status_code == 404
    both = anna.get(path, params={"version": 1, "asOf": v2["updatedAt"]})
    assert both.status_code == 400
    assert anna.get(path, params={"version": 0}).status_code == 400


def test_a_service_as_it_was_even_far_down_a_long_stream(
    client: httpx.Client, settings: Settings
) -> None:
    anna = fresh(client, settings)
    service = ok(anna.post("/api/v1/service", json=service_body("v1")), 201)
    path = f"/api/v1/service/{service['_id']}"
    at: dict[int, str] = {1: service["updatedAt"]}
    for n in range(2, 121):
        at[n] = ok(anna.put(path, json=service_body(f"v{n}")))["updatedAt"]

    with psycopg.connect(settings.database_url) as conn:
        snapshots = conn.execute(
            "SELECT originator_version FROM panel_snapshots WHERE originator_id = %s",
            (f"service:{anna.tenant_id}:{service['_id']}",),
        ).fetchall()
    assert sorted(v for (v,) in snapshots) == [50, 100]
    for version in (1, 49, 50, 51, 75, 100, 120):
        then = ok(anna.get(path, params={"version": version}))
        assert then["languageVersions"][0]["title"] == f"v{version}"
        assert then["_version"] == str(version)
    for version in (60, 101):
        then = ok(anna.get(path, params={"asOf": at[version]}))
        assert then["languageVersions"][0]["title"] == f"v{version}"

    history = ok(anna.get(f"{path}/history", params={"page": 3, "pageSize": 50}))
    assert [i["version"] for i in history["items"]] == list(range(101, 121))
    assert history["items"][0]["changes"]["languageVersions"]["to"][0]["title"] == "v101"
    assert history["items"][0]["changes"]["languageVersions"]["from"][0]["title"] == "v100"


@pytest.mark.parametrize("path", ["/api/v1/customer/{id}/history", "/api/v1/service/{id}/history"])
def test_unknown_or_impossible_ids_have_no_history(
    client: httpx.Client, settings: Settings, path: str
) -> None:
    anna = fresh(client, settings)
    assert anna.get(path.format(id=uuid.uuid4().hex)).status_code == 404
    assert anna.get(path.format(id="bad id!")).status_code in (404,)
