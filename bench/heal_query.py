"""What the projector's look for tenants behind the relay costs (workers/projector.py,
`heal`), as the number of tenant streams grows: the look as first written, every tenant's
last passed-on notification against what was applied (a scan of both tables), and the look
as it is, only the tenants passed on anything of since the last look (an index range,
migration 015), with 1% of the tenants written since; and what that index costs the relay,
whose upsert of a round's tenants' positions (`Relay._record_published`) keeps it up (20
tenants a round, alternately with and without the index).

    python -m bench.heal_query [--tenants 1000,10000,100000] [--runs 20] [--postgres URL]

Makes a fresh database on the server (migrated: the real tables and indexes), prints one line
per size (median and max milliseconds of each form) and, last, a JSON object; drops the
database at the end."""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import psycopg

from beeoclock import migrations
from beeoclock.settings import Settings
from bench.system import DEFAULT_POSTGRES, fresh_database, new_values
from workers.projector import _PASSED_ON

#: the look as first written (before migration 015)
_EVERY_TENANT = (
    "SELECT r.stream, r.tenant_id, r.position, coalesce(a.position, 0) "
    "FROM relay_tenant_positions r LEFT JOIN applied_positions a USING (tenant_id, stream) "
    "WHERE r.name = %s AND r.position > coalesce(a.position, 0)"
)


def _timed(
    conn: psycopg.Connection[Any], query: str, params: tuple[Any, ...], runs: int
) -> list[float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        conn.execute(query, params).fetchall()
        times.append((time.perf_counter() - started) * 1000)
    return times


def measure(database_url: str, tenants: int, runs: int) -> dict[str, Any]:
    with psycopg.connect(database_url) as conn:
        conn.execute("TRUNCATE relay_tenant_positions, applied_positions")
        # every tenant's two streams applied up to their last notification...
        conn.execute(
            "INSERT INTO relay_tenant_positions (name, tenant_id, stream, position) "
            "SELECT 'relay', 't' || g, s, 2 * g + (s = 'service')::int "
            "FROM generate_series(1, %s) g, unnest(ARRAY['customer', 'service']) s",
            (tenants,),
        )
        conn.execute(
            "INSERT INTO applied_positions (tenant_id, stream, position) "
            "SELECT tenant_id, stream, position FROM relay_tenant_positions"
        )
        watermark = 2 * tenants + 1
        # ...and 1% of them written since the last look, their messages on the way
        conn.execute(
            "UPDATE relay_tenant_positions SET position = position + %s "
            "WHERE (substr(tenant_id, 2)::int %% 100) = 0",
            (watermark,),
        )
        conn.commit()
        conn.autocommit = True
        conn.execute("VACUUM ANALYZE relay_tenant_positions")
        conn.execute("ANALYZE applied_positions")
        every = _timed(conn, _EVERY_TENANT, ("relay",), runs)
        since = _timed(conn, _PASSED_ON, ("relay", watermark), runs)
    return {
        "tenant_streams": 2 * tenants,
        "every_tenant_ms": {"median": statistics.median(every), "max": max(every)},
        "since_last_look_ms": {"median": statistics.median(since), "max": max(since)},
    }


_UPSERT = (
    "INSERT INTO relay_tenant_positions (name, stream, tenant_id, position) "
    "SELECT 'relay', * FROM unnest(%s::text[], %s::text[], %s::bigint[]) "
    "ON CONFLICT (name, tenant_id, stream) DO UPDATE SET position = EXCLUDED.position"
)
_INDEX = "relay_tenant_positions_by_position"


def measure_upsert(database_url: str, tenants: int, runs: int) -> dict[str, Any]:
    """The relay's upsert of 20 tenants' positions, median microseconds, alternately with
    and without migration 015's index (restored at the end)."""
    found: dict[str, list[float]] = {"with_index_us": [], "without_index_us": []}
    with psycopg.connect(database_url, autocommit=True) as conn:
        (definition,) = conn.execute(
            "SELECT pg_get_indexdef(%s::regclass)", (_INDEX,)
        ).fetchone() or ("",)
        position = 10 * tenants
        for alternation in range(4):
            with_index = alternation % 2 == 0
            if with_index:
                conn.execute(definition.replace("CREATE INDEX", "CREATE INDEX IF NOT EXISTS"))
            else:
                conn.execute(f"DROP INDEX IF EXISTS {_INDEX}")
            times = found["with_index_us" if with_index else "without_index_us"]
            for round_ in range(runs * 10):
                batch = [f"t{(round_ * 37 + k * 101) % tenants + 1}" for k in range(20)]
                position += 100
                started = time.perf_counter()
                conn.execute(_UPSERT, (["customer"] * 20, batch, [position + k for k in range(20)]))
                times.append((time.perf_counter() - started) * 1e6)
        conn.execute(definition.replace("CREATE INDEX", "CREATE INDEX IF NOT EXISTS"))
    return {name: statistics.median(times) for name, times in found.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tenants", default="1000,10000,100000")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES)
    args = parser.parse_args()
    results = []
    with fresh_database(args.postgres) as url:
        settings = Settings(**new_values(url, "127.0.0.1:9", "redis://127.0.0.1:9/0", "WARNING"))
        migrations.migrate(settings)
        for tenants in (int(t) for t in args.tenants.split(",")):
            found = measure(url, tenants, args.runs)
            every, since = found["every_tenant_ms"], found["since_last_look_ms"]
            print(
                f"{found['tenant_streams']:>8} tenant streams: every tenant "
                f"{every['median']:.2f} ms (max {every['max']:.2f}), since the last look "
                f"{since['median']:.2f} ms (max {since['max']:.2f})"
            )
            results.append(found)
        upsert = measure_upsert(url, int(args.tenants.split(",")[-1]), args.runs)
        print(
            f"the relay's upsert of 20 tenants: {upsert['with_index_us']:.0f} us with the "
            f"index, {upsert['without_index_us']:.0f} us without (medians)"
        )
    print(json.dumps({"looks": results, "relay_upsert": upsert}))


if __name__ == "__main__":
    main()
