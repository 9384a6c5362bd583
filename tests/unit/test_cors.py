"""The panel runs in a browser on an origin of its own: its preflights are answered before
authentication, every answer carries what the browser needs to show it to the client, and
with no origins configured there is no CORS at all."""

from __future__ import annotations

import json
import logging
import re

import pytest
from fastapi.testclient import TestClient

from beeoclock.app import create_app
from beeoclock.cors import Cors
from beeoclock.devstack import DEV_CORS_ORIGINS, dev_cors_origins
from beeoclock.settings import Settings
from tests.support import offline_settings

PANEL = "http://localhost:4200"
PARTS = {"api": (True, True), "write-api": (True, False), "read-api": (False, True)}


def client(origins: str = PANEL, *, write: bool = True, read: bool = True) -> TestClient:
    """The app as composed for production, its lifespan not run (no server is reached: what
    is tested here is answered before any route runs)."""
    settings = offline_settings().model_copy(update={"cors_origins": origins})
    return TestClient(create_app(settings, write=write, read=read), raise_server_exceptions=False)


def preflight(
    http: TestClient, path: str, method: str, headers: str, origin: str = PANEL
) -> dict[str, str]:
    answer = http.options(
        path,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": headers,
        },
    )
    return {"status": str(answer.status_code), **answer.headers}


def listed(value: str) -> set[str]:
    return {v.strip().lower() for v in value.split(",")}


@pytest.mark.parametrize(
    ("app", "method", "path", "sent"),
    [
        (
            "api",
            "POST",
            "/api/v1/service",
            "authorization, content-type, x-business-tenant-id, x-request-id",
        ),
        ("write-api", "PUT", "/api/v1/customer/abc", "authorization,content-type,if-match"),
        ("write-api", "PATCH", "/api/v1/service-media/abc/banners", "authorization"),
        ("write-api", "DELETE", "/api/v1/service/abc", "Authorization, X-Business-Tenant-Id"),
        (
            "read-api",
            "GET",
            "/api/v1/customer/paged",
            "authorization,x-business-tenant-id,x-consistency,x-min-position",
        ),
        ("read-api", "GET", "/api/v1/service-media/a/b", "authorization,if-none-match"),
    ],
)
def test_a_preflight_from_the_panel_is_answered_before_authentication(
    app: str, method: str, path: str, sent: str
) -> None:
    """No token and no tenant: a browser sends neither with a preflight. It was a 405."""
    write, read = PARTS[app]
    answer = preflight(client(write=write, read=read), path, method, sent)
    assert answer["status"] == "200"
    assert answer["access-control-allow-origin"] == PANEL
    assert method.lower() in listed(answer["access-control-allow-methods"])
    assert listed(sent) <= listed(answer["access-control-allow-headers"])
    assert "access-control-allow-credentials" not in answer
    assert "origin" in listed(answer["vary"])
    assert int(answer["access-control-max-age"]) > 0


def test_a_preflight_from_another_origin_or_for_other_headers_is_refused_in_the_error_shape() -> (
    None
):
    http = client("https://panel.example.com, http://localhost:4200")
    for origin, sent, refused in (
        ("https://evil.example.com", "authorization", "origin"),
        ("http://localhost:4201", "authorization", "origin"),
        (PANEL, "authorization, x-evil", "headers"),
    ):
        answer = http.options(
            "/api/v1/customer",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": sent,
            },
        )
        assert answer.status_code == 400
        assert answer.json() == {
            "statusCode": 400,
            "error": "Bad Request",
            "message": f"cross-origin request refused: {refused} not allowed",
        }
        if refused == "origin":
            assert "access-control-allow-origin" not in answer.headers


