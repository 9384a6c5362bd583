"""The event store's own ceiling for the write path: the project's `PanelApplication` and its
`register_customer` handler (load uniqueness records, decide, save customer and records in one
transaction), called from N threads in one process, with no HTTP in front.

Run as `python -m bench.es_direct SPEC.json` with the BEEOCLOCK_* settings in the environment;
prints one JSON object on stdout.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import data
from bench.stats import summarize


def register(app: Any, tenant: str, tag: str, n: int) -> None:
    from commands import handlers
    from commands.context import Meta
    from commands.customer import RegisterCustomer

    meta = Meta(tenant, "bench-direct", f"direct-{tag}-{n}", datetime.now(UTC))
    handlers.register_customer(
        app,
        RegisterCustomer(
            meta=meta,
            customer_id=data.customer_id(tag, n),
            personal={
                "firstName": data.first_name(n),
                "lastName": data.last_name(n),
                "email": data.email(tag, n),
                "phone": data.phone_digits(n),
                "note": None,
            },
            customer_type="regular",
            state="active",
            state_history=[],
            created_at=None,
        ),
    )


def run(spec: dict[str, Any]) -> dict[str, Any]:
    from beeoclock.settings import load_settings

    threads = spec["threads"]
    app = data.application(load_settings(), pool_size=max(threads, 2))
    tag, tenant = spec["tag"], spec["tenant"]
    _ = app.uniqueness_key  # read once, as a long-running API process has it
    now = time.perf_counter()
    start = now + spec.get("warmup_s", 0.0)
    end = start + spec["duration_s"]
    latencies: list[list[float]] = [[] for _ in range(threads)]
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()

    def loop(i: int) -> None:
        n = spec["base"] + i * spec["stride"]
        mine = latencies[i]
        while True:
            sent = time.perf_counter()
            if sent >= end:
                return
            try:
                register(app, tenant, tag, n)
                outcome = "ok"
            except Exception as exc:  # every failure is counted and reported
                outcome = type(exc).__name__
            done = time.perf_counter()
            n += 1
            if start <= done <= end:
                mine.append((done - sent) * 1000)
                with lock:
                    outcomes[outcome] += 1

    workers = [threading.Thread(target=loop, args=(i,), daemon=True) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(spec["duration_s"] + spec.get("warmup_s", 0) + 60)
    app.close()
    all_ms = [v for part in latencies for v in part]
    ok = outcomes.get("ok", 0)
    return {
        "generator": "threads",
        "connections": threads,
        "duration_s": spec["duration_s"],
        "requests": sum(outcomes.values()),
        "rps": round(sum(outcomes.values()) / spec["duration_s"], 1),
        "ok_rps": round(ok / spec["duration_s"], 1),
        "statuses": dict(outcomes),
        "errors": {k: v for k, v in outcomes.items() if k != "ok"},
        **summarize(all_ms),
    }


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    print(json.dumps(run(spec)))


if __name__ == "__main__":
    main()
