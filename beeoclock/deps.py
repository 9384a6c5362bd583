"""Typed FastAPI dependencies shared by both APIs (the `Annotated` aliases routes use).

They are `async` although they never wait: FastAPI runs a plain `def` dependency in its
thread pool, a hop that costs more than the dependency itself on every request."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends, Header, Request

from beeoclock.auth import Principal, Unauthenticated
from beeoclock.settings import Settings
from commands.context import Meta
from commands.errors import FieldError, InvalidCommand

_VERSION = re.compile(r"^[0-9]{1,9}$")


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _principal(request: Request) -> Principal:
    principal: Principal | None = getattr(request.state, "principal", None)
    if principal is None:
        msg = "missing bearer token"
        raise Unauthenticated(msg)
    return principal


async def get_principal(
    request: Request,
    # declared for the OpenAPI document; the gate has checked both already
    x_business_tenant_id: Annotated[str | None, Header(max_length=64)] = None,
) -> Principal:
    """The caller, authenticated and authorized by the request gate (beeoclock/gate.py)."""
    return _principal(request)


async def get_meta(
    request: Request,
    x_business_tenant_id: Annotated[str | None, Header(max_length=64)] = None,
) -> Meta:
    """Who asks, in which tenant, by which request, when: every command's metadata. One
    dependency, not one per part: FastAPI's resolution of each costs every write."""
    principal = _principal(request)
    request_id: str = request.state.request_id
    return Meta(principal.tenant_id, principal.subject, request_id, datetime.now(UTC))


async def get_expected_version(
    if_match: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> int | None:
    """`If-Match: "3"` pins the version a change applies to; `*` or absent pins nothing."""
    if if_match is None or if_match.strip() == "*":
        return None
    value = if_match.strip().removeprefix("W/").strip('"')
    if not _VERSION.fullmatch(value):
        raise InvalidCommand(
            'If-Match must be an ETag such as "3"',
            [FieldError("If-Match", "is not a version ETag", f"value: {if_match[:40]!r}")],
        )
    return int(value)


PrincipalDep = Annotated[Principal, Depends(get_principal)]
MetaDep = Annotated[Meta, Depends(get_meta)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
ExpectedVersionDep = Annotated[int | None, Depends(get_expected_version)]
