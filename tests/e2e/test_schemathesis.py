"""Property-based: schemathesis generates requests from the running API's own OpenAPI document
(valid and invalid bodies, odd query values, long strings, unicode) and no answer is a 5xx."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from beeoclock.app import create_app
from beeoclock.settings import Settings
from tests.support import Stack, offline_settings, token

pytestmark = pytest.mark.slow

TENANT = "schemathesis-tenant"


def _document() -> dict[str, Any]:
    """The OpenAPI document the API serves at /openapi.json (made by the same code here; the
    tests send the requests to the running API)."""
    return create_app(offline_settings()).openapi()


schema = schemathesis.openapi.from_dict(_document())


@pytest.fixture(scope="module")
def auth(settings: Settings) -> dict[str, str]:
    from beeoclock.permissions import ALL_PERMISSIONS

    bearer = token(settings, {TENANT: list(ALL_PERMISSIONS)}, sub="schemathesis")
    return {"Authorization": f"Bearer {bearer}", "x-business-tenant-id": TENANT}


@schema.parametrize()
@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_no_request_is_answered_with_a_server_error(
    case: Any, stack: Stack, auth: dict[str, str]
) -> None:
    response = case.call(base_url=stack.base_url, headers=auth, timeout=30)
    assert response.status_code < 500, (
        f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:300]}"
    )
