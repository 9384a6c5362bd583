"""Where a replay's time goes: `beeoclock replay`'s phases timed one by one, over a scratch
database seeded straight into the event store.

    python -m bench.replay_phases [--customers 150000] [--runs 3] [--postgres URL]

Seeds `--customers` customers (each with its two uniqueness records, so three store events),
spread over tenants as the growth scenario spreads them (80% in one, the rest over 1,000),
then rebuilds the `customers` read model `--runs` times, as `beeoclock replay --projection
customers` does (worker processes included), timing each phase: the bulk phase (read, decode
and open, fold, copy in), the staging table's indexes, its VACUUM (ANALYZE), the swap (no
Redis: dropping cached answers is skipped), each with the cores the machine kept busy in it
(`bulk_cores`, ...; the kernel counts in 10 ms ticks, so a phase of well under a second gets a
coarse figure), and `packed_s`: the run's busy CPU seconds over the machine's cores, the
shortest the same work could take however it were ordered. Prints one JSON line per run, then
the means. The database is dropped at the end. For an A/B, run it from two source trees,
alternately.
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

from bench import data
from bench.profiles import FULL
from bench.scenarios import growth_plan
from bench.system import DEFAULT_POSTGRES, fresh_database, new_values

PHASES = ("_bulk", "_index_staging", "_vacuum_staging", "_swap")


def _busy_s() -> float:
    """CPU seconds the whole machine has spent busy (every core, every process) so far."""
    times = psutil.cpu_times()
    # Linux counts guest time in user and nice already; idle, iowait and steal (the
    # hypervisor running someone else) are no work of this machine's
    left_out = ("idle", "iowait", "steal", "guest", "guest_nice")
    return float(sum(getattr(times, f) for f in times._fields if f not in left_out))


def timed_run(settings: Any) -> dict[str, float]:
    """One whole-table replay of `customers`, its phases timed (seconds), with how many cores
    the machine kept busy in each (`<phase>_cores`), and `packed_s`: the replay's time had
    the CPU it took been spread over every core all along (its busy CPU seconds over the
    cores), the shortest any reordering of the same work could take on this machine."""
    from workers import replay

    spent: dict[str, float] = {}
    originals = {name: getattr(replay.Replay, name) for name in PHASES}

    def timing(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            started, busy = time.perf_counter(), _busy_s()
            try:
                return method(*args, **kwargs)
            finally:
                wall = time.perf_counter() - started
                spent[name.strip("_")] = round(wall, 3)
                spent[name.strip("_") + "_cores"] = round((_busy_s() - busy) / wall, 2)

        return timed

    for name, method in originals.items():
        setattr(replay.Replay, name, timing(name, method))
    try:
        started, busy = time.perf_counter(), _busy_s()
        report = replay.Replay(settings, replay.TARGETS["customers"], progress=False).run()
        spent["total"] = round(time.perf_counter() - started, 3)
        spent["packed_s"] = round((_busy_s() - busy) / (psutil.cpu_count() or 1), 3)
    finally:
        for name, method in originals.items():
            setattr(replay.Replay, name, method)
    spent["events"] = report.events
    spent["events_per_s"] = round(report.events / spent["total"])
    spent["packed_events_per_s"] = round(report.events / spent["packed_s"])
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
        means: dict[str, float] = {}
        for k in runs[0]:
            mean = statistics.mean(r[k] for r in runs)
            means[k] = round(mean) if k.endswith(("events", "per_s")) else round(mean, 3)
        print("mean", json.dumps(means), flush=True)


if __name__ == "__main__":
    main()
