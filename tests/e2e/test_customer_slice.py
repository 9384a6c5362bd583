"""A customer travels from the write API through the event store, relay, Kafka and projector
into the read model, and the read API lists it at once (read-your-writes)."""

from __future__ import annotations

import re

import httpx

from beeoclock.bootstrap import panel_application
from beeoclock.settings import Settings
from tests.support import Tenant, new_tenant, token


def test_a_created_customer_is_readable_at_once_by_id_and_in_the_list(
    client: httpx.Client, settings: Settings
) -> None:
    tenant = new_tenant(client, settings)
    body = {
        "_id": "67bd8f7452117c3de1196e27",
        "firstName": "Anna",
        "lastName": "Nowak",
        "email": "anna.nowak@example.com",
        "phone": "48512345678",
    }
    created = tenant.post("/api/v1/customer", json=body)
    assert created.status_code == 201, created.text
    dto = created.json()
    assert dto["_id"] == body["_id"]
    assert dto["object"] == "CustomerDto"
    assert created.headers["ETag"] == '"1"'
    assert int(created.headers["X-Event-Position"]) > 0

    fetched = tenant.get(f"/api/v1/customer/{body['_id']}")
    assert fetched.status_code == 200, fetched.text
    assert fetched.json() == dto
    assert fetched.headers["ETag"] == '"1"'

    page = tenant.get("/api/v1/customer/paged", params={"page": 1, "pageSize": 20, "x": "y"})
    assert page.status_code == 200
    assert page.json() == {"items": [dto], "totalSize": 1}


def test_the_dto_has_the_contract_shape_and_millisecond_timestamps(
    client: httpx.Client, settings: Settings
) -> None:
    tenant = new_tenant(client, settings)
    dto = tenant.post("/api/v1/customer", json={"email": "x@example.com"}).json()
    assert re.fullmatch(r"[0-9a-f]{24}", dto["_id"])
    assert dto["customerType"] == "regular"
    assert dto["state"] == "active"
    assert dto["_version"] == "1"
    iso_ms = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
    assert re.fullmatch(iso_ms, dto["createdAt"])
    assert re.fullmatch(iso_ms, dto["updatedAt"])
    assert dto["stateHistory"] == [{"state": "active", "setAt": dto["createdAt"]}]


def test_each_event_carries_tenant_actor_and_request_id(
    client: httpx.Client, settings: Settings
) -> None:
    tenant = new_tenant(client, settings, sub="user-42")
    created = tenant.post(
        "/api/v1/customer", json={"firstName": "Eve"}, headers={"X-Request-Id": "req-abc-123"}
    )
    assert created.headers["X-Request-Id"] == "req-abc-123"
    app = panel_application(settings)
    try:
        [event] = app.events.get(f"customer:{tenant.tenant_id}:{created.json()['_id']}")
    finally:
        app.close()
    assert (event.tenant_id, event.actor, event.request_id) == (  # type: ignore[attr-defined]
        tenant.tenant_id,
        "user-42",
        "req-abc-123",
    )


def test_every_update_is_visible_to_the_next_read(client: httpx.Client, settings: Settings) -> None:
    tenant = new_tenant(client, settings)
    customer_id = tenant.post("/api/v1/customer", json={"firstName": "A"}).json()["_id"]
    for i in range(10):
        name = f"A{i}"
        updated = tenant.put(f"/api/v1/customer/{customer_id}", json={"firstName": name})
        assert updated.status_code == 200
        assert tenant.get(f"/api/v1/customer/{customer_id}").json()["firstName"] == name
        [item] = tenant.get("/api/v1/customer/paged").json()["items"]
        assert item["firstName"] == name


