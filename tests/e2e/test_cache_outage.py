"""Redis is an accelerator: when it dies, reads and writes go on (from PostgreSQL), readiness
says so, and caching resumes when it is back."""

from __future__ import annotations

import httpx
import pytest
import redis

from beeoclock.embedded import free_port, spawn_redis
from tests.support import eventually, isolated, new_tenant, running, wait_until_projecting

pytestmark = pytest.mark.slow


def test_reads_and_writes_survive_a_redis_crash_and_caching_resumes(
    servers: dict[str, str],
) -> None:
    redis_port = free_port()
    server = spawn_redis(redis_port)
    url = f"redis://127.0.0.1:{redis_port}/0"
    try:
        with (
            isolated({**servers, "redis": url}) as settings,
            running(settings, "api", "relay", "projector") as stack,
            httpx.Client(base_url=stack.base_url, timeout=15) as client,
        ):
            wait_until_projecting(stack)
            tenant = new_tenant(client, settings)
            customer_id = tenant.post("/api/v1/customer", json={"firstName": "A"}).json()["_id"]
            cache = redis.Redis.from_url(url)

            def cached() -> bool:
                assert tenant.get(f"/api/v1/customer/{customer_id}").status_code == 200
                return bool(cache.keys(f"v:{tenant.tenant_id}:*"))

            # the first read may race the projector's generation bump after its commit: an
            # answer computed under the old generation is (rightly) not stored
            eventually(cached, timeout_s=15, interval_s=0.3)

            server.kill()
            server.wait()
            assert tenant.get(f"/api/v1/customer/{customer_id}").json()["firstName"] == "A"
            updated = tenant.put(f"/api/v1/customer/{customer_id}", json={"firstName": "B"})
            assert updated.status_code == 200
            assert tenant.get(f"/api/v1/customer/{customer_id}").json()["firstName"] == "B"
            assert tenant.get("/api/v1/customer/paged").json()["totalSize"] == 1
            ready = client.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["checks"]["cache"] == "unreachable"

            server = spawn_redis(redis_port)
            cache = redis.Redis.from_url(url)

            eventually(cached, timeout_s=15, interval_s=0.3)
            assert tenant.get(f"/api/v1/customer/{customer_id}").json()["firstName"] == "B"
            assert client.get("/readyz").status_code == 200
    finally:
        server.kill()
        server.wait()
