"""Bad input gets a clear 4xx in the contract's shape, changes nothing, and can't reach (let
alone stop) the projector."""

from __future__ import annotations

import base64
import copy
from typing import Any

import httpx
import orjson
import pytest

from beeoclock.settings import Settings
from tests.e2e.test_customer_slice import assert_error
from tests.e2e.test_service_api import body as service_body
from tests.support import new_tenant


@pytest.mark.parametrize(
    "body",
    [
        {"firstName": "Zed", "createdAt": "garbage"},
        {"firstName": "a\u0000b"},
        {"firstName": "two\nlines"},
        {"firstName": "A", "note": "bell\u0007"},
        {"firstName": "A", "stateHistory": [{"state": "active", "setAt": "x\u0000"}]},
        {"_id": "paged", "firstName": "A"},
        {"_id": "has space", "firstName": "A"},
        {"_id": "x" * 65, "firstName": "A"},
    ],
    ids=[
        "createdAt",
        "nul",
        "newline-in-name",
        "control-in-note",
        "nul-in-history",
        "reserved-id",
        "id-alphabet",
        "id-length",
    ],
)
def test_bad_bodies_are_400_and_store_nothing(
    client: httpx.Client, settings: Settings, body: dict[str, object]
) -> None:
    tenant = new_tenant(client, settings)
    doc = assert_error(tenant.post("/api/v1/customer", json=body), 400)
    assert doc["errors"]
    assert tenant.get("/api/v1/customer/paged").json()["totalSize"] == 0


LONE = "\\ud800"  # a JSON escape of half a surrogate pair, as a body's raw text holds it


def _with_lone_surrogate(doc: dict[str, Any], path: tuple[str | int, ...]) -> bytes:
    """`doc` as JSON text, with a lone surrogate escape added to the string at `path`
    (httpx's own encoder can't send one)."""
    marked = copy.deepcopy(doc)
    at: Any = marked
    for key in path[:-1]:
        at = at[key]
    at[path[-1]] = "SURROGATE" + str(at[path[-1]])
    return orjson.dumps(marked).replace(b"SURROGATE", LONE.encode())


@pytest.mark.parametrize(
    ("path", "doc", "field"),
    [
        ("/api/v1/customer", {"firstName": "Ann"}, ("firstName",)),
        ("/api/v1/customer", {"firstName": "A", "lastName": "Lee"}, ("lastName",)),
        ("/api/v1/customer", {"firstName": "A", "note": "n"}, ("note",)),
        ("/api/v1/customer", {"firstName": "A", "email": "a@b.pl"}, ("email",)),
        ("/api/v1/customer", {"firstName": "A", "phone": "+48512345678"}, ("phone",)),
        ("/api/v1/service", service_body(), ("languageVersions", 0, "title")),
        ("/api/v1/service", service_body(), ("languageVersions", 0, "description")),
    ],
    ids=["firstName", "lastName", "note", "email", "phone", "title", "description"],
)
def test_a_lone_surrogate_in_any_text_is_400_and_stores_nothing(
    client: httpx.Client,
    settings: Settings,
    path: str,
    doc: dict[str, Any],
    field: tuple[str | int, ...],
) -> None:
    """JSON may escape half a surrogate pair (`\\ud800`), which Python decodes to a string no
    UTF-8 text can hold: a service title holding one was a 500 (the event could not be
    encoded)."""
    tenant = new_tenant(client, settings)
    raw = _with_lone_surrogate(doc, field)
    headers = {"content-type": "application/json"}
    answer = tenant.post(path, content=raw, headers=headers)
    assert_error(answer, 400)
    assert tenant.get(f"{path}/paged").json()["totalSize"] == 0


def test_a_json_body_sent_without_a_content_type_is_415_and_stores_nothing(
    client: httpx.Client, settings: Settings
) -> None:
    """Not parsed (FastAPI's strict Content-Type, and a browser sends such a body cross-site
    without a preflight): it was a confusing 400 "Input should be a valid dictionary"."""
    tenant = new_tenant(client, settings)
    customer_id = tenant.post("/api/v1/customer", json={"firstName": "A"}).json()["_id"]
    for method, path, body in (
        ("POST", "/api/v1/customer", {"firstName": "B"}),
        ("PUT", f"/api/v1/customer/{customer_id}", {"firstName": "B"}),
        ("POST", "/api/v1/service", service_body()),
    ):
        answer = tenant.request(method, path, content=orjson.dumps(body))
        doc = assert_error(answer, 415)
        assert doc["message"] == "send the body as JSON (Content-Type: application/json)"
    assert tenant.get("/api/v1/customer/paged").json()["totalSize"] == 1
    assert tenant.get(f"/api/v1/customer/{customer_id}").json()["firstName"] == "A"
    assert tenant.get("/api/v1/service/paged").json()["totalSize"] == 0


