"""Bounded input: oversized bodies are refused from their declared length before a byte of
them is read, lists and strings have caps, and fields a client invents never reach an event."""

from __future__ import annotations

import socket
import time

import httpx
import psycopg
import pytest

from beeoclock.settings import Settings
from tests.e2e.test_service_api import body as service_body
from tests.support import Stack, Tenant, new_tenant

MULTIPART = "multipart/form-data; boundary=x"


def declare_only(
    stack: Stack, tenant: Tenant, method: str, path: str, content_type: str, length: int
) -> bytes:
    """Send a request's head declaring `length` body bytes, and none of them; return what
    the server answers meanwhile."""
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: {tenant.headers['Authorization']}\r\n"
        f"x-business-tenant-id: {tenant.tenant_id}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {length}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", stack.port), timeout=5) as sock:
        sock.sendall(head.encode())
        started = time.monotonic()
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
        assert time.monotonic() - started < 3, "the server waited for the body"
    return answer


@pytest.mark.parametrize(
    ("method", "path", "content_type", "length"),
    [
        ("POST", "/api/v1/customer", "application/json", 1024 * 1024 + 1),
        ("PUT", "/api/v1/service/{service_id}", "application/json", 10 * 1024**3),
        ("POST", "/api/v1/service/{service_id}/media", MULTIPART, 6 * 1024**2),
        ("PATCH", "/api/v1/service-media/{service_id}/banners", MULTIPART, 10**12),
    ],
)
def test_a_body_declared_too_large_is_413_before_it_is_sent(
    stack: Stack,
    client: httpx.Client,
    settings: Settings,
    method: str,
    path: str,
    content_type: str,
    length: int,
) -> None:
    tenant = new_tenant(client, settings)
    service_id = tenant.post("/api/v1/service", json=service_body()).json()["_id"]
    answer = declare_only(
        stack, tenant, method, path.format(service_id=service_id), content_type, length
    )
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    assert b'"statusCode":413' in answer


def test_lists_and_strings_are_capped(client: httpx.Client, settings: Settings) -> None:
    tenant = new_tenant(client, settings)
    assert tenant.get("/api/v1/customer/paged", params={"pageSize": 1001}).status_code == 400
    assert tenant.get("/api/v1/customer/paged", params={"pageSize": 1000}).status_code == 200
    assert tenant.get("/api/v1/customer/paged", params={"phrase": "x" * 201}).status_code == 400
    assert tenant.post("/api/v1/customer", json={"firstName": "x" * 51}).status_code == 400
    assert (
        tenant.post("/api/v1/customer", json={"firstName": "A", "note": "x" * 1001}).status_code
        == 400
    )
    history = [{"state": "active", "setAt": "2025-01-01T00:00:00.000Z"}] * 1001
    assert (
        tenant.post(
            "/api/v1/customer", json={"firstName": "A", "stateHistory": history}
        ).status_code
        == 400
    )
    assert tenant.get(f"/api/v1/customer/{'x' * 65}").status_code == 404


def test_fields_a_client_invents_never_reach_an_event(
    client: httpx.Client, settings: Settings
) -> None:
    tenant = new_tenant(client, settings)
    marker = "INVENTED-7f3a"
    customer = tenant.post(
        "/api/v1/customer",
        json={"firstName": "A", "isAdmin": marker, "tenantId": marker, "_version": marker},
    )
    service = tenant.post(
        "/api/v1/service",
        json=service_body(
            owner=marker,
            presentation={"color": "#fff", "banners": [{"url": marker}], "x": marker},
            prepaymentPolicy={"isRequired": False, "hack": marker},
        ),
    )
    assert customer.status_code == service.status_code == 201, (customer.text, service.text)
    with psycopg.connect(settings.database_url) as conn:
        rows = conn.execute(
            "SELECT state FROM panel_events WHERE originator_id LIKE %s",
            (f"%:{tenant.tenant_id}:%",),
        ).fetchall()
    assert rows
    for (state,) in rows:
        assert marker.encode() not in bytes(state)
