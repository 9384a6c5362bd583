"""The one dependency of the read routes (`Reading`): who asks, what the answer must reflect
(the consistency gate), and where to read it (the read models, the cache).

One dependency rather than one per part: FastAPI resolves every dependency of every request,
and on a cached read that resolving was the larger part of the work."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Request

from beeoclock import consistency
from beeoclock.auth import Principal, Unauthenticated
from beeoclock.settings import Settings
from commands.errors import FieldError, InvalidCommand
from projections.cache import ReadCache
from projections.tenant_pool import TenantPool

_POSITION = re.compile(r"^[0-9]{1,18}$")

#: The headers of every read route, for the OpenAPI document (`openapi_extra`).
READ_HEADERS: dict[str, Any] = {
    "parameters": [
        {
            "name": "x-business-tenant-id",
            "in": "header",
            "required": True,
            "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
            "description": "the tenant, one of the token's",
        },
        {
            "name": "x-consistency",
            "in": "header",
            "required": False,
            "schema": {"type": "string", "enum": ["eventual"]},
            "description": "`eventual`: don't wait for your own last write to be readable",
        },
        {
            "name": "x-min-position",
            "in": "header",
            "required": False,
            "schema": {"type": "string", "pattern": "^[0-9]{1,18}$"},
            "description": "wait until this event position (X-Event-Position) is readable",
        },
    ]
}


@dataclass(frozen=True)
class ReadGate:
    """What a read must reflect: `required` is the position a cached answer must have been
    computed at (None for an eventual read), `applied` the position reached now."""

    required: int | None
    applied: int


@dataclass(frozen=True)
class Reading:
    principal: Principal
    gate: ReadGate
    pool: TenantPool
    cache: ReadCache
    settings: Settings

    @property
    def tenant_id(self) -> str:
        return self.principal.tenant_id


#: the parameters of a one-entity read that make it a read of the past (time travel)
_PAST = frozenset({"version", "asOf"})


class Reader:
    """Read-your-writes by default: wait (bounded) until the tenant's stream is applied up to
    its latest write and `X-Min-Position`; `X-Consistency: eventual` skips the wait."""

    def __init__(self, stream: str) -> None:
        self.stream = stream

    async def __call__(self, request: Request) -> Reading:
        # read straight from the request: FastAPI's header parameters cost more than the read
        # (the routes document them with READ_HEADERS)
        x_consistency = request.headers.get("x-consistency")
        x_min_position = request.headers.get("x-min-position")
        principal: Principal | None = getattr(request.state, "principal", None)
        if principal is None:
            msg = "missing bearer token"
            raise Unauthenticated(msg)
        state = request.app.state
        pool: TenantPool = state.read_models
        settings: Settings = state.settings
        if request.path_params and not _PAST.isdisjoint(request.query_params):
            # one entity as it was (time travel): answered from the event store, which is
            # never behind, so nothing to wait for
            return Reading(principal, ReadGate(None, 0), pool, state.cache, settings)
        gate = await self._gate(state.positions, settings, principal, x_consistency, x_min_position)
        return Reading(principal, gate, pool, state.cache, settings)

    async def _gate(
        self,
        positions: consistency.Positions,
        settings: Settings,
        principal: Principal,
        x_consistency: str | None,
        x_min_position: str | None,
    ) -> ReadGate:
        min_position = None
        if x_min_position is not None:
            if len(x_min_position) > 40 or not _POSITION.fullmatch(x_min_position.strip()):
                raise InvalidCommand(
                    "X-Min-Position must be an event position",
                    [FieldError("X-Min-Position", "is not a non-negative integer")],
                )
            min_position = int(x_min_position)
        eventual = (x_consistency or "").strip().lower() == "eventual"
        if eventual and min_position is None:
            return ReadGate(None, 0)
        target, applied = await consistency.wait_until_applied(
            positions,
            principal.tenant_id,
            self.stream,
            min_position,
            settings.consistency_timeout_ms / 1000,
            latest=not eventual,
        )
        return ReadGate(target, applied)


async def read_through(
    cache: ReadCache,
    gate: ReadGate,
    gen_key: str,
    value_key: str,
    ttl_s: int,
    compute: Callable[[], Awaitable[bytes]],
) -> bytes:
    """A cached answer if it reflects what the read must see, else computed and stored,
    labelled with the position applied before the query ran."""
    generation, label, body = await cache.get(gen_key, value_key)
    if body is not None and (gate.required is None or label >= gate.required):
        return body
    body = await compute()
    if gate.required is not None:
        await cache.put(gen_key, generation, value_key, gate.applied, body, ttl_s)
    return body
