"""A read that can't reflect the tenant's last write in time answers 503 with Retry-After,
never stale data; it answers as soon as the projections catch up."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.support import eventually, isolated, new_tenant, running

pytestmark = pytest.mark.slow


def test_a_read_behind_the_last_write_is_503_until_the_projector_catches_up(
    servers: dict[str, str],
) -> None:
    with (
        isolated(servers, consistency_timeout_ms=500) as settings,
        running(settings, "api", "relay") as stack,
        httpx.Client(base_url=stack.base_url, timeout=15) as client,
    ):
        tenant = new_tenant(client, settings)
        customer_id = tenant.post("/api/v1/customer", json={"firstName": "A"}).json()["_id"]

        started = time.monotonic()
        behind = tenant.get(f"/api/v1/customer/{customer_id}")
        assert time.monotonic() - started >= 0.5
        assert behind.status_code == 503
        assert behind.headers["Retry-After"] == "1"
        assert behind.json()["statusCode"] == 503
        assert tenant.get("/api/v1/customer/paged").status_code == 503
        # as it was at a version or an instant: from the event store, which is never behind
        past = tenant.get(f"/api/v1/customer/{customer_id}", params={"version": 1})
        assert past.status_code == 200, past.text
        assert past.json()["firstName"] == "A"
        assert (
            tenant.get(
                f"/api/v1/customer/{customer_id}", params={"asOf": "2999-01-01T00:00:00Z"}
            ).status_code
            == 200
        )
        # a list is the read model's, whatever the parameters
        assert tenant.get("/api/v1/customer/paged", params={"version": 1}).status_code == 503

        eventual = {"X-Consistency": "eventual"}
        assert tenant.get(f"/api/v1/customer/{customer_id}", headers=eventual).status_code == 404
        assert tenant.get("/api/v1/customer/paged", headers=eventual).json()["totalSize"] == 0
        other = new_tenant(client, settings)
        assert other.get("/api/v1/customer/paged").json() == {"items": [], "totalSize": 0}

        stack.start("projector")
        eventually(
            lambda: tenant.get(f"/api/v1/customer/{customer_id}").status_code == 200,
            timeout_s=60,
            interval_s=0.2,
        )
        assert tenant.get("/api/v1/customer/paged").json()["totalSize"] == 1
