"""Read-your-writes: the event store records each tenant's latest written position per stream
(a trigger, in the inserting transaction); the projector records how far it has applied, in its
own transaction; a read waits (bounded) until applied reaches the written position it saw when
it started.

Written and applied live in separate tables so a writer never waits on a projector's row lock.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import psycopg

from projections.tenant_pool import TenantPool

_RECORD_APPLIED = (
    "INSERT INTO applied_positions (tenant_id, stream, position) VALUES (%s, %s, %s) "
    "ON CONFLICT (tenant_id, stream) DO UPDATE "
    "SET position = GREATEST(applied_positions.position, EXCLUDED.position)"
)
_READ_POSITIONS = (
    "SELECT COALESCE((SELECT position FROM written_positions WHERE tenant_id = %(t)s "
    "AND stream = %(s)s), 0), COALESCE((SELECT position FROM applied_positions "
    "WHERE tenant_id = %(t)s AND stream = %(s)s), 0)"
)


def record_applied(cur: psycopg.Cursor[Any], applied: dict[tuple[str, str], int]) -> None:
    """Inside the projector's transaction; sorted so concurrent projectors never deadlock."""
    if applied:
        cur.executemany(_RECORD_APPLIED, [(t, s, p) for (t, s), p in sorted(applied.items())])


class NotCaughtUp(Exception):
    """The projections did not reach the required position in time."""


async def positions(pool: TenantPool, tenant_id: str, stream: str) -> tuple[int, int]:
    async with pool.unscoped() as conn:
        cur = await conn.execute(_READ_POSITIONS, {"t": tenant_id, "s": stream}, prepare=True)
        row = await cur.fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


async def wait_until_applied(
    pool: TenantPool,
    tenant_id: str,
    stream: str,
    min_position: int | None,
    timeout_s: float,
    *,
    latest: bool = True,
) -> tuple[int, int]:
    """Wait until the tenant's stream is applied up to a target fixed when the read starts:
    its latest write (`latest`), or `min_position` if given — capped at that latest write,
    since positions past it belong to other tenants or streams. Writes made while the read
    waits don't move the target. Returns (target, applied); raises NotCaughtUp."""
    deadline = time.monotonic() + timeout_s
    written, applied = await positions(pool, tenant_id, stream)
    target = written if latest else 0
    if min_position is not None:
        target = max(target, min(min_position, written))
    delay = 0.002
    while applied < target:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise NotCaughtUp
        await asyncio.sleep(min(delay, remaining))  # the last look is at the deadline itself
        delay = min(delay * 1.5, 0.025)
        _, applied = await positions(pool, tenant_id, stream)
    return target, applied
