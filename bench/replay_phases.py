"""Where a replay's time goes: `beeoclock replay`'s phases timed one by one, over a scratch
database seeded straight into the event store.

    python -m bench.replay_phases [--customers 150000] [--runs 3] [--postgres URL]

Seeds `--customers` customers (each with its two uniqueness records, so three store events),
spread over tenants as the growth scenario spreads them (80% in one, the rest over 1,000),
then rebuilds the `customers` read model `--runs` times, as `beeoclock replay --projection
customers` does (worker processes included), timing each phase: the bulk phase (read, decode
and open, fold, copy in), the staging table's indexes, its VACUUM (ANALYZE), the swap (no
Redis: dropping cached answers is skipped). Prints one JSON line per run, then the means. The
database is dropped at the end. For an A/B, run it from two source trees, alternately.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

from bench import data
from bench.profiles import FULL
from bench.scenarios import growth_plan
from bench.system import DEFAULT_POSTGRES, fresh_database, new_values

PHASES = ("_bulk", "_index_staging", "_vacuum_staging", "_swap")


def timed_run(settings: Any) -> dict[str, float]:
    """One whole-table replay of `customers`, its phases timed (seconds)."""
    from workers import replay

    spent: dict[str, float] = {}
    originals = {name: getattr(replay.Replay, name) for name in PHASES}

    def timing(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                spent[name.strip("_")] = round(time.perf_counter() - started, 3)

        return timed

    for name, method in originals.items():
        setattr(replay.Replay, name, timing(name, method))
    try:
        started = time.perf_counter()
        report = replay.Replay(settings, replay.TARGETS["customers"], progress=False).run()
        spent["total"] = round(time.perf_counter() - started, 3)
    finally:
        for name, method in originals.items():
            setattr(replay.Replay, name, method)
    spent["events"] = report.events
    spent["events_per_s"] = round(report.events / spent["total"])
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=150_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--postgres",
        default=os.environ.get("BENCH_POSTGRES_URL", DEFAULT_POSTGRES),
        help="PostgreSQL server URL, as for `python -m bench`",
    )
    args = parser.parse_args()
    # no Redis here: the replay's warning that it could not drop cached answers is expected
    logging.getLogger("workers.replay").setLevel(logging.ERROR)

    from beeoclock.migrations import migrate
    from beeoclock.settings import Settings

    with fresh_database(args.postgres) as url:
        values = new_values(url, "127.0.0.1:9", "redis://127.0.0.1:9/0", "warning")
        settings = Settings(**values)
        migrate(settings)
        app = data.application(settings, pool_size=2)
        try:
            # the growth scenario's tenants: a big one with its share, the rest round robin
            smalls = [data.tenant_id("small", i) for i in range(FULL.growth_tenants)]
            plan = growth_plan(
                0, args.customers, data.tenant_id("big", 0), smalls, FULL.growth_big_share
            )
            seeded = data.seed_customers(app, plan, "phases", per_save=200)
        finally:
            app.close()
        print(f"seeded {seeded.customers:,} customers ({seeded.events:,} store events)", flush=True)
        runs = []
        for _ in range(args.runs):
            runs.append(timed_run(settings))
            print(json.dumps(runs[-1]), flush=True)
        means = {
            k: round(statistics.mean(r[k] for r in runs), 0 if k.startswith("events") else 3)
            for k in runs[0]
        }
        print("mean", json.dumps(means), flush=True)


if __name__ == "__main__":
    main()
