"""The consistency gate against real PostgreSQL: the target is fixed when a read starts."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import psycopg
import pytest

from beeoclock import consistency
from beeoclock.settings import Settings
from projections.tenant_pool import TenantPool, reader_pool


def set_positions(settings: Settings, tenant: str, written: int, applied: int) -> None:
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        for table, position in (("written_positions", written), ("applied_positions", applied)):
            conn.execute(
                f"INSERT INTO {table} (tenant_id, stream, position) VALUES (%s, 'customer', %s) "
                "ON CONFLICT (tenant_id, stream) DO UPDATE SET position = EXCLUDED.position",
                (tenant, position),
            )


async def _wait(settings: Settings, tenant: str, **kwargs: Any) -> tuple[int, int]:
    async with reader_pool(settings.database_url, max_size=2) as pool:
        positions = consistency.Positions(TenantPool(pool))
        return await consistency.wait_until_applied(positions, tenant, "customer", **kwargs)


def test_writes_made_while_a_read_waits_do_not_move_its_target(settings: Settings) -> None:
    tenant = uuid.uuid4().hex
    set_positions(settings, tenant, written=10, applied=5)

    async def scenario() -> tuple[int, int]:
        waiting = asyncio.create_task(_wait(settings, tenant, min_position=None, timeout_s=5.0))
        await asyncio.sleep(0.2)
        assert not waiting.done()
        # meanwhile other writes land (written 20) and the projector reaches the first (10)
        await asyncio.to_thread(set_positions, settings, tenant, 20, 10)
        return await asyncio.wait_for(waiting, 3.0)

    assert asyncio.run(scenario()) == (10, 10)


def test_a_minimum_position_is_capped_at_the_tenants_writes(settings: Settings) -> None:
    tenant = uuid.uuid4().hex
    set_positions(settings, tenant, written=7, applied=7)
    result = asyncio.run(_wait(settings, tenant, min_position=10**12, timeout_s=0.2, latest=False))
    assert result == (7, 7)


def test_a_read_that_cannot_catch_up_in_time_fails(settings: Settings) -> None:
    tenant = uuid.uuid4().hex
    set_positions(settings, tenant, written=3, applied=2)
    with pytest.raises(consistency.NotCaughtUp):
        asyncio.run(_wait(settings, tenant, min_position=None, timeout_s=0.2))


def test_a_tenant_without_writes_never_waits(settings: Settings) -> None:
    assert asyncio.run(_wait(settings, uuid.uuid4().hex, min_position=None, timeout_s=0.0)) == (
        0,
        0,
    )


def test_one_round_reads_the_positions_of_every_tenant_asked(settings: Settings) -> None:
    written, applied, never = uuid.uuid4().hex, uuid.uuid4().hex, uuid.uuid4().hex
    set_positions(settings, written, written=9, applied=4)
    set_positions(settings, applied, written=3, applied=3)

    async def scenario() -> list[tuple[int, int]]:
        async with reader_pool(settings.database_url, max_size=2) as pool:
            positions = consistency.Positions(TenantPool(pool))
            asked = [(written, "customer"), (applied, "customer"), (never, "customer")]
            asked.append((written, "service"))  # the same tenant, another stream
            return await asyncio.gather(*(positions.get(t, s) for t, s in asked))

    assert asyncio.run(scenario()) == [(9, 4), (3, 3), (0, 0), (0, 0)]
