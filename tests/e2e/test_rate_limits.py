"""Rate limits through the API: of many concurrent callers exactly the limit succeeds, the rest
get 429 with `Retry-After` and `RateLimit` headers and change nothing; and when Redis is gone,
the configured kinds of request go on while the others get 503."""

from __future__ import annotations

import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import psycopg
import pytest

from beeoclock.embedded import free_port, spawn_redis
from tests.support import Tenant, isolated, new_tenant, running, token

pytestmark = pytest.mark.slow


def stored_customers(database_url: str, tenant_id: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM panel_events WHERE originator_id LIKE %s "
            "AND originator_version = 1",
            (f"customer:{tenant_id}:%",),
        ).fetchone()
    return int(row[0]) if row else 0


def race(
    tenant: Tenant, requests: int, method: str, path: str, **kwargs: object
) -> list[httpx.Response]:
    def one(i: int) -> httpx.Response:
        extra = {"json": {"firstName": f"N{i}"}} if method == "POST" else {}
        return tenant.request(method, path, **(extra | kwargs))  # type: ignore[arg-type]

    with ThreadPoolExecutor(max_workers=24) as pool:
        return list(pool.map(one, range(requests)))


def test_exactly_the_limit_of_concurrent_writes_and_reads_succeeds(servers: dict[str, str]) -> None:
    with (
        isolated(
            servers, rate_limit_customer_write="20/h", rate_limit_customer_read="30/h"
        ) as settings,
        running(settings, "api") as stack,
        httpx.Client(base_url=stack.base_url, timeout=30) as client,
    ):
        tenant = new_tenant(client, settings)
        writes = race(tenant, 60, "POST", "/api/v1/customer")
        assert Counter(r.status_code for r in writes) == {201: 20, 429: 40}
        assert stored_customers(settings.database_url, tenant.tenant_id) == 20

        refused = next(r for r in writes if r.status_code == 429)
        assert refused.json()["statusCode"] == 429
        assert 170 <= int(refused.headers["retry-after"]) <= 180  # 3600 s / 20
        assert refused.headers["ratelimit-limit"] == "20"
        assert refused.headers["ratelimit-remaining"] == "0"
        assert refused.headers["ratelimit-policy"] == '20;w=3600;name="customer_write"'
        accepted = next(r for r in writes if r.status_code == 201)
        assert accepted.headers["ratelimit-limit"] == "20"
        assert int(accepted.headers["ratelimit-remaining"]) < 20

        reads = race(
            tenant, 45, "GET", "/api/v1/customer/paged", headers={"X-Consistency": "eventual"}
        )
        assert Counter(r.status_code for r in reads) == {200: 30, 429: 15}

        # another user of the tenant, and the same user in another tenant, have their own
        colleague = Tenant(
            client,
            tenant.tenant_id,
            token(settings, {tenant.tenant_id: ["CREATE_CUSTOMER"]}, sub="user-2"),
        )
        assert colleague.post("/api/v1/customer", json={"firstName": "C"}).status_code == 201
        elsewhere = new_tenant(client, settings)
        assert elsewhere.post("/api/v1/customer", json={"firstName": "E"}).status_code == 201


def test_without_redis_reads_go_on_and_writes_are_refused_or_the_reverse(
    servers: dict[str, str],
) -> None:
    redis_port = free_port()
    server = spawn_redis(redis_port)
    url = f"redis://127.0.0.1:{redis_port}/0"
    limits = {"rate_limit_customer_write": "100/min", "rate_limit_customer_read": "100/min"}
    try:
        with (
            isolated({**servers, "redis": url}, **limits) as settings,
            running(settings, "api") as default,
            httpx.Client(base_url=default.base_url, timeout=30) as client,
        ):
            tenant = new_tenant(client, settings)
            assert tenant.post("/api/v1/customer", json={"firstName": "A"}).status_code == 201
            reverse = running(
                settings.model_copy(update={"rate_limit_without_redis": "write,upload"}), "api"
            )
            with reverse as other, httpx.Client(base_url=other.base_url, timeout=30) as client2:
                other_tenant = Tenant(client2, tenant.tenant_id, tenant.token)
                server.kill()
                server.wait()
                eventual = {"X-Consistency": "eventual"}

                # default: reads allowed, writes refused with 503 (and nothing stored)
                assert tenant.get("/api/v1/customer/paged", headers=eventual).status_code == 200
                refused = tenant.post("/api/v1/customer", json={"firstName": "B"})
                assert refused.status_code == 503, refused.text
                assert refused.headers["retry-after"] == "1"
                assert stored_customers(settings.database_url, tenant.tenant_id) == 1

                # configured the other way round
                read = other_tenant.get("/api/v1/customer/paged", headers=eventual)
                assert read.status_code == 503
                write = other_tenant.post("/api/v1/customer", json={"firstName": "C"})
                assert write.status_code == 201, write.text
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def test_a_refused_request_is_refused_before_its_body_is_read(servers: dict[str, str]) -> None:
    """429 comes from the gate, before any route runs: even a body too large is not read."""
    with (
        isolated(servers, rate_limit_customer_write="1/h") as settings,
        running(settings, "api") as stack,
        httpx.Client(base_url=stack.base_url, timeout=30) as client,
    ):
        tenant = new_tenant(client, settings, sub=uuid.uuid4().hex)
        assert tenant.post("/api/v1/customer", json={"firstName": "A"}).status_code == 201
        big = b'{"firstName": "' + b"x" * (2 * 1024 * 1024) + b'"}'
        response = tenant.post(
            "/api/v1/customer", content=big, headers={"content-type": "application/json"}
        )
        assert response.status_code == 429
