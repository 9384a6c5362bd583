"""Read-your-writes: the event store records each tenant's latest written position per stream
(a trigger, in the inserting transaction); the projector records how far it has applied, in its
own transaction; a read waits (bounded) until applied reaches the written position it saw when
it started.

Written and applied live in separate tables so a writer never waits on a projector's row lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import psycopg

from projections.tenant_pool import TenantPool

_RECORD_APPLIED = (
    "INSERT INTO applied_positions (tenant_id, stream, position) VALUES (%s, %s, %s) "
    "ON CONFLICT (tenant_id, stream) DO UPDATE "
    "SET position = GREATEST(applied_positions.position, EXCLUDED.position)"
)
#: the positions of one (tenant, stream); 0 for a stream never written (it has no row)
_READ_ONE = (
    "SELECT COALESCE((SELECT position FROM written_positions WHERE tenant_id = %(t)s "
    "AND stream = %(s)s), 0), COALESCE((SELECT position FROM applied_positions "
    "WHERE tenant_id = %(t)s AND stream = %(s)s), 0)"
)
#: the positions of every (tenant, stream) asked for in a round of several
_READ_MANY = (
    "SELECT k.t, k.s, COALESCE(w.position, 0), COALESCE(a.position, 0) "
    "FROM unnest(%s::text[], %s::text[]) AS k(t, s) "
    "LEFT JOIN written_positions w ON w.tenant_id = k.t AND w.stream = k.s "
    "LEFT JOIN applied_positions a ON a.tenant_id = k.t AND a.stream = k.s"
)


def record_applied(cur: psycopg.Cursor[Any], applied: dict[tuple[str, str], int]) -> None:
    """Inside the projector's transaction; sorted so concurrent projectors never deadlock."""
    if applied:
        cur.executemany(_RECORD_APPLIED, [(t, s, p) for (t, s), p in sorted(applied.items())])


class NotCaughtUp(Exception):
    """The projections did not reach the required position in time."""


class PositionsUnavailable(Exception):
    """The positions could not be read (too slow, or the process is shutting down)."""


Key = tuple[str, str]


def _shutting_down() -> PositionsUnavailable:
    return PositionsUnavailable("the read API is shutting down")


class Positions:
    """The written and applied positions of (tenant, stream)s, read in rounds of one query.

    A read asking while a round runs waits for the next round, which starts after it asked:
    the written position it gets is never older than its own request, so read-your-writes
    holds exactly as with a query of its own. The reads that ask during one round (of any
    tenants) share the next round's one query: under load, a process makes one position
    query per round instead of one per read, and checks out one connection for it.

    A round that takes longer than `round_timeout_s` (a stalled database, an exhausted pool)
    fails its readers with `PositionsUnavailable` (a 503) and the next round starts, so one
    stuck query can't hold every read of the process."""

    def __init__(self, pool: TenantPool, *, round_timeout_s: float = 5.0) -> None:
        self._pool = pool
        self._round_timeout_s = round_timeout_s
        #: asked since the running round started, each with the future its readers await
        self._asked: dict[Key, asyncio.Future[tuple[int, int]]] = {}
        self._rounds: asyncio.Task[None] | None = None
        self._closed = False

    async def get(self, tenant_id: str, stream: str) -> tuple[int, int]:
        """(written, applied), read after this call began."""
        if self._closed:
            raise _shutting_down()
        key = (tenant_id, stream)
        answer = self._asked.get(key)
        if answer is None:
            answer = asyncio.get_running_loop().create_future()
            self._asked[key] = answer
            if self._rounds is None or self._rounds.done():
                self._rounds = asyncio.create_task(self._run_rounds())
        # shielded: a reader that goes away (a client disconnecting) must not cancel the
        # answer the others of its round are waiting for
        return await asyncio.shield(answer)

    async def close(self) -> None:
        """Stop the rounds; every reader still waiting, and every later one, gets
        PositionsUnavailable."""
        self._closed = True
        rounds = self._rounds
        if rounds is not None:
            rounds.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await rounds
        # a round task cancelled before it began never ran its own clean-up
        asked, self._asked = self._asked, {}
        self._fail(asked, _shutting_down())

    @staticmethod
    def _fail(asked: dict[Key, asyncio.Future[tuple[int, int]]], error: Exception) -> None:
        for answer in asked.values():
            if not answer.done():
                answer.set_exception(error)

    async def _run_rounds(self) -> None:
        asked: dict[Key, asyncio.Future[tuple[int, int]]] = {}
        try:
            while self._asked:
                asked, self._asked = self._asked, {}
                try:
                    async with asyncio.timeout(self._round_timeout_s):
                        found = await self._read(list(asked))
                except TimeoutError:
                    took = f"the read-your-writes positions took over {self._round_timeout_s} s"
                    self._fail(asked, PositionsUnavailable(took))
                except Exception as exc:  # the readers of this round get the failure
                    self._fail(asked, exc)
                else:
                    for key, answer in asked.items():
                        if not answer.done():
                            answer.set_result(found.get(key, (0, 0)))
        finally:
            # cancelled (closing) or interrupted: nobody is left waiting for an answer
            waiting, self._asked = self._asked, {}
            for left in (asked, waiting):  # both may hold the same key, each its own future
                self._fail(left, _shutting_down())
            if self._rounds is asyncio.current_task():
                self._rounds = None

    async def _read(self, keys: list[Key]) -> dict[Key, tuple[int, int]]:
        # a round of one (most rounds under light load) takes the scalar query: PostgreSQL
        # plans and runs it in about half the time of the array one (python -m
        # bench.position_queries)
        async with self._pool.unscoped() as conn:
            if len(keys) == 1:
                (tenant_id, stream) = keys[0]
                cur = await conn.execute(_READ_ONE, {"t": tenant_id, "s": stream}, prepare=True)
                row = await cur.fetchone()
                assert row is not None
                return {keys[0]: (int(row[0]), int(row[1]))}
            tenants = [t for t, _ in keys]
            streams = [s for _, s in keys]
            cur = await conn.execute(_READ_MANY, (tenants, streams), prepare=True)
            rows = await cur.fetchall()
        return {(t, s): (int(written), int(applied)) for t, s, written, applied in rows}


async def wait_until_applied(
    positions: Positions,
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
    written, applied = await positions.get(tenant_id, stream)
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
        _, applied = await positions.get(tenant_id, stream)
    return target, applied
