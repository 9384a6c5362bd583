"""Bearer tokens: `{"sub": "<user>", "exp": <unix time>, "tenants": {"<tenant>": [perms]}}`;
the `x-business-tenant-id` header picks one of the token's tenants."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

import jwt

from beeoclock.settings import Settings

TENANT_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
LEEWAY_S = 30
MAX_TOKEN_BYTES = 8192


class Unauthenticated(Exception):
    """401: no valid token. The panel client refreshes its token on 401, so only for this."""


class Forbidden(Exception):
    """403: the tenant is not granted to the token, or a permission is missing."""


@dataclass(frozen=True)
class Principal:
    subject: str
    tenant_id: str
    permissions: frozenset[str]


def decode_token(token: str, settings: Settings) -> dict[str, Any]:
    if not settings.jwt_secret:
        msg = "token verification is not configured"
        raise Unauthenticated(msg)
    if len(token) > MAX_TOKEN_BYTES:
        msg = "token too large"
        raise Unauthenticated(msg)
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            settings.jwt_secret,
            algorithms=settings.algorithms,
            options={"require": ["exp", "sub"]},
            leeway=LEEWAY_S,
        )
    except jwt.PyJWTError as exc:
        msg = f"invalid token: {exc}"
        raise Unauthenticated(msg) from None
    if not isinstance(claims.get("sub"), str) or not isinstance(claims.get("tenants"), dict):
        msg = "invalid token: claims 'sub' and 'tenants' are required"
        raise Unauthenticated(msg)
    return claims


def authenticate(authorization: str | None, tenant_id: str | None, settings: Settings) -> Principal:
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        msg = "missing bearer token"
        raise Unauthenticated(msg)
    claims = decode_token(token.strip(), settings)
    if not tenant_id or not TENANT_ID.match(tenant_id):
        msg = "x-business-tenant-id header is missing or malformed"
        raise Forbidden(msg)
    granted = claims["tenants"].get(tenant_id)
    if not isinstance(granted, list):
        msg = "the token does not grant this tenant"
        raise Forbidden(msg)
    return Principal(claims["sub"], tenant_id, frozenset(p for p in granted if isinstance(p, str)))


def mint_token(secret: str, subject: str, tenants: dict[str, list[str]], ttl_s: int = 3600) -> str:
    now = int(time.time())
    claims = {"sub": subject, "iat": now, "exp": now + ttl_s, "tenants": tenants}
    return jwt.encode(claims, secret, algorithm="HS256")
