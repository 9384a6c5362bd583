"""What the read-your-writes position check costs, per query form: the scalar query of one
(tenant, stream), the array query of a round of several (asked with one key and with eight),
and a whole `Positions.get` (the round's task and future around the scalar query), each
called one after another from one asyncio task (uvloop), as the read API does under light
load.

    python -m bench.position_queries [--calls 3000] [--rounds 2] [--postgres URL]

Makes a fresh database on the server (migrated, so the read API's role and tables are the
real ones), prints one line per form and round (CPU and wall microseconds per call, this
process only: PostgreSQL's side shows in the wall time) and, last, a JSON object with every
round; drops the database at the end."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
import uvloop

from beeoclock import consistency, migrations
from beeoclock.settings import Settings
from bench.system import DEFAULT_POSTGRES, fresh_database, new_values
from projections.tenant_pool import TenantPool, reader_pool

STREAM = "customer"
TENANTS = [f"tenant-{i}" for i in range(8)]

Call = Callable[[], Awaitable[Any]]


def _seed(database_url: str) -> None:
    settings = Settings(
        **new_values(database_url, "127.0.0.1:9", "redis://127.0.0.1:9/0", "WARNING")
    )
    migrations.migrate(settings)
    with psycopg.connect(database_url, autocommit=True) as conn:
        for table in ("written_positions", "applied_positions"):
            for i, tenant in enumerate(TENANTS):
                conn.execute(
                    f"INSERT INTO {table} (tenant_id, stream, position) VALUES (%s, %s, %s)",
                    (tenant, STREAM, 1000 + i),
                )


def _forms(pool: TenantPool) -> dict[str, Call]:
    positions = consistency.Positions(pool)

    async def scalar() -> Any:
        return await positions._read([(TENANTS[0], STREAM)])

    async def array(keys: list[tuple[str, str]]) -> Any:
        # the round-of-several query even for one key: what every round cost before the
        # scalar form was kept for rounds of one
        async with pool.unscoped() as conn:
            tenants, streams = [t for t, _ in keys], [s for _, s in keys]
            cur = await conn.execute(consistency._READ_MANY, (tenants, streams), prepare=True)
            return await cur.fetchall()

    one, eight = [(TENANTS[0], STREAM)], [(t, STREAM) for t in TENANTS]
    return {
        "scalar, 1 key": scalar,
        "array, 1 key": lambda: array(one),
        "array, 8 keys": lambda: array(eight),
        "Positions.get, 1 key": lambda: positions.get(TENANTS[0], STREAM),
    }


async def _measure(call: Call, calls: int) -> dict[str, float]:
    for _ in range(min(200, calls)):  # warm: prepared, plan cache settled
        await call()
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(calls):
        await call()
    return {
        "cpu_us": round(1e6 * (time.process_time() - cpu) / calls, 1),
        "wall_us": round(1e6 * (time.perf_counter() - wall) / calls, 1),
    }


async def _run(database_url: str, calls: int, rounds: int) -> dict[str, list[dict[str, float]]]:
    found: dict[str, list[dict[str, float]]] = {}
    async with reader_pool(database_url, min_size=1, max_size=1) as pool:
        forms = _forms(TenantPool(pool))
        for r in range(rounds):
            for name, call in forms.items():
                got = await _measure(call, calls)
                found.setdefault(name, []).append(got)
                print(
                    f"round {r + 1}  {name:22s} cpu {got['cpu_us']:7.1f} us  "
                    f"wall {got['wall_us']:7.1f} us",
                    flush=True,
                )
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=3000, help="calls per form and round")
    parser.add_argument("--rounds", type=int, default=2, help="rounds over every form")
    parser.add_argument(
        "--postgres",
        default=os.environ.get("BENCH_POSTGRES_URL", DEFAULT_POSTGRES),
        help="PostgreSQL server URL, as for `python -m bench`",
    )
    args = parser.parse_args()
    with fresh_database(args.postgres) as database_url:
        _seed(database_url)
        found = uvloop.run(_run(database_url, args.calls, args.rounds))
    medians = {
        name: {k: round(statistics.median(r[k] for r in runs), 1) for k in ("cpu_us", "wall_us")}
        for name, runs in found.items()
    }
    print(json.dumps({"calls": args.calls, "rounds": found, "medians": medians}))


if __name__ == "__main__":
    main()
