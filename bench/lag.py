"""Write -> read lag, open loop: POST customers at a fixed rate (each send scheduled at
t0 + i/rate, whatever the answers do) and watch a read-model table in PostgreSQL until each
written customer shows.

The lag of a write is (the moment the poll that first returned its row completed) minus (the
moment its 201 response was read). Polls run every `poll_ms` (2 ms) as one indexed query for
all the customers still pending (`SELECT id FROM <table> WHERE tenant_id = %s AND id =
ANY(%s)`), so a lag is over-estimated by at most one poll interval plus one query (~0.3 ms),
never under-estimated. Polling reads what a reader would read, and adds nothing to the system
under test (no trigger, no NOTIFY on the read model).

Run as `python -m bench.lag SPEC.json`; prints one JSON object on stdout (and, with
`series_file` in the spec, writes each write's start offset and lag there, for looking at
when the slow ones happen).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from bench import data
from bench.httpload import _install_uvloop, customer_request, read_response
from bench.stats import histogram, summarize


class Lag:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.pending: dict[str, float] = {}
        self.lags_ms: list[float] = []
        #: (answered, seen) of each write, for `series_file`
        self.series: list[tuple[float, float]] = []
        self.write_ms: list[float] = []
        self.waits_ms: list[float] = []
        self.answered_at: list[float] = []
        self.statuses: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.sending = True
        self.polls = 0
        self.t0 = 0.0

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection(self.spec["host"], self.spec["port"])

    async def write(self, pool: asyncio.Queue[Any], n: int, scheduled: float) -> None:
        spec = self.spec
        conn = await pool.get()
        self.waits_ms.append((time.perf_counter() - scheduled) * 1000)
        cid = data.customer_id(spec["tag"], n)
        payload = customer_request(
            f"{spec['host']}:{spec['port']}", spec["tenant"], spec["token"], spec["tag"], n
        )
        try:
            if conn is None:
                conn = await self._open()
            reader, writer = conn
            sent = time.perf_counter()
            writer.write(payload)
            status, _, keep = await read_response(reader)
            done = time.perf_counter()
            if not keep:
                writer.close()
                conn = None
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            self.errors[type(exc).__name__] += 1
            pool.put_nowait(None)
            return
        pool.put_nowait(conn)
        self.statuses[str(status)] += 1
        self.write_ms.append((done - sent) * 1000)
        if 200 <= status < 300:
            self.pending[cid] = done
            self.answered_at.append(done)

    async def poll(self, stop_at: float) -> None:
        spec = self.spec
        query = sql.SQL("SELECT id FROM {} WHERE tenant_id = %s AND id = ANY(%s)").format(
            sql.Identifier(spec["table"])
        )
        interval = spec.get("poll_ms", 2) / 1000
        async with await psycopg.AsyncConnection.connect(
            spec["database_url"], autocommit=True
        ) as conn:
            while time.perf_counter() < stop_at and (self.sending or self.pending):
                if self.pending:
                    ids = list(self.pending)
                    cur = await conn.execute(query, (spec["tenant"], ids), prepare=True)
                    rows = await cur.fetchall()
                    seen = time.perf_counter()
                    self.polls += 1
                    for (cid,) in rows:
                        answered = self.pending.pop(cid, None)
                        if answered is not None:
                            self.lags_ms.append((seen - answered) * 1000)
                            self.series.append((answered, seen))
                await asyncio.sleep(interval)

    async def run(self) -> dict[str, Any]:
        spec = self.spec
        rate, duration = spec["rate"], spec["duration_s"]
        connections = spec.get("connections", 64)
        pool: asyncio.Queue[Any] = asyncio.Queue()
        for _ in range(connections):
            pool.put_nowait(await self._open())
        total = int(rate * duration)
        # more writes waiting than this: the system can't sustain the rate; stop sending
        max_in_flight = spec.get("max_in_flight", 4 * connections)
        drain = spec.get("drain_s", 10)
        poller = asyncio.create_task(poll_guard(self, duration + drain + 40))
        tasks: set[asyncio.Task[None]] = set()
        t0 = self.t0 = time.perf_counter() + 0.05
        sent, saturated = 0, False
        for i in range(total):
            scheduled = t0 + i / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if len(tasks) >= max_in_flight:
                saturated = True
                break
            task = asyncio.create_task(self.write(pool, spec["base"] + i, scheduled))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            sent += 1
        window_end = t0 + duration
        unfinished = 0
        if tasks:
            _, late = await asyncio.wait(set(tasks), timeout=30)
            for task in late:
                task.cancel()
            unfinished = len(late)
        self.sending = False
        await poller
        while not pool.empty():
            conn = pool.get_nowait()
            if conn is not None:
                conn[1].close()
        ok = sum(c for s, c in self.statuses.items() if s.startswith("2"))
        in_window = sum(1 for t in self.answered_at if t <= window_end)
        return {
            "rate_target": rate,
            "duration_s": duration,
            "sent": sent,
            "saturated": saturated,
            "unfinished": unfinished,
            "rate_achieved": round(in_window / duration, 1),
            "ok": ok,
            "statuses": dict(sorted(self.statuses.items())),
            "errors": dict(self.errors),
            "missing": len(self.pending),
            "polls": self.polls,
            "lag": summarize(self.lags_ms),
            "lag_histogram": histogram(self.lags_ms),
            "write_latency": summarize(self.write_ms),
            "send_delay_p99_ms": summarize(self.waits_ms)["p99_ms"],
        }


async def poll_guard(lag: Lag, timeout_s: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(lag.poll(time.perf_counter() + timeout_s), timeout_s + 5)


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    _install_uvloop()
    lag = Lag(spec)
    print(json.dumps(asyncio.run(lag.run())))
    if spec.get("series_file"):  # each write: seconds from the start, its lag in ms
        started = time.time() - (time.perf_counter() - lag.t0)  # the start, as a wall clock
        Path(spec["series_file"]).write_text(
            f"# started {datetime.fromtimestamp(started, UTC).isoformat()}\n"
            + "\n".join(f"{a - lag.t0:.4f} {(b - a) * 1000:.2f}" for a, b in sorted(lag.series))
        )


if __name__ == "__main__":
    main()
