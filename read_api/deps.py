"""Dependencies of the read routes: the database pool, the cache, and the consistency gate."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Request

from beeoclock import consistency
from beeoclock.deps import PrincipalDep, SettingsDep
from commands.errors import FieldError, InvalidCommand
from projections.cache import ReadCache
from projections.tenant_pool import TenantPool


async def get_pool(request: Request) -> TenantPool:
    pool: TenantPool = request.app.state.read_models
    return pool


async def get_cache(request: Request) -> ReadCache:
    cache: ReadCache = request.app.state.cache
    return cache


_POSITION = re.compile(r"^[0-9]{1,18}$")

PoolDep = Annotated[TenantPool, Depends(get_pool)]
CacheDep = Annotated[ReadCache, Depends(get_cache)]


@dataclass(frozen=True)
class ReadGate:
    """What a read must reflect: `required` is the position a cached answer must have been
    computed at (None for an eventual read), `applied` the position reached now."""

    required: int | None
    applied: int


class Consistent:
    """Read-your-writes by default: wait (bounded) until the tenant's stream is applied up to
    its latest write and `X-Min-Position`; `X-Consistency: eventual` skips the wait."""

    def __init__(self, stream: str) -> None:
        self.stream = stream

    async def __call__(
        self,
        principal: PrincipalDep,
        pool: PoolDep,
        settings: SettingsDep,
        x_consistency: Annotated[str | None, Header()] = None,
        x_min_position: Annotated[str | None, Header()] = None,
    ) -> ReadGate:
        min_position = None
        if x_min_position is not None:
            if not _POSITION.match(x_min_position.strip()):
                raise InvalidCommand(
                    "X-Min-Position must be an event position",
                    [FieldError("X-Min-Position", "is not a non-negative integer")],
                )
            min_position = int(x_min_position)
        eventual = (x_consistency or "").strip().lower() == "eventual"
        if eventual and min_position is None:
            return ReadGate(None, 0)
        target, applied = await consistency.wait_until_applied(
            pool,
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
