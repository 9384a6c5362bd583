"""The request gate: every API request passes here before any route code runs or any body is
read. It

1. finds the API route (its template, e.g. `/api/v1/customer/{customer_id}`) in the table of
   beeoclock/permissions.py: a path that is not in the table is 404 (or 405) here, so a route
   without a declared permission can't be reached (fail closed);
2. authenticates the bearer token (401) and the tenant header (403);
3. checks the rule's permission in that tenant (403);
4. counts the request against its rate-limit class (429 with `Retry-After`);
5. writes one JSON access-log line per request, API or not: time, request id, tenant,
   subject, method, route template, entity id, status and latency. Never a query string, a
   body or a header value beyond those: no personal data reaches the logs.

It also gives every request its id (a sane `X-Request-Id` from the caller, or a new one,
echoed on the response) and turns any error nothing else handled into a logged 500 in the
contract's shape. One layer for all of it: each ASGI layer costs every request a call and
a wrapped `send`, and on a cached read those were a large part of the work.

Routes get the authenticated principal from `request.state.principal` (beeoclock/deps.py).
"""

from __future__ import annotations

import functools
import logging
import re
import time
import uuid
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import parse_qsl

from starlette.responses import Response
from starlette.routing import BaseRoute, Match, compile_path

from beeoclock import logs
from beeoclock.auth import (
    TENANT_ID,
    Forbidden,
    Principal,
    TokenVerifier,
    Unauthenticated,
    bearer_token,
)
from beeoclock.errors import error_response
from beeoclock.ids import ENTITY_ID
from beeoclock.permissions import ROUTES, Rule
from beeoclock.ratelimit import Decision, RateLimiter, RateLimiterUnavailable, limit_key
from beeoclock.settings import Settings

log = logging.getLogger(__name__)

API_PREFIX = "/api/"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
#: path parameters that name the entity a request is about (logged as `entityId`)
_ENTITY_PARAMS = ("customer_id", "service_id")


class RateLimited(Exception):
    def __init__(self, decision: Decision, policy: str) -> None:
        super().__init__("rate limited")
        self.decision = decision
        self.policy = policy


class NoRoute(Exception):
    """No API route has this path (404), or not with this method (405)."""

    def __init__(self, allowed: set[str]) -> None:
        super().__init__("no route")
        self.allowed = allowed


class LimiterDown(Exception):
    """Redis is unreachable and this kind of request is not served without a limit."""


def request_id_of(scope: dict[str, Any]) -> str:
    """The request's id: the caller's `X-Request-Id` when it is sane, else a new one."""
    given = _header(scope, b"x-request-id") or ""
    return given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _safe_id(value: object) -> str | None:
    return value if isinstance(value, str) and ENTITY_ID.fullmatch(value) else None


@functools.cache
def _api_routes() -> list[tuple[str, str, re.Pattern[str]]]:
    return _compile(ROUTES)


def find_api_route(method: str, path: str) -> tuple[str, dict[str, Any]]:
    """The API route `method` `path` is for, found in the permission table: its template and
    path parameters. NoRoute if none (with the methods the path has), so a route missing from
    the table can never be reached."""
    allowed: set[str] = set()
    for route_method, template, regex in _api_routes():
        match = regex.match(path)
        if match:
            if route_method == method:
                return template, match.groupdict()
            allowed.add(route_method)
    raise NoRoute(allowed)


def entity_id_of(params: dict[str, Any]) -> str | None:
    """The id of the entity a request's path names (logged as `entityId`), if it is sane."""
    return next((_safe_id(params[p]) for p in _ENTITY_PARAMS if p in params), None)


def _compile(templates: Iterable[tuple[str, str]]) -> list[tuple[str, str, re.Pattern[str]]]:
    """Most specific first: `/customer/paged` before `/customer/{customer_id}`."""
    ordered = sorted(templates, key=lambda mt: (mt[1].count("{"), -len(mt[1])))
    return [(method, path, compile_path(path)[0]) for method, path in ordered]


