"""Read-your-writes: the write side records each tenant's latest written position per stream;
the projector records how far it has applied; a read waits (bounded) until applied >= written.

Written and applied live in separate tables so a writer never waits on a projector's row lock.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

_RECORD_WRITTEN = (
    "INSERT INTO written_positions (tenant_id, stream, position) VALUES (%s, %s, %s) "
    "ON CONFLICT (tenant_id, stream) DO UPDATE "
    "SET position = GREATEST(written_positions.position, EXCLUDED.position)"
)
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


def record_written(conn: psycopg.Connection[Any], tenant_id: str, stream: str, pos: int) -> None:
    conn.execute(_RECORD_WRITTEN, (tenant_id, stream, pos), prepare=True)
    conn.commit()


def record_applied(cur: psycopg.Cursor[Any], applied: dict[tuple[str, str], int]) -> None:
    """Inside the projector's transaction; sorted so concurrent projectors never deadlock."""
    if applied:
        cur.executemany(_RECORD_APPLIED, [(t, s, p) for (t, s), p in sorted(applied.items())])


class NotCaughtUp(Exception):
    """The projections did not reach the required position in time."""


async def positions(pool: AsyncConnectionPool[Any], tenant_id: str, stream: str) -> tuple[int, int]:
    async with pool.connection() as conn:
        cur = await conn.execute(_READ_POSITIONS, {"t": tenant_id, "s": stream}, prepare=True)
        row = await cur.fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


async def wait_until_applied(
    pool: AsyncConnectionPool[Any],
    tenant_id: str,
    stream: str,
    min_position: int | None,
    timeout_s: float,
) -> tuple[int, int]:
    """Wait until the tenant's stream is applied up to its latest write (and `min_position`).
    Returns (written, applied); raises NotCaughtUp after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    delay = 0.002
    while True:
        written, applied = await positions(pool, tenant_id, stream)
        target = max(written, min_position or 0)
        if applied >= target:
            return written, applied
        if time.monotonic() + delay > deadline:
            raise NotCaughtUp
        await asyncio.sleep(delay)
        delay = min(delay * 1.5, 0.025)
