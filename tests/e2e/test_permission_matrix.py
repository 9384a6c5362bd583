"""Every API route x {own tenant, another tenant's entity, a tenant not in the token} x
{permission present, missing}, generated from the route table (beeoclock/permissions.py).

- own tenant, permission present: the call succeeds;
- permission missing: 403, whatever the entity;
- another tenant's entity (the caller's own tenant header, the other tenant's ids): 404;
- a tenant the token does not grant: 403;
and the event store is unchanged by every refused call.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
import pytest

from beeoclock.permissions import ALL_PERMISSIONS, ROUTES
from beeoclock.settings import Settings
from tests.e2e.test_service_api import body as service_body
from tests.e2e.test_service_media import image
from tests.support import Stack, Tenant, new_tenant, token


@dataclass(frozen=True)
class Entities:
    customer_id: str
    service_id: str
    media_id: str


def _png() -> dict[str, Any]:
    return {"files": {"file": ("banner.png", image(), "image/png")}}


Request = Callable[[Entities], dict[str, Any]]

#: How to call each route successfully. A route added to the table without an entry here
#: fails `test_every_route_of_the_table_is_in_the_matrix`.
REQUESTS: dict[tuple[str, str], Request] = {
    ("POST", "/api/v1/customer"): lambda e: {
        "json": {"firstName": "Matrix", "email": f"{uuid.uuid4().hex}@example.com"}
    },
    ("GET", "/api/v1/customer/paged"): lambda e: {},
    ("GET", "/api/v1/customer/{customer_id}"): lambda e: {},
    ("GET", "/api/v1/customer/{customer_id}/history"): lambda e: {},
    ("GET", "/api/v1/customer/{customer_id}/export"): lambda e: {},
    ("PUT", "/api/v1/customer/{customer_id}"): lambda e: {"json": {"firstName": "Changed"}},
    ("DELETE", "/api/v1/customer/{customer_id}"): lambda e: {},
    ("POST", "/api/v1/service"): lambda e: {"json": service_body()},
    ("GET", "/api/v1/service/paged"): lambda e: {},
    ("GET", "/api/v1/service/{service_id}"): lambda e: {},
    ("GET", "/api/v1/service/{service_id}/history"): lambda e: {},
    ("PUT", "/api/v1/service/{service_id}"): lambda e: {"json": service_body("Changed")},
    ("PUT", "/api/v1/service/{service_id}/required-resources"): lambda e: {
        "json": [{"resourceId": "r1", "quantity": 2}]
    },
    ("DELETE", "/api/v1/service/{service_id}"): lambda e: {},
    ("POST", "/api/v1/service/{service_id}/media"): lambda e: _png(),
    ("PATCH", "/api/v1/service-media/{service_id}/banners"): lambda e: _png(),
    ("DELETE", "/api/v1/service/{service_id}/media/{media_id}"): lambda e: {},
    ("DELETE", "/api/v1/service-media/{service_id}/{media_id}"): lambda e: {},
    ("GET", "/api/v1/service-media/{service_id}/{media_id}"): lambda e: {},
}

SCOPES = ("own tenant", "another tenant's entity", "a tenant not in the token")
CASES = [
    (method, template, scope, present)
    for (method, template) in sorted(ROUTES)
    for scope in SCOPES
    for present in (True, False)
]


def test_every_route_of_the_table_is_in_the_matrix() -> None:
    assert set(REQUESTS) == set(ROUTES)


def seed(tenant: Tenant) -> Entities:
    customer = tenant.post("/api/v1/customer", json={"firstName": "Seed"})
    service = tenant.post("/api/v1/service", json=service_body())
    assert customer.status_code == service.status_code == 201, (customer.text, service.text)
    service_id = service.json()["_id"]
    banner = tenant.post(f"/api/v1/service/{service_id}/media", **_png())
    assert banner.status_code == 201, banner.text
    return Entities(customer.json()["_id"], service_id, banner.json()["_id"])


def event_count(settings: Settings) -> int:
    with psycopg.connect(settings.database_url) as conn:
        row = conn.execute("SELECT count(*) FROM panel_events").fetchone()
    return int(row[0]) if row else -1


def has_entity(template: str) -> bool:
    return "{" in template


@pytest.fixture(scope="module")
def tenants(stack: Stack, settings: Settings) -> Iterator[tuple[Tenant, Entities, Entities]]:
    """The caller's tenant and its entities; another tenant's entities. Refused calls change
    nothing, so these serve every refused case; a call that succeeds gets fresh ones."""
    with httpx.Client(base_url=stack.base_url, timeout=15) as http:
        owner = new_tenant(http, settings)
        yield owner, seed(owner), seed(new_tenant(http, settings))


@pytest.mark.parametrize(
    ("method", "template", "scope", "present"),
    CASES,
    ids=[f"{m} {t} | {s} | {'with' if p else 'without'} permission" for m, t, s, p in CASES],
)
def test_the_permission_matrix(
    client: httpx.Client,
    settings: Settings,
    tenants: tuple[Tenant, Entities, Entities],
    method: str,
    template: str,
    scope: str,
    present: bool,
) -> None:
    rule = ROUTES[(method, template)]
    owner, own, other = tenants
    owner = Tenant(client, owner.tenant_id, owner.token)
    succeeds = present and scope == "own tenant"
    if succeeds:
        own = seed(owner)

    permissions = (
        [rule.permission] if present else [p for p in ALL_PERMISSIONS if p != rule.permission]
    )
    caller_tenant = owner.tenant_id
    granted_tenant = owner.tenant_id if scope != "a tenant not in the token" else uuid.uuid4().hex
    caller = Tenant(
        client, caller_tenant, token(settings, {granted_tenant: permissions}, sub="caller")
    )
    ids = other if scope == "another tenant's entity" else own
    path = template.format(**vars(ids))

    before = event_count(settings)
    response = caller.request(method, path, **REQUESTS[(method, template)](ids))

    if scope == "a tenant not in the token" or not present:
        expected = 403
    elif scope == "another tenant's entity" and has_entity(template):
        expected = 404
    else:
        assert 200 <= response.status_code < 300, response.text
        if template.endswith("/paged"):
            listed = {item["_id"] for item in response.json()["items"]}
            assert not listed & {other.customer_id, other.service_id}, "another tenant's items"
        return
    assert response.status_code == expected, response.text
    assert response.json()["statusCode"] == expected
    assert event_count(settings) == before, "a refused call changed the event store"


QUERY_CASES = [
    (method, template, query, permission)
    for (method, template), rule in sorted(ROUTES.items())
    for query, permission in sorted(rule.query_permissions.items())
]


@pytest.mark.parametrize(("method", "template", "query", "permission"), QUERY_CASES)
def test_a_query_parameter_that_needs_another_permission(
    client: httpx.Client,
    settings: Settings,
    tenants: tuple[Tenant, Entities, Entities],
    method: str,
    template: str,
    query: str,
    permission: str,
) -> None:
    """Time travel (`?version=`, `?asOf=`) is an audit: the route's permission is not enough."""
    owner, own, _ = tenants
    value = {"version": "1", "asOf": "2999-01-01T00:00:00Z"}[query]
    path = template.format(**vars(own))
    base = ROUTES[(method, template)].permission
    without = Tenant(client, owner.tenant_id, token(settings, {owner.tenant_id: [base]}))
    with_it = Tenant(
        client, owner.tenant_id, token(settings, {owner.tenant_id: [base, permission]})
    )
    assert without.request(method, path, params={query: value}).status_code == 403
    assert without.request(method, path).status_code == 200
    assert with_it.request(method, path, params={query: value}).status_code == 200