def test_delete_is_soft_and_repeatable(client: httpx.Client, settings: Settings) -> None:
    tenant = new_tenant(client, settings)
    customer_id = tenant.post("/api/v1/customer", json={"firstName": "A"}).json()["_id"]
    first = tenant.delete(f"/api/v1/customer/{customer_id}")
    assert first.status_code == 200
    assert first.json()["state"] == "inactive"
    again = tenant.delete(f"/api/v1/customer/{customer_id}")
    assert again.status_code == 200
    assert again.json()["_version"] == first.json()["_version"]
    assert tenant.get(f"/api/v1/customer/{customer_id}").json()["state"] == "inactive"
    assert tenant.delete("/api/v1/customer/nope").status_code == 404


def test_a_stale_if_match_is_a_conflict(client: httpx.Client, settings: Settings) -> None:
    tenant = new_tenant(client, settings)
    customer_id = tenant.post("/api/v1/customer", json={"firstName": "A"}).json()["_id"]
    ok = tenant.put(
        f"/api/v1/customer/{customer_id}", json={"firstName": "B"}, headers={"If-Match": '"1"'}
    )
    assert ok.status_code == 200
    stale = tenant.put(
        f"/api/v1/customer/{customer_id}", json={"firstName": "C"}, headers={"If-Match": '"1"'}
    )
    assert stale.status_code == 409
    assert stale.json()["statusCode"] == 409
    assert tenant.get(f"/api/v1/customer/{customer_id}").json()["firstName"] == "B"


def test_another_tenant_sees_nothing(client: httpx.Client, settings: Settings) -> None:
    owner = new_tenant(client, settings)
    other = new_tenant(client, settings)
    customer_id = owner.post("/api/v1/customer", json={"firstName": "A"}).json()["_id"]
    assert other.get(f"/api/v1/customer/{customer_id}").status_code == 404
    assert other.put(f"/api/v1/customer/{customer_id}", json={"firstName": "X"}).status_code == 404
    assert other.get("/api/v1/customer/paged").json() == {"items": [], "totalSize": 0}
    assert owner.get(f"/api/v1/customer/{customer_id}").json()["firstName"] == "A"


def test_the_same_id_in_two_tenants_is_two_customers(
    client: httpx.Client, settings: Settings
) -> None:
    one, two = new_tenant(client, settings), new_tenant(client, settings)
    body = {"_id": "aaaaaaaaaaaaaaaaaaaaaaaa", "firstName": "One"}
    assert one.post("/api/v1/customer", json=body).status_code == 201
    assert two.post("/api/v1/customer", json={**body, "firstName": "Two"}).status_code == 201
    assert one.post("/api/v1/customer", json=body).status_code == 409
    assert one.get(f"/api/v1/customer/{body['_id']}").json()["firstName"] == "One"
    assert two.get(f"/api/v1/customer/{body['_id']}").json()["firstName"] == "Two"


def assert_error(response: httpx.Response, status: int) -> dict[str, object]:
    assert response.status_code == status, response.text
    doc: dict[str, object] = response.json()
    assert doc["statusCode"] == status
    assert isinstance(doc["error"], str)
    assert isinstance(doc["message"], str)
    return doc


def test_missing_or_bad_tokens_get_401_and_change_nothing(
    client: httpx.Client, settings: Settings
) -> None:
    tenant = new_tenant(client, settings)
    forged = token(
        settings.model_copy(update={"jwt_secret": "z" * 40}),
        {tenant.tenant_id: ["CREATE_CUSTOMER"]},
    )
    expired = token(settings, {tenant.tenant_id: ["CREATE_CUSTOMER"]}, ttl=-300)
    for auth in (None, "Bearer", "Bearer abc.def.ghi", f"Bearer {forged}", f"Bearer {expired}"):
        headers = {"x-business-tenant-id": tenant.tenant_id}
        if auth:
            headers["Authorization"] = auth
        assert_error(client.post("/api/v1/customer", json={"firstName": "A"}, headers=headers), 401)
        assert_error(client.get("/api/v1/customer/paged", headers=headers), 401)
    assert tenant.get("/api/v1/customer/paged").json()["totalSize"] == 0