def test_a_preflight_has_a_request_id_and_an_access_log_line_like_any_request(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Answered before the gate, it used to get neither: an operator could not see the
    browser's preflights, nor match a refused one to a client's report."""
    access = logging.getLogger("beeoclock.access")
    level = access.level
    access.setLevel(logging.INFO)
    try:
        http = client()
        capsys.readouterr()
        asked = {"Origin": PANEL, "Access-Control-Request-Method": "PUT"}
        allowed = http.options("/api/v1/customer/c-1", headers={**asked, "X-Request-Id": "pre-1"})
        refused = http.options(
            "/api/v1/customer", headers={**asked, "Origin": "https://evil.example"}
        )
        insane = http.options("/api/v1/customer", headers={**asked, "X-Request-Id": "a b"})
        head = http.options(
            "/api/v1/customer/c-1",
            headers={**asked, "Access-Control-Request-Method": "HEAD", "X-Request-Id": "pre-2"},
        )
    finally:
        access.setLevel(level)
    assert (allowed.status_code, refused.status_code, insane.status_code) == (200, 400, 200)
    assert allowed.headers["x-request-id"] == "pre-1"
    assert re.fullmatch(r"[0-9a-f]{32}", refused.headers["x-request-id"])
    assert re.fullmatch(r"[0-9a-f]{32}", insane.headers["x-request-id"])
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    entries = {e["requestId"]: e for e in lines if e.get("logger") == "beeoclock.access"}
    assert set(entries) == {r.headers["x-request-id"] for r in (allowed, refused, insane, head)}
    first, second = entries["pre-1"], entries[refused.headers["x-request-id"]]
    assert (first["method"], first["route"], first["entityId"], first["status"]) == (
        "OPTIONS",
        "/api/v1/customer/{customer_id}",
        "c-1",
        200,
    )
    # no PUT on that path
    assert (second["route"], second["entityId"], second["status"]) == (None, None, 400)
    assert head.status_code == 200
    assert entries["pre-2"]["route"] == "/api/v1/customer/{customer_id}"  # GET's, as the gate
    assert isinstance(first["latencyMs"], float)


def test_the_gates_refusals_carry_the_cors_headers_the_browser_needs_to_show_them() -> None:
    """A 401 without them is a network error to the page, and the panel refreshes its token on
    401; the headers the client reads must be exposed."""
    http = client()
    answer = http.get("/api/v1/customer/paged", headers={"Origin": PANEL})
    assert answer.status_code == 401
    assert answer.headers["access-control-allow-origin"] == PANEL
    assert "access-control-allow-credentials" not in answer.headers
    exposed = listed(answer.headers["access-control-expose-headers"])
    assert {"etag", "x-event-position", "x-request-id", "retry-after"} <= exposed
    assert "origin" in listed(answer.headers["vary"])
    assert answer.json()["statusCode"] == 401


def test_a_page_of_another_origin_is_not_allowed_to_read_answers() -> None:
    answer = client().get("/api/v1/customer/paged", headers={"Origin": "https://evil.example"})
    assert answer.status_code == 401
    assert "access-control-allow-origin" not in answer.headers


@pytest.mark.parametrize("app", PARTS)
def test_without_origins_there_is_no_cors_header_and_no_middleware(app: str) -> None:
    write, read = PARTS[app]
    http = client("", write=write, read=read)
    assert not any(m.cls is Cors for m in http.app.user_middleware)  # type: ignore[attr-defined]
    answer = http.options(
        "/api/v1/customer",
        headers={"Origin": PANEL, "Access-Control-Request-Method": "POST"},
    )
    assert answer.status_code in (404, 405)
    assert answer.json()["statusCode"] == answer.status_code
    simple = http.get("/healthz", headers={"Origin": PANEL})
    for headers in (answer.headers, simple.headers):
        assert not [h for h in headers if h.lower().startswith("access-control-")]


@pytest.mark.parametrize(
    "value",
    [
        "*",
        "null",
        "http://localhost:4200/",
        "https://panel.example.com/app",
        "HTTPS://Panel.example.com",
        "panel.example.com",
        "ftp://panel.example.com",
        "https://user@panel.example.com",
        "https://panel.example.com, *",
    ],
)
def test_only_exact_origins_are_accepted_in_the_setting(value: str) -> None:
    with pytest.raises(ValueError, match="BEEOCLOCK_CORS_ORIGINS"):
        Settings(cors_origins=value)


def test_the_setting_takes_several_origins_and_defaults_to_none() -> None:
    assert Settings().cors_origin_list == []
    both = Settings(cors_origins="https://panel.example.com, http://localhost:4200")
    assert both.cors_origin_list == ["https://panel.example.com", "http://localhost:4200"]


def test_the_development_stack_allows_the_panels_dev_server_unless_told_otherwise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("BEEOCLOCK_CORS_ORIGINS", raising=False)
    assert dev_cors_origins(Settings()) == DEV_CORS_ORIGINS == "http://localhost:4200"
    monkeypatch.setenv("BEEOCLOCK_CORS_ORIGINS", "")
    assert dev_cors_origins(Settings()) == ""
    monkeypatch.setenv("BEEOCLOCK_CORS_ORIGINS", "http://localhost:4300")
    assert dev_cors_origins(Settings()) == "http://localhost:4300"
