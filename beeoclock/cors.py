"""Cross-origin requests from the panel: the real client is an Angular app in a browser on an
origin of its own, so every call it makes with `Authorization` or a JSON body is preceded by a
preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`).

Starlette's CORS middleware does the work, outside the request gate (beeoclock/gate.py): a
preflight carries no token and must be answered before authentication and rate limiting, and
every answer the gate gives (401, 403, 429, 500) must carry the CORS headers too, or the
browser hides its status from the client (which refreshes its token on 401).

A preflight gets what the gate gives every other request: an `X-Request-Id` on its answer
and one access-log line (method `OPTIONS`, the route and entity id it asks about, status,
latency).

Only the exact origins of `BEEOCLOCK_CORS_ORIGINS` are allowed; never `*`, and no credentials
(the API authenticates with a bearer token, never a cookie). With the setting empty (the
default) the middleware is not installed at all: no CORS header on any answer, and not one
call more per request.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response

from beeoclock import logs
from beeoclock.errors import error_response
from beeoclock.gate import NoRoute, entity_id_of, find_api_route, request_id_of

#: What the panel calls with.
ALLOWED_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
#: Request headers a client sets that are not CORS-safelisted (Starlette adds those: Accept,
#: Accept-Language, Content-Language, Content-Type): the contract's and what the routes read.
ALLOWED_HEADERS = (
    "authorization",
    "content-type",
    "if-match",
    "if-none-match",
    "x-business-tenant-id",
    "x-consistency",
    "x-min-position",
    "x-request-id",
)
#: Response headers the API sets that a browser hides from scripts unless exposed (the
#: safelisted ones, Cache-Control, Content-Type and the like, need nothing).
EXPOSED_HEADERS = (
    "ETag",
    "X-Event-Position",
    "X-Request-Id",
    "Retry-After",
    "RateLimit-Limit",
    "RateLimit-Remaining",
    "RateLimit-Reset",
    "RateLimit-Policy",
    "WWW-Authenticate",
    "Content-Disposition",
)
#: How long a browser may reuse a preflight's answer (Chromium caps it at 2 hours).
MAX_AGE_S = 3600


class Cors(CORSMiddleware):
    """Starlette's CORS middleware with the panel's methods and headers, whose refused
    preflight answers in the contract's error shape instead of plain text."""

    def __init__(self, app: Any, *, origins: list[str]) -> None:
        super().__init__(
            app,
            allow_origins=origins,
            allow_methods=ALLOWED_METHODS,
            allow_headers=ALLOWED_HEADERS,
            allow_credentials=False,
            expose_headers=EXPOSED_HEADERS,
            max_age=MAX_AGE_S,
        )

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "OPTIONS":
            await super().__call__(scope, receive, send)
            return
        headers = Headers(scope=scope)
        asked = headers.get("access-control-request-method")
        if "origin" not in headers or asked is None:
            await super().__call__(scope, receive, send)  # not a preflight: the gate's
            return
        started = time.perf_counter()
        request_id = request_id_of(scope)
        response = self.preflight_response(request_headers=headers)
        response.headers["X-Request-Id"] = request_id
        try:
            await response(scope, receive, send)
        finally:
            entry: dict[str, Any] = {"method": "OPTIONS", "route": None, "entityId": None}
            try:
                entry["route"], params = find_api_route(_route_method(asked), scope["path"])
                entry["entityId"] = entity_id_of(params)
            except NoRoute:
                pass  # a preflight for no route is answered all the same; the call will 404
            entry["status"] = response.status_code
            entry["latencyMs"] = round((time.perf_counter() - started) * 1000, 2)
            entry["requestId"] = request_id
            logs.access(entry)

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code < 400:
            return response
        # Starlette's text is "Disallowed CORS origin, method, headers"
        refused = bytes(response.body).decode().removeprefix("Disallowed CORS ")
        kept = {
            k: v
            for k, v in response.headers.items()
            if k.lower() not in ("content-length", "content-type")
        }
        message = f"cross-origin request refused: {refused} not allowed"
        return error_response(response.status_code, message, headers=kept)


def _route_method(asked: str) -> str:
    """The method whose route a preflight asks about (HEAD is answered by GET's, as in the
    gate)."""
    method = asked.strip().upper()
    return "GET" if method == "HEAD" else method
