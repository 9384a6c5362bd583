"""One JSON access-log line per request, with who, what and how it went, and no personal data:
not the body, not the query string, not the token."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx

from beeoclock.settings import Settings
from tests.support import Stack, eventually, new_tenant


def access_lines(stack: Stack) -> dict[str, dict[str, Any]]:
    lines = {}
    for line in stack.log("api").splitlines():
        if '"beeoclock.access"' in line:
            entry = json.loads(line)
            lines[entry.get("requestId")] = entry
    return lines


def test_every_request_is_logged_with_its_route_and_outcome_and_no_personal_data(
    stack: Stack, client: httpx.Client, settings: Settings
) -> None:
    tenant = new_tenant(client, settings, sub="panel-user-7")
    email, phone, surname = f"{uuid.uuid4().hex}@example.com", "+48 512 345 678", "Zażółć"
    ids = {name: uuid.uuid4().hex for name in ("create", "read", "search", "anonymous", "nowhere")}

    created = tenant.post(
        "/api/v1/customer",
        json={"lastName": surname, "email": email, "phone": phone},
        headers={"X-Request-Id": ids["create"]},
    )
    assert created.status_code == 201
    customer_id = created.json()["_id"]
    tenant.get(f"/api/v1/customer/{customer_id}", headers={"X-Request-Id": ids["read"]})
    tenant.get(
        "/api/v1/customer/paged",
        params={"phrase": email},
        headers={"X-Request-Id": ids["search"]},
    )
    client.get(f"/api/v1/customer/{customer_id}", headers={"X-Request-Id": ids["anonymous"]})
    client.get(f"/api/v1/{email}", headers={"X-Request-Id": ids["nowhere"]})

    lines = eventually(
        lambda: (found := access_lines(stack)) and set(ids.values()) <= set(found) and found
    )
    create, read = lines[ids["create"]], lines[ids["read"]]
    assert create["method"] == "POST"
    assert create["route"] == "/api/v1/customer"
    assert (create["tenant"], create["subject"], create["status"]) == (
        tenant.tenant_id,
        "panel-user-7",
        201,
    )
    assert isinstance(create["latencyMs"], float)
    assert create["time"]
    assert create["level"] == "info"
    assert read["route"] == "/api/v1/customer/{customer_id}"
    assert read["entityId"] == customer_id
    assert read["status"] == 200
    assert lines[ids["search"]]["route"] == "/api/v1/customer/paged"
    assert lines[ids["anonymous"]]["status"] == 401
    assert "subject" not in lines[ids["anonymous"]]
    assert (lines[ids["nowhere"]]["status"], lines[ids["nowhere"]]["route"]) == (404, None)

    log = stack.log("api")
    for secret in (
        email,
        email.split("@", maxsplit=1)[0],
        "48512345678",
        "512 345 678",
        surname,
        tenant.token,
    ):
        assert secret not in log, f"{secret!r} is in the log"
