"""The read API's connections to the read models, each checked out for one tenant.

The pool's sessions run as `beeoclock_reader` (migration 007): they can only SELECT the read
models, and row-level security shows them only the rows of the tenant set on checkout. Every
query the read API makes also filters by tenant itself; this is the second wall behind it.
"""

from __future__ import annotations

import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

READER_ROLE = "beeoclock_reader"
_SET_TENANT = "SELECT set_config('beeoclock.tenant_id', %s, false)"


async def _as_reader(conn: AsyncConnection[Any]) -> None:
    """The pool's `configure`: every session of the pool acts as the reader role."""
    await conn.execute(f"SET ROLE {READER_ROLE}")


def reader_pool(url: str, *, min_size: int = 1, max_size: int = 4) -> AsyncConnectionPool[Any]:
    """The read API's pool, not yet open: autocommit sessions acting as the reader role."""
    return AsyncConnectionPool(
        url,
        min_size=min_size,
        max_size=max_size,
        open=False,
        kwargs={"autocommit": True},
        configure=_as_reader,
    )


class TenantPool:
    def __init__(self, pool: AsyncConnectionPool[Any]) -> None:
        self.pool = pool
        #: the tenant each pooled session was last set to (it keeps it until set again)
        self._tenant_of: weakref.WeakKeyDictionary[AsyncConnection[Any], str] = (
            weakref.WeakKeyDictionary()
        )

    @asynccontextmanager
    async def connection(self, tenant_id: str) -> AsyncIterator[AsyncConnection[Any]]:
        """A connection that sees `tenant_id`'s rows only (set on checkout, unless the
        session is set to that tenant already)."""
        async with self.pool.connection() as conn:
            if self._tenant_of.get(conn) != tenant_id:
                self._tenant_of.pop(conn, None)
                await conn.execute(_SET_TENANT, (tenant_id,), prepare=True)
                self._tenant_of[conn] = tenant_id
            yield conn

    @asynccontextmanager
    async def unscoped(self) -> AsyncIterator[AsyncConnection[Any]]:
        """A connection for what has no tenant wall (the read/write positions); it sees no
        read-model row unless its session happens to be set to a tenant, so never use it for
        those."""
        async with self.pool.connection() as conn:
            yield conn
