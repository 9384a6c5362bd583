"""What every API route needs: the permission a caller must hold in the request's tenant, and
the rate-limit class it counts against. Declared here once per route, for both APIs; the
request gate (beeoclock/gate.py) enforces it before a route runs, and a route missing from
this table is refused (403) and fails the test suite (tests/unit/test_route_table.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

READ_CUSTOMER = "READ_CUSTOMER"
CREATE_CUSTOMER = "CREATE_CUSTOMER"
EDIT_CUSTOMER = "EDIT_CUSTOMER"
DELETE_CUSTOMER = "DELETE_CUSTOMER"
READ_SERVICE = "READ_SERVICE"
CREATE_SERVICE = "CREATE_SERVICE"
EDIT_SERVICE = "EDIT_SERVICE"
DELETE_SERVICE = "DELETE_SERVICE"
MANAGE_SERVICE_MEDIA = "MANAGE_SERVICE_MEDIA"
READ_AUDIT = "READ_AUDIT"

ALL_PERMISSIONS = (
    READ_CUSTOMER,
    CREATE_CUSTOMER,
    EDIT_CUSTOMER,
    DELETE_CUSTOMER,
    READ_SERVICE,
    CREATE_SERVICE,
    EDIT_SERVICE,
    DELETE_SERVICE,
    MANAGE_SERVICE_MEDIA,
    READ_AUDIT,
)


@dataclass(frozen=True)
class LimitClass:
    """A rate-limit class: its setting (`rate_limit_<name>`) and the kind of request it is,
    which decides what happens while Redis is unreachable (`rate_limit_without_redis`)."""

    name: str
    kind: str


CUSTOMER_READ = LimitClass("customer_read", "read")
CUSTOMER_WRITE = LimitClass("customer_write", "write")
SERVICE_READ = LimitClass("service_read", "read")
SERVICE_WRITE = LimitClass("service_write", "write")
MEDIA_UPLOAD = LimitClass("media_upload", "upload")
LIMIT_CLASSES = (CUSTOMER_READ, CUSTOMER_WRITE, SERVICE_READ, SERVICE_WRITE, MEDIA_UPLOAD)


@dataclass(frozen=True)
class Rule:
    permission: str
    limit: LimitClass
    #: query parameters that need one more permission when present (time travel is an audit)
    query_permissions: Mapping[str, str] = field(default_factory=dict)


_AS_IT_WAS = {"version": READ_AUDIT, "asOf": READ_AUDIT}

#: (method, route template) -> rule, for every route of /api.
ROUTES: dict[tuple[str, str], Rule] = {
    # customers
    ("POST", "/api/v1/customer"): Rule(CREATE_CUSTOMER, CUSTOMER_WRITE),
    ("GET", "/api/v1/customer/paged"): Rule(READ_CUSTOMER, CUSTOMER_READ),
    ("GET", "/api/v1/customer/{customer_id}"): Rule(READ_CUSTOMER, CUSTOMER_READ, _AS_IT_WAS),
    ("GET", "/api/v1/customer/{customer_id}/history"): Rule(READ_AUDIT, CUSTOMER_READ),
    ("GET", "/api/v1/customer/{customer_id}/export"): Rule(READ_AUDIT, CUSTOMER_READ),
    ("PUT", "/api/v1/customer/{customer_id}"): Rule(EDIT_CUSTOMER, CUSTOMER_WRITE),
    ("DELETE", "/api/v1/customer/{customer_id}"): Rule(DELETE_CUSTOMER, CUSTOMER_WRITE),
    # services
    ("POST", "/api/v1/service"): Rule(CREATE_SERVICE, SERVICE_WRITE),
    ("GET", "/api/v1/service/paged"): Rule(READ_SERVICE, SERVICE_READ),
    ("GET", "/api/v1/service/{service_id}"): Rule(READ_SERVICE, SERVICE_READ, _AS_IT_WAS),
    ("GET", "/api/v1/service/{service_id}/history"): Rule(READ_AUDIT, SERVICE_READ),
    ("PUT", "/api/v1/service/{service_id}"): Rule(EDIT_SERVICE, SERVICE_WRITE),
    ("PUT", "/api/v1/service/{service_id}/required-resources"): Rule(EDIT_SERVICE, SERVICE_WRITE),
    ("DELETE", "/api/v1/service/{service_id}"): Rule(DELETE_SERVICE, SERVICE_WRITE),
    # service media
    ("POST", "/api/v1/service/{service_id}/media"): Rule(MANAGE_SERVICE_MEDIA, MEDIA_UPLOAD),
    ("PATCH", "/api/v1/service-media/{service_id}/banners"): Rule(
        MANAGE_SERVICE_MEDIA, MEDIA_UPLOAD
    ),
    ("DELETE", "/api/v1/service/{service_id}/media/{media_id}"): Rule(
        MANAGE_SERVICE_MEDIA, SERVICE_WRITE
    ),
    ("DELETE", "/api/v1/service-media/{service_id}/{media_id}"): Rule(
        MANAGE_SERVICE_MEDIA, SERVICE_WRITE
    ),
    ("GET", "/api/v1/service-media/{service_id}/{media_id}"): Rule(READ_SERVICE, SERVICE_READ),
}
