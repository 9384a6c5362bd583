"""Where a replay's time goes: `beeoclock replay`'s phases timed one by one, over a scratch
database seeded straight into the event store.

    python -m bench.replay_phases [--customers 150000] [--runs 3] [--postgres URL]

Seeds `--customers` customers (each with its two uniqueness records, so three store events),
spread over tenants as the growth scenario spreads them (80% in one, the rest over 1,000),
then rebuilds the `customers` read model `--runs` times, as `beeoclock replay --projection
customers` does (worker processes included), timing each phase: the bulk phase (read, decode
and open, fold, copy in), the staging table's indexes with each partition's VACUUM (ANALYZE),
the swap (no Redis: dropping cached answers is skipped), each with the cores the whole machine
kept busy in it (`bulk_cores`, ...; none for a phase under a second: the kernel counts in 10 ms
ticks), and `packed_s`: the run's busy CPU seconds over the machine's cores, the shortest the
same work could take in any order, a lower bound when nothing else runs on the machine and the
hypervisor delivers whole cores (stolen time is in the wall time, not in `packed_s`). The store
is vacuumed and checkpointed after seeding, so that neither lands in a run. Prints one JSON
line per run, then the means (rates as total events over total seconds). The database is
dropped at the end. For an A/B, run it from two source trees, alternately.
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

import psutil
import psycopg

from bench import data
from bench.cpu import busy_seconds
from bench.profiles import FULL
from bench.scenarios import growth_plan
from bench.system import DEFAULT_POSTGRES, fresh_database, new_values

PHASES = ("_bulk", "_index_staging", "_swap")


def timed_run(settings: Any) -> dict[str, float | None]:
    """One whole-table replay of `customers`, its phases timed (seconds), with how many cores
    the machine kept busy in each (`<phase>_cores`, None under a second), and `packed_s`:
    the replay's time had the CPU the machine spent in it been spread over every core all
    along (busy CPU seconds over the cores), the shortest any order of the same work could
    take on this machine."""
    from workers import replay

    spent: dict[str, float | None] = {}
    originals = {name: getattr(replay.Replay, name) for name in PHASES}

    def timing(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            started, busy = time.perf_counter(), busy_seconds()
            try:
                return method(*args, **kwargs)
            finally:
                wall = time.perf_counter() - started
                spent[name.strip("_")] = round(wall, 3)
                cores = (busy_seconds() - busy) / wall
                spent[name.strip("_") + "_cores"] = round(cores, 2) if wall >= 1 else None

        return timed

    for name, method in originals.items():
        setattr(replay.Replay, name, timing(name, method))
    try:
        started, busy = time.perf_counter(), busy_seconds()
        report = replay.Replay(settings, replay.TARGETS["customers"], progress=False).run()
        total = time.perf_counter() - started
        packed = (busy_seconds() - busy) / (psutil.cpu_count() or 1)
    finally:
        for name, method in originals.items():
            setattr(replay.Replay, name, method)
    spent.update(total=round(total, 3), packed_s=round(packed, 3), events=report.events)
    spent["events_per_s"] = round(report.events / total)
    spent["packed_events_per_s"] = round(report.events / packed)
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
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("VACUUM (ANALYZE) panel_events")
            conn.execute("CHECKPOINT")
        print(f"seeded {seeded.customers:,} customers ({seeded.events:,} store events)", flush=True)
        runs = []
        for _ in range(args.runs):
            runs.append(timed_run(settings))
            print(json.dumps(runs[-1]), flush=True)
        print("mean", json.dumps(_means(runs)), flush=True)


def _means(runs: list[dict[str, float | None]]) -> dict[str, float | None]:
    """The runs' means; a rate as the events of all runs over their seconds."""
    means: dict[str, float | None] = {}
    for k in runs[0]:
        values = [v for r in runs if (v := r.get(k)) is not None]
        means[k] = round(statistics.mean(values), 3) if values else None
    events = sum(float(r["events"] or 0) for r in runs)
    means["events"] = round(events / len(runs))
    for rate, seconds in (("events_per_s", "total"), ("packed_events_per_s", "packed_s")):
        means[rate] = round(events / sum(float(r[seconds] or 0) for r in runs))
    return means


if __name__ == "__main__":
    main()