def test_a_tenant_not_granted_by_the_token_gets_403(
    client: httpx.Client, settings: Settings
) -> None:
    tenant = new_tenant(client, settings)
    intruder = Tenant(client, "someone-else", tenant.token)
    assert_error(intruder.post("/api/v1/customer", json={"firstName": "A"}), 403)
    assert_error(intruder.get("/api/v1/customer/paged"), 403)
    no_header = client.get(
        "/api/v1/customer/paged", headers={"Authorization": f"Bearer {tenant.token}"}
    )
    assert_error(no_header, 403)


def test_invalid_bodies_get_400_with_field_errors_and_store_nothing(
    client: httpx.Client, settings: Settings
) -> None:
    tenant = new_tenant(client, settings)
    for body in (
        {},
        {"firstName": ""},
        {"firstName": "x" * 51},
        {"firstName": "A", "customerType": "vip"},
        {"firstName": "A", "state": "gone"},
        [1, 2],
    ):
        doc = assert_error(tenant.post("/api/v1/customer", json=body), 400)
        assert doc["errors"]
    not_json = tenant.post(
        "/api/v1/customer", content=b"{oops", headers={"content-type": "application/json"}
    )
    doc = assert_error(not_json, 400)
    assert doc["message"] == "is not valid JSON"
    assert doc["errors"] == [
        {
            "error": "body",
            "message": "is not valid JSON",
            "detail": "expecting property name enclosed in double quotes at character 1",
        }
    ]
    # JSON sent as something else: its media type is refused (FastAPI does not parse it)
    for media in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data"):
        sent = tenant.post(
            "/api/v1/customer", content=b'{"firstName": "A"}', headers={"content-type": media}
        )
        assert_error(sent, 415)
    assert tenant.get("/api/v1/customer/paged").json()["totalSize"] == 0


def test_server_fields_cannot_be_smuggled_in(client: httpx.Client, settings: Settings) -> None:
    tenant = new_tenant(client, settings)
    dto = tenant.post(
        "/api/v1/customer",
        json={
            "firstName": "A",
            "_version": "99",
            "tenantId": "other",
            "updatedAt": "1999-01-01T00:00:00Z",
            "object": "Evil",
            "isAdmin": True,
        },
    ).json()
    assert dto["_version"] == "1"
    assert dto["object"] == "CustomerDto"
    assert dto["updatedAt"] != "1999-01-01T00:00:00Z"
    assert "isAdmin" not in dto
    assert "tenantId" not in dto


def test_a_read_can_wait_for_a_position_or_opt_out_of_waiting(
    client: httpx.Client, settings: Settings
) -> None:
    tenant = new_tenant(client, settings)
    created = tenant.post("/api/v1/customer", json={"firstName": "A"})
    position = created.headers["X-Event-Position"]
    waited = tenant.get("/api/v1/customer/paged", headers={"X-Min-Position": position})
    assert waited.json()["totalSize"] == 1
    both = {"X-Min-Position": position, "X-Consistency": "eventual"}
    assert tenant.get("/api/v1/customer/paged", headers=both).json()["totalSize"] == 1
    eventual = tenant.get("/api/v1/customer/paged", headers={"X-Consistency": "eventual"})
    assert eventual.status_code == 200
    # a position past the tenant's own writes belongs to others: nothing to wait for
    beyond = tenant.get("/api/v1/customer/paged", headers={"X-Min-Position": str(10**15)})
    assert beyond.json()["totalSize"] == 1
    for bad in ("soon", "-1", "\u00b2", "9" * 40):
        header = {"X-Min-Position": bad.encode("latin-1")}
        bad_header = tenant.get("/api/v1/customer/paged", headers=header)
        assert_error(bad_header, 400)


def test_health_readiness_and_openapi(client: httpx.Client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    assert ready == {"status": "ok", "checks": {"database": "ok", "broker": "ok", "cache": "ok"}}
    spec = client.get("/openapi.json").json()
    assert "/api/v1/customer/paged" in spec["paths"]
    assert "post" in spec["paths"]["/api/v1/customer"]
    assert client.get("/docs").status_code == 200
    assert_error(client.get("/nowhere"), 404)