def test_creation_time_is_normalised_to_utc_milliseconds(
    client: httpx.Client, settings: Settings
) -> None:
    tenant = new_tenant(client, settings)
    dto = tenant.post(
        "/api/v1/customer",
        json={
            "firstName": "A",
            "note": "line 1\nline 2\tend",
            "createdAt": "2024-03-01T12:00:00+02:00",
        },
    ).json()
    assert dto["createdAt"] == "2024-03-01T10:00:00.000Z"
    assert dto["note"] == "line 1\nline 2\tend"
    assert tenant.get(f"/api/v1/customer/{dto['_id']}").json() == dto


def test_impossible_ids_in_paths_are_404(client: httpx.Client, settings: Settings) -> None:
    tenant = new_tenant(client, settings)
    for path in ("a%00b", "a%20b", "x" * 65):
        assert_error(tenant.get(f"/api/v1/customer/{path}"), 404)
        assert_error(tenant.put(f"/api/v1/customer/{path}", json={"firstName": "A"}), 404)
        assert_error(tenant.delete(f"/api/v1/customer/{path}"), 404)


def test_bad_headers_and_parameters_are_400(client: httpx.Client, settings: Settings) -> None:
    tenant = new_tenant(client, settings)
    customer_id = tenant.post("/api/v1/customer", json={"firstName": "A"}).json()["_id"]
    for if_match in ("\u00b2", "abc", "9" * 30):
        changed = tenant.put(
            f"/api/v1/customer/{customer_id}",
            json={"firstName": "B"},
            headers={"If-Match": if_match.encode("latin-1")},
        )
        assert_error(changed, 400)
    for params in (
        {"phrase": "a\u0000b"},
        {"page": "0"},
        {"pageSize": "1001"},
        {"size": "0"},
        {"orderDir": "sideways"},
        {"state": "gone"},
        {"updatedSince": "yesterday"},
        {"page": "x"},
    ):
        assert_error(tenant.get("/api/v1/customer/paged", params=params), 400)
    assert tenant.get(f"/api/v1/customer/{customer_id}").json()["firstName"] == "A"


def _cursor(*parts: object) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(list(parts))).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        "not-base64!",
        base64.urlsafe_b64encode(b"[1,2").decode(),
        _cursor("updatedAt", "desc"),
        _cursor("createdAt", "desc", "2024-01-01T00:00:00+00:00", "abc"),
        _cursor("updatedAt", "desc", 5, "abc"),
        _cursor("updatedAt", "desc", "2024-01-01T00:00:00+00:00", "a\u0000b"),
        _cursor("updatedAt", "desc", "not a time", "abc"),
        _cursor("updatedAt", "desc", "2024-01-01T00:00:00+00:00", 7),
    ],
    ids=[
        "garbage",
        "broken-json",
        "short",
        "other-order",
        "int-key",
        "nul-id",
        "bad-time",
        "int-id",
    ],
)
def test_malformed_cursors_are_400(client: httpx.Client, settings: Settings, cursor: str) -> None:
    tenant = new_tenant(client, settings)
    assert_error(tenant.get("/api/v1/customer/paged", params={"cursor": cursor}), 400)


def test_a_valid_cursor_walks_the_rest(client: httpx.Client, settings: Settings) -> None:
    tenant = new_tenant(client, settings)
    ids = [
        tenant.post("/api/v1/customer", json={"firstName": f"C{i}"}).json()["_id"] for i in range(5)
    ]
    first = tenant.get("/api/v1/customer/paged", params={"pageSize": 2}).json()
    seen = [c["_id"] for c in first["items"]]
    cursor = first["nextCursor"]
    while cursor:
        page = tenant.get("/api/v1/customer/paged", params={"pageSize": 2, "cursor": cursor}).json()
        assert page["totalSize"] == 5
        seen += [c["_id"] for c in page["items"]]
        cursor = page.get("nextCursor")
    assert sorted(seen) == sorted(ids)
    assert len(seen) == 5


def test_a_json_body_over_one_mebibyte_is_413_and_stores_nothing(
    client: httpx.Client, settings: Settings
) -> None:
    tenant = new_tenant(client, settings)
    huge = {"firstName": "Ann", "padding": "x" * (1024 * 1024)}
    answer = tenant.post("/api/v1/customer", json=huge)
    assert answer.status_code == 413, answer.text
    assert answer.json()["statusCode"] == 413
    assert tenant.get("/api/v1/customer/paged").json()["totalSize"] == 0
