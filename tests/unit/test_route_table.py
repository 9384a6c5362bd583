"""Every API route declares its permission and rate-limit class in one table
(beeoclock/permissions.py), and the gate finds routes by that table only."""

from __future__ import annotations

import pytest

from beeoclock.app import _routers
from beeoclock.gate import NoRoute, entity_id_of, find_api_route
from beeoclock.permissions import ALL_PERMISSIONS, LIMIT_CLASSES, ROUTES
from beeoclock.settings import Settings


def app_routes() -> set[tuple[str, str]]:
    found = set()
    for router in _routers(write=True, read=True):
        for route in router.routes:
            for method in getattr(route, "methods", ()):
                found.add((method, route.path))  # type: ignore[attr-defined]
    return found


def test_every_api_route_declares_a_permission() -> None:
    undeclared = app_routes() - set(ROUTES)
    assert not undeclared, f"routes without a declared permission: {sorted(undeclared)}"


def test_the_table_names_only_routes_that_exist() -> None:
    assert set(ROUTES) - app_routes() == set()


def test_the_table_uses_known_permissions_and_limit_classes() -> None:
    settings = Settings()
    for rule in ROUTES.values():
        assert rule.permission in ALL_PERMISSIONS
        assert set(rule.query_permissions.values()) <= set(ALL_PERMISSIONS)
        assert rule.limit in LIMIT_CLASSES
        assert settings.rate_limit(rule.limit.name) is not None  # every class has a default


def test_the_default_limits_are_the_documented_ones() -> None:
    settings = Settings()
    limits = {c.name: str(settings.rate_limit(c.name)) for c in LIMIT_CLASSES}
    assert limits == {
        "customer_read": "600/60s",
        "customer_write": "300/60s",
        "service_read": "100/60s",
        "service_write": "30/60s",
        "media_upload": "10/60s",
    }


def test_a_literal_path_wins_over_a_parameter() -> None:
    assert find_api_route("GET", "/api/v1/customer/paged") == ("/api/v1/customer/paged", {})
    assert find_api_route("GET", "/api/v1/customer/abc") == (
        "/api/v1/customer/{customer_id}",
        {"customer_id": "abc"},
    )


def test_a_path_outside_the_table_is_no_route() -> None:
    with pytest.raises(NoRoute) as missing:
        find_api_route("GET", "/api/v1/customer/a/b/c")
    assert missing.value.allowed == set()
    with pytest.raises(NoRoute) as wrong_method:
        find_api_route("PATCH", "/api/v1/customer/abc")
    assert wrong_method.value.allowed == {"GET", "PUT", "DELETE"}


def test_only_a_sane_entity_id_is_logged() -> None:
    assert entity_id_of({"customer_id": "c-1"}) == "c-1"
    assert entity_id_of({"service_id": "s_2"}) == "s_2"
    assert entity_id_of({"customer_id": "a@b.example"}) is None  # could be personal data
    assert entity_id_of({"customer_id": "x" * 65}) is None
    assert entity_id_of({}) is None