class RequestGate:
    def __init__(self, app: Any, *, routes: Sequence[BaseRoute], settings: Settings) -> None:
        self.app = app
        self.routes = routes
        self.settings = settings
        self.tokens = TokenVerifier(settings)

    def _other_route(self, scope: dict[str, Any]) -> str | None:
        """The template of a route outside the API (health, docs), for the access log."""
        for route in self.routes:
            path = getattr(route, "path", None)
            if isinstance(path, str) and route.matches(scope)[0] is not Match.NONE:
                return path
        return None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = request_id_of(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        entry: dict[str, Any] = {"method": scope["method"], "route": None, "status": 500}
        extra_headers: list[tuple[bytes, bytes]] = [(b"x-request-id", request_id.encode())]
        responded = False

        async def send_logged(message: Any) -> None:
            nonlocal responded
            if message["type"] == "http.response.start":
                responded = True
                entry["status"] = message["status"]
                message["headers"] = [*message.get("headers", []), *extra_headers]
            await send(message)

        try:
            path: str = scope["path"]
            if path.startswith(API_PREFIX):
                method = "GET" if scope["method"] == "HEAD" else scope["method"]
                template, params = find_api_route(method, path)
                entry["route"] = template
                entry["entityId"] = entity_id_of(params)
                principal, decision, policy = await self._admit(scope, method, template, entry)
                scope.setdefault("state", {})["principal"] = principal
                if decision is not None:
                    extra_headers += [
                        (k.encode(), v.encode()) for k, v in decision.headers(policy).items()
                    ]
            else:
                entry["route"] = self._other_route(scope)
            await self.app(scope, receive, send_logged)
        except (NoRoute, Unauthenticated, Forbidden, RateLimited, LimiterDown) as exc:
            await self._refusal(exc)(scope, receive, send_logged)
        except Exception:
            # logged once here, not re-raised: the server would log it again as plain text
            log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            if not responded:
                await error_response(500, "internal error")(scope, receive, send_logged)
        finally:
            entry["latencyMs"] = round((time.perf_counter() - started) * 1000, 2)
            entry["requestId"] = request_id
            logs.access(entry)

    @staticmethod
    def _refusal(exc: Exception) -> Response:
        """The answer to a request the gate turns away."""
        if isinstance(exc, NoRoute):
            if exc.allowed:
                allow = {"Allow": ", ".join(sorted(exc.allowed))}
                return error_response(405, "method not allowed", headers=allow)
            return error_response(404, "no such route")
        if isinstance(exc, Unauthenticated):
            return error_response(401, str(exc), headers={"WWW-Authenticate": "Bearer"})
        if isinstance(exc, Forbidden):
            return error_response(403, str(exc))
        if isinstance(exc, RateLimited):
            message = f"too many requests ({exc.policy}); retry later"
            return error_response(429, message, headers=exc.decision.headers(exc.policy))
        message = "rate limiting is unavailable; retry shortly"
        return error_response(503, message, headers={"Retry-After": "1"})

    async def _admit(
        self, scope: dict[str, Any], method: str, template: str, entry: dict[str, Any]
    ) -> tuple[Principal, Decision | None, str]:
        tenant_header = _header(scope, b"x-business-tenant-id")
        if tenant_header and TENANT_ID.fullmatch(tenant_header):
            entry["tenant"] = tenant_header
        claims = await self.tokens.claims_async(bearer_token(_header(scope, b"authorization")))
        entry["subject"] = claims["sub"]
        principal = self.tokens.principal(claims, tenant_header)
        rule = ROUTES[(method, template)]
        for needed in self._needed(rule, scope):
            if needed not in principal.permissions:
                msg = f"permission {needed} is required"
                raise Forbidden(msg)
        decision = await self._count(scope, rule, principal)
        return principal, decision, rule.limit.name

    @staticmethod
    def _needed(rule: Rule, scope: dict[str, Any]) -> list[str]:
        needed = [rule.permission]
        if rule.query_permissions and scope.get("query_string"):
            given = {k for k, _ in parse_qsl(scope["query_string"].decode("latin-1"))}
            needed += [p for q, p in rule.query_permissions.items() if q in given]
        return needed

    async def _count(
        self, scope: dict[str, Any], rule: Rule, principal: Principal
    ) -> Decision | None:
        rate = self.settings.rate_limit(rule.limit.name)
        if rate is None:
            return None
        limiter: RateLimiter = scope["app"].state.rate_limiter
        key = limit_key(rule.limit.name, principal.tenant_id, principal.subject)
        try:
            decision = await limiter.check(key, rate)
        except RateLimiterUnavailable:
            if rule.limit.kind in self.settings.kinds_without_redis:
                return None
            raise LimiterDown from None
        if not decision.allowed:
            raise RateLimited(decision, rule.limit.name)
        return decision
