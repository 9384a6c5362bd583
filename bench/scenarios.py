"""The scenarios of issue 7, each measured next to its alternative or ceiling in the same run.

Each function takes the run's Context and returns a JSON-able dict; bench/report.py turns
them into RESULTS.md, results.json and plots.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import psycopg
import redis

from beeoclock import kafka
from bench import cpu, data
from bench.context import Context, redis_benchmark
from bench.system import BenchError, count_events, run_child, store_size, wait_until

Scenario = Callable[[Context], dict[str, Any]]
CUSTOMER_PATH = "/api/v1/customer"
PAGE = "/api/v1/customer/paged?page={page}&pageSize=20"
EVENTUAL = {"X-Consistency": "eventual"}


def _get(path: str, headers: dict[str, str]) -> list[Any]:
    return ["GET", path, headers, None]


def _prime(port: int, items: list[list[Any]]) -> None:
    """One consistent read of each request, so the cache holds its answer."""
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        for _, path, headers, _ in items:
            plain = {k: v for k, v in headers.items() if k != "X-Consistency"}
            answer = client.get(path, headers=plain)
            if answer.status_code != 200:
                msg = f"GET {path} answered {answer.status_code}: {answer.text[:200]}"
                raise BenchError(msg)


def _redis_keys(ctx: Context) -> int:
    client = redis.Redis.from_url(ctx.system.redis_url)
    try:
        return int(client.dbsize())
    finally:
        client.close()


# --- baselines -------------------------------------------------------------------------------


@contextlib.contextmanager
def baseline_app(ctx: Context, one: bytes = b"{}", page: bytes = b"{}") -> Iterator[int]:
    """The CRUD and bare-bytes FastAPI app (bench/baseline_app.py) in a process of its own."""
    from beeoclock.embedded import free_port
    from bench.baseline_app import CREATE

    folder = ctx.workdir / f"bytes-{time.monotonic_ns()}"
    folder.mkdir()
    (folder / "one.json").write_bytes(one)
    (folder / "page.json").write_bytes(page)
    with psycopg.connect(ctx.system.database_url, autocommit=True) as conn:
        for statement in CREATE:
            conn.execute(statement)
    port = free_port()
    env = ctx.system.env(
        BENCH_DATABASE_URL=ctx.system.database_url,
        BENCH_JWT_SECRET=ctx.system.jwt_secret,
        BENCH_BYTES_DIR=str(folder),
    )
    args = [sys.executable, "-m", "bench.baseline_app", "--port", str(port)]
    child = ctx.system.children.start("baseline-app", args, env, port)
    if ctx.memory:
        ctx.memory.add("baseline-app", child.pid)
    try:
        yield port
    finally:
        ctx.system.children.stop("baseline-app")


def _redis_benchmark(ctx: Context, value: bytes, clients: int) -> dict[str, Any]:
    exe = redis_benchmark()
    assert exe is not None
    url = urllib.parse.urlsplit(ctx.system.redis_url)
    client = redis.Redis.from_url(ctx.system.redis_url)
    try:
        client.set("bench:value", value)
    finally:
        client.close()
    args = [exe, "-h", url.hostname or "127.0.0.1", "-p", str(url.port or 6379)]
    args += ["-c", str(clients), "-n", str(ctx.profile.redis_requests), "--csv"]
    done = subprocess.run(
        [*args, "GET", "bench:value"], capture_output=True, text=True, timeout=300, check=False
    )
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    if done.returncode != 0 or not rows:
        msg = f"redis-benchmark failed: {done.stderr[:300]} {done.stdout[:300]}"
        raise BenchError(msg)
    row = rows[-1]
    return {
        "generator": "redis-benchmark",
        "connections": clients,
        "requests": ctx.profile.redis_requests,
        "rps": float(row["rps"]),
        "ok_rps": float(row["rps"]),
        "p50_ms": float(row["p50_latency_ms"]),
        "p99_ms": float(row["p99_latency_ms"]),
        "max_ms": float(row["max_latency_ms"]),
        "value_bytes": len(value),
        "statuses": {},
    }


# --- 1. writes -------------------------------------------------------------------------------


def writes(ctx: Context) -> dict[str, Any]:
    """POST /api/v1/customer at 1/8/32 clients, next to the event store driven directly by the
    same handler (no HTTP) and a plain CRUD app, each for the same fixed duration."""
    p = ctx.profile
    out: dict[str, Any] = ctx.partial("writes")
    out |= {"http": [], "event_store": [], "crud": []}
    with baseline_app(ctx) as crud_port:
        for clients in p.write_clients:
            # every run starts with relay and projector idle: the runs before it wrote
            # thousands of customers they would otherwise still be publishing and projecting
            ctx.wait_applied()
            tenant = ctx.tenant("w")
            req = ctx.customer_requests([tenant], clients, p.write_duration_s, CUSTOMER_PATH)
            http = ctx.closed_loop(ctx.system.write_port, req, clients, p.write_duration_s)
            out["http"].append(http | {"clients": clients})
            ctx.check_system()

            ctx.wait_applied()
            direct = ctx.customer_requests([tenant], clients, p.write_duration_s, CUSTOMER_PATH)
            spec = {
                "threads": clients,
                "duration_s": p.write_duration_s,
                "warmup_s": p.warmup_s,
                "tenant": ctx.tenant("d")[0],
                "tag": ctx.tag,
                "base": direct["base"],
                "stride": direct["stride"],
            }
            timeout = p.write_duration_s + p.warmup_s + 120
            es = ctx.child_json("bench.es_direct", spec, timeout)
            out["event_store"].append(es | {"clients": clients})

            crud_tenant = ctx.tenant("c")
            req = ctx.customer_requests(
                [crud_tenant], clients, p.write_duration_s, "/crud/customer"
            )
            crud = ctx.closed_loop(crud_port, req, clients, p.write_duration_s)
            out["crud"].append(crud | {"clients": clients})
    out["http_vs_event_store"] = [
        {
            "clients": h["clients"],
            "ratio": round(h["ok_rps"] / e["ok_rps"], 3) if e["ok_rps"] else None,
        }
        for h, e in zip(out["http"], out["event_store"], strict=True)
    ]
    return out


# --- 2. write -> read lag --------------------------------------------------------------------


def _lag_run(
    ctx: Context, rate: int, table: str, duration_s: float | None = None
) -> dict[str, Any]:
    p = ctx.profile
    duration_s = p.lag_duration_s if duration_s is None else duration_s
    tenant, token = ctx.tenant("lag")
    # one tenant, as one business writing: all its events go to one Kafka partition (the
    # relay keys them by tenant), recorded with the run
    partitions = int(ctx.system.settings().kafka_partitions)
    partition = {"partition": kafka.partition_of(tenant, partitions)}
    spec = {
        "host": "127.0.0.1",
        "port": ctx.system.write_port,
        "tenant": tenant,
        "token": token,
        "tag": ctx.tag,
        "base": ctx.seq.take(int(rate * duration_s) + 10),
        "rate": rate,
        "duration_s": duration_s,
        "drain_s": p.lag_drain_s,
        "table": table,
        "database_url": ctx.system.database_url,
        "poll_ms": 2,
        "connections": 64 if rate >= 200 else 16,
        # each write's lag, kept with the run's logs: when the slow ones happen
        "series_file": str(ctx.workdir / f"lag-series-{table}-{rate}-{tenant}.txt"),
    }
    timeout = duration_s + p.lag_drain_s + 120
    if ctx.memory is None:
        return ctx.child_json("bench.lag", spec, timeout) | partition
    # where the cores go while the writes are sent (the window skips their first and last
    # 2 s, or quarter in a short run)
    edge = min(2.0, duration_s / 4)
    groups = cpu.process_groups(ctx.memory.procs, "bench.lag")
    with cpu.cpu_window(groups, edge, duration_s - 2 * edge) as used:
        result = ctx.child_json("bench.lag", spec, timeout)
    return result | partition | {"cpu": used}


@contextlib.contextmanager
def projection_runner(ctx: Context) -> Iterator[None]:
    """The `eventsourcing` ProjectionRunner (bench/es_projection.py) in a process of its own."""
    args = [sys.executable, "-m", "bench.es_projection"]
    child = ctx.system.children.start("es-projection", args, ctx.system.env())
    try:
        wait_until(lambda: "ready" in child.tail(5) or not child.alive(), 90, "ProjectionRunner")
        if not child.alive():
            msg = f"the ProjectionRunner exited:\n{child.tail()}"
            raise BenchError(msg)
        if ctx.memory:
            ctx.memory.add("es-projection", child.pid)
        yield
    finally:
        ctx.system.children.stop("es-projection")


def _runner_caught_up(ctx: Context) -> bool:
    found = ctx.sql(
        "SELECT (SELECT COALESCE(max(notification_id), 0) FROM bench_es_tracking "
        "WHERE application_name = 'Panel') >= (SELECT COALESCE(max(notification_id), 0) "
        "FROM panel_events WHERE originator_id LIKE 'customer:%%')"
    )
    return bool(found and found[0][0])


def lag(ctx: Context) -> dict[str, Any]:
    """Open-loop writes at each rate; the lag until the read model shows each one: through
    relay -> Kafka -> projector, then through the library's ProjectionRunner. A path that has
    not caught up 120 s after a rate is not measured at the higher rates (noted)."""
    out: dict[str, Any] = ctx.partial("lag")
    out |= {"pipeline": [], "projection_runner": [], "skipped": []}
    # the scenarios before leave the projector a backlog (the writes scenario's direct saves
    # go through relay and broker too): the first rate would measure its draining
    try:
        out["caught_up_before_s"] = round(ctx.wait_applied(300), 2)
    except BenchError:
        out["skipped"].append("pipeline: still behind 300 s after the earlier scenarios")
    for rate in ctx.profile.lag_rates:
        out["pipeline"].append(_lag_run(ctx, rate, "customers"))
        ctx.check_system()
        try:
            ctx.wait_applied(120)
        except BenchError:
            out["skipped"].append(f"pipeline: still behind 120 s after {rate}/s")
            break
    with projection_runner(ctx):
        for rate in ctx.profile.lag_rates:
            try:
                wait_until(lambda: _runner_caught_up(ctx), 120, "ProjectionRunner catching up")
            except BenchError:
                out["skipped"].append(f"ProjectionRunner: still behind 120 s before {rate}/s")
                break
            out["projection_runner"].append(_lag_run(ctx, rate, "bench_es_customers"))
    for text in out["skipped"]:
        ctx.notes.append(f"Lag: {text}; higher rates not measured.")
    return out


# --- 3. reads --------------------------------------------------------------------------------


def seed_tenant(ctx: Context, tenant: str, customers: int) -> data.SeedStats:
    app = ctx.system.application(pool_size=2)
    try:
        base = ctx.seq.take(customers)
        plan = ((tenant, base + k) for k in range(customers))
        return data.seed_customers(app, plan, ctx.tag)
    finally:
        app.close()


def read_kinds(
    ids: list[str], headers: dict[str, str], cached_only: bool = False
) -> dict[str, tuple[list[list[Any]], bool]]:
    """name -> (requests to cycle through, cached?). Uncached reads send `X-Consistency:
    eventual`, which never stores in the cache, after a FLUSHALL of the bench's Redis."""
    eventual = headers | EVENTUAL
    one = f"{CUSTOMER_PATH}/{ids[0]}"
    page = PAGE.format(page=1)
    phrase = f"{page}&phrase={urllib.parse.quote(data.PHRASES[0])}"
    kinds: dict[str, tuple[list[list[Any]], bool]] = {
        "by_id_cached": ([_get(one, headers)], True),
        "by_id_cached_eventual": ([_get(one, eventual)], True),
        "page_cached": ([_get(page, headers)], True),
        "phrase_cached": ([_get(phrase, headers)], True),
    }
    if not cached_only:
        kinds |= {
            "by_id_uncached": ([_get(f"{CUSTOMER_PATH}/{i}", eventual) for i in ids], False),
            "page_uncached": ([_get(PAGE.format(page=k), eventual) for k in range(1, 11)], False),
            "phrase_uncached": (
                [_get(f"{page}&phrase={urllib.parse.quote(x)}", eventual) for x in data.PHRASES],
                False,
            ),
        }
    return kinds


def measure_read(
    ctx: Context, items: list[list[Any]], cached: bool, connections: int, duration_s: float
) -> dict[str, Any]:
    if cached:
        _prime(ctx.system.read_port, items)
    else:
        ctx.flush_redis()
    result = ctx.closed_loop(
        ctx.system.read_port, {"kind": "cycle", "items": items}, connections, duration_s
    )
    result["connections"] = connections
    if not cached:
        result["redis_keys_after"] = _redis_keys(ctx)  # 0: nothing was served from the cache
    return result


def reads(ctx: Context) -> dict[str, Any]:
    """GET by id and paged lists (with and without phrase), cached and uncached, at each
    connection count; next to Redis itself and a bare FastAPI endpoint with the same bytes."""
    p = ctx.profile
    tenant, token = ctx.tenant("read")
    seeded = seed_tenant(ctx, tenant, p.read_customers)
    ctx.wait_applied()
    ctx.settle()
    headers = ctx.headers(tenant, token)
    ids = ctx.ids_of(tenant, 1000)
    if not ids:
        msg = "the read tenant has no customers in the read model"
        raise BenchError(msg)
    out: dict[str, Any] = ctx.partial("reads")
    out |= {
        "tenant_customers": p.read_customers,
        "seed_events_per_s": round(seeded.events_per_s),
        "kinds": {},
        "baselines": {},
    }
    for connections in p.read_connections:
        for name, (items, cached) in read_kinds(ids, headers).items():
            result = measure_read(ctx, items, cached, connections, p.read_duration_s)
            out["kinds"].setdefault(name, []).append(result)
            ctx.check_system()
    with httpx.Client(base_url=f"http://127.0.0.1:{ctx.system.read_port}", timeout=30) as client:
        one = client.get(f"{CUSTOMER_PATH}/{ids[0]}", headers=headers).content
        page = client.get(PAGE.format(page=1), headers=headers).content
    out["body_bytes"] = {"one": len(one), "page": len(page)}
    with baseline_app(ctx, one, page) as port:
        for connections in p.read_connections:
            for name, path in (
                ("fastapi_bytes_one", "/bytes/one"),
                ("fastapi_bytes_page", "/bytes/page"),
            ):
                req = {"kind": "cycle", "items": [_get(path, {})]}
                result = ctx.closed_loop(port, req, connections, p.read_duration_s)
                out["baselines"].setdefault(name, []).append(result | {"connections": connections})
    if redis_benchmark():
        value = (one * (1024 // max(len(one), 1) + 1))[:1024]
        for connections in p.read_connections:
            result = _redis_benchmark(ctx, value, connections)
            out["baselines"].setdefault("redis_get_1k", []).append(result)
    else:
        out["baselines_skipped"] = "redis-benchmark is not installed (apt-get install redis-tools)"
        ctx.notes.append("Reads: redis-benchmark missing, its baseline was skipped.")
    return out


# --- 5. memory -------------------------------------------------------------------------------


def memory(ctx: Context) -> dict[str, Any]:
    """RSS of each process at steady state (idle, after the load scenarios): the median of
    five samples a second apart; the peak is the highest sample seen during the whole run.
    Also the cores each group of processes uses at rest, over those seconds."""
    assert ctx.memory is not None
    time.sleep(2)
    samples = []
    # the CPU the system takes at rest, over the same seconds (no load generator runs)
    groups = cpu.process_groups(ctx.memory.procs, "bench.at-rest")
    with cpu.cpu_window(groups, 0.0, 4.5) as at_rest:
        for _ in range(5):
            samples.append(ctx.memory.snapshot())
            time.sleep(1)
    names = sorted(set().union(*samples))
    steady = {n: sorted(s.get(n, 0) for s in samples)[len(samples) // 2] for n in names}
    return {
        "steady_rss_bytes": steady,
        "peak_rss_bytes": dict(sorted(ctx.memory.peak.items())),
        "pids": ctx.system.pids(),
        "cpu_at_rest": at_rest,
    }


# --- 4. replay -------------------------------------------------------------------------------


def replay_available() -> bool:
    done = run_child([sys.executable, "-m", "beeoclock.cli", "--help"], _plain_env(), 60)
    return done.returncode == 0 and " replay " in f" {done.stdout} ".replace("\n", " ")


def _plain_env() -> dict[str, str]:
    from bench.context import env_without_bench

    return env_without_bench()


def replay_cli(ctx: Context) -> dict[str, Any]:
    """`beeoclock replay --projection customers`, timed from start to exit (process start
    included); the events it applied are taken from its JSON report when it prints one."""
    if not replay_available():
        return {"status": "not available yet (no `replay` in `beeoclock --help`)"}
    counts = count_events(ctx.system.database_url)
    log = ctx.workdir / "logs" / "replay.log"
    started = time.perf_counter()
    try:
        done = run_child(
            ctx.system.cli("replay", "--projection", "customers"),
            ctx.system.env(),
            ctx.profile.replay_timeout_s,
            log,
        )
    except subprocess.TimeoutExpired:
        return {"status": f"stopped after {ctx.profile.replay_timeout_s:.0f} s (time bound)"}
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-10:])
        return {"status": f"failed ({done.returncode})", "log_tail": tail}
    report: dict[str, Any] = {}
    for line in reversed((done.stdout or "").splitlines()):
        with contextlib.suppress(ValueError):
            report = json.loads(line)
            break
    applied = report.get("events") if isinstance(report.get("events"), int) else None
    customer = applied if applied is not None else counts["customer"]
    return {
        "status": "ok",
        "seconds": round(seconds, 3),
        "store_events": counts["all"],
        "customer_events": customer,
        "store_events_per_s": round(counts["all"] / seconds),
        "customer_events_per_s": round(customer / seconds),
        "report": report or (done.stdout or "").strip()[-500:],
    }


def raw_read(app: Any, max_s: float, batch: int = 5000) -> dict[str, Any]:
    """The event store's raw read rate: `select_notifications` in batches of 5,000, then
    each decoded with `app.mapper.to_domain_event` (with the batch's personal-data keys
    fetched at once, where the project seals personal data); timed separately."""
    recorder, mapper = app.recorder, app.mapper
    position, count, selecting, decoding = 0, 0, 0.0, 0.0
    deadline = time.monotonic() + max_s
    while time.monotonic() < deadline:
        t0 = time.perf_counter()
        notes = recorder.select_notifications(start=position, limit=batch, inclusive_of_start=False)
        t1 = time.perf_counter()
        if not notes:
            break
        with data.key_session(app):
            data.prefetch_keys(app, notes)
            for note in notes:
                mapper.to_domain_event(note)
        decoding += time.perf_counter() - t1
        selecting += t1 - t0
        count += len(notes)
        position = notes[-1].id
    return {
        "notifications": count,
        "select_s": round(selecting, 3),
        "decode_s": round(decoding, 3),
        "raw_per_s": round(count / selecting) if selecting else None,
        "decoded_per_s": round(count / (selecting + decoding)) if selecting + decoding else None,
    }


_SCRATCH = "bench_scratch"


def reference_rebuild(ctx: Context, app: Any, max_s: float, batch: int = 5000) -> dict[str, Any]:
    """What the projector's own `project()` achieves replaying the store with no Kafka: read
    batches of 5,000 notifications, decode, keep customer events, fold and upsert them into a
    scratch copy of the `customers` table (one transaction per batch)."""
    from events.base import PanelEvent
    from projections import customers

    def missing(originator_id: str, after: int, before: int) -> list[Any]:
        return list(app.events.get(originator_id, gt=after, lte=before - 1))

    with psycopg.connect(ctx.system.database_url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {_SCRATCH} CASCADE")
        conn.execute(f"CREATE SCHEMA {_SCRATCH}")
        conn.execute(f"CREATE TABLE {_SCRATCH}.customers (LIKE public.customers INCLUDING ALL)")
        conn.execute(f"SET search_path TO {_SCRATCH}, public")
        conn.autocommit = False
        position, read, applied = 0, 0, 0
        started = time.perf_counter()
        deadline = time.monotonic() + max_s
        while time.monotonic() < deadline:
            notes = app.recorder.select_notifications(
                start=position, limit=batch, inclusive_of_start=False
            )
            if not notes:
                break
            with data.key_session(app):
                data.prefetch_keys(app, notes)
                events = [app.mapper.to_domain_event(n) for n in notes]
                mine = [
                    e
                    for e in events
                    if isinstance(e, PanelEvent) and e.originator_id.startswith("customer:")
                ]
                with conn.cursor() as cur:
                    customers.project(cur, mine, missing)
                conn.commit()
            read += len(notes)
            applied += len(mine)
            position = notes[-1].id
        seconds = time.perf_counter() - started
        conn.autocommit = True
        conn.execute(f"DROP SCHEMA IF EXISTS {_SCRATCH} CASCADE")
    return {
        "store_events": read,
        "customer_events": applied,
        "seconds": round(seconds, 3),
        "store_events_per_s": round(read / seconds) if seconds else None,
        "customer_events_per_s": round(applied / seconds) if seconds else None,
    }


def replay(ctx: Context, app: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"cli": replay_cli(ctx)}
    out["raw_read"] = raw_read(app, ctx.profile.raw_read_max_s)
    try:
        out["reference_rebuild"] = reference_rebuild(ctx, app, ctx.profile.rebuild_max_s)
    except Exception as exc:  # the projection's interface may change: report, don't fail
        out["reference_rebuild"] = {"error": f"{type(exc).__name__}: {exc}"}
    return out


# --- 6. growth -------------------------------------------------------------------------------


def growth_plan(
    base: int, customers: int, big: str, smalls: list[str], share: float
) -> Iterator[tuple[str, int]]:
    """Customers for the big tenant (`share` of them, spread evenly) and, round robin, the
    small ones."""
    small_i = 0
    for k in range(customers):
        if math.floor((k + 1) * share) > math.floor(k * share):
            yield big, base + k
        else:
            yield smalls[small_i % len(smalls)], base + k
            small_i += 1


DEEP_ROUNDS = 3


def deep_pages(ctx: Context, tenant: str, token: str, rows: int) -> dict[str, Any]:
    """The first page, a page at offset D (page=D/20+1) and the page after a cursor at row D,
    D = min(deep_rows, rows - 20), all uncached, in one tenant."""
    from projections.paging import encode_cursor

    p = ctx.profile
    depth = max(20, min(p.deep_rows, rows - 20) // 20 * 20)
    found = ctx.sql(
        "SELECT updated_at, id FROM customers WHERE tenant_id = %s "
        "ORDER BY updated_at DESC, id DESC OFFSET %s LIMIT 1",
        (tenant, depth - 1),
    )
    if not found:
        return {"status": f"the tenant has fewer than {depth} rows"}
    cursor = encode_cursor("updatedAt", "desc", found[0][0], found[0][1])
    eventual = ctx.headers(tenant, token) | EVENTUAL
    paths = {
        "first": PAGE.format(page=1),
        "offset": PAGE.format(page=depth // 20 + 1),
        "cursor": f"{CUSTOMER_PATH}/paged?pageSize=20&cursor={urllib.parse.quote(cursor)}",
    }
    # Interleaved rounds (first, offset, cursor, first, ...), each kind's figure the round
    # with its median p50: the machine's speed drifts between windows, and the comparison is
    # of two pages that cost nearly the same
    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in paths}
    window = p.growth_read_duration_s / DEEP_ROUNDS
    for _ in range(DEEP_ROUNDS):
        for name, path in paths.items():
            run = measure_read(
                ctx, [_get(path, eventual)], False, p.growth_read_connections, window
            )
            rounds[name].append(run)
    out: dict[str, Any] = {"depth_rows": depth, "rounds": DEEP_ROUNDS}
    for name, runs in rounds.items():
        ordered = sorted(runs, key=lambda r: r["p50_ms"])
        out[name] = ordered[len(ordered) // 2] | {"round_p50s": [r["p50_ms"] for r in runs]}
    return out


def _tenant_rows(ctx: Context, tenant: str) -> int:
    found = ctx.sql("SELECT count(*) FROM customers WHERE tenant_id = %s", (tenant,))
    return int(found[0][0]) if found else 0


def growth_level(
    ctx: Context,
    app: Any,
    level: int,
    big: tuple[str, str],
    smalls: list[tuple[str, str]],
) -> dict[str, Any]:
    p = ctx.profile
    out: dict[str, Any] = {"level_events": level}
    missing_events = level - store_size(ctx.system.database_url)
    if missing_events > 0:
        customers = math.ceil(missing_events / 3)  # a customer + its email and phone records
        base = ctx.seq.take(customers)
        plan = growth_plan(base, customers, big[0], [t for t, _ in smalls], p.growth_big_share)
        started = time.monotonic()
        seeded = data.seed_customers(app, plan, ctx.tag)
        out["seed"] = {
            "customers": seeded.customers,
            "events": seeded.events,
            "seconds": round(seeded.seconds, 2),
            "events_per_s": round(seeded.events_per_s),
        }
        caught = ctx.wait_applied()
        total_s = time.monotonic() - started
        out["catch_up"] = {
            "after_seed_s": round(caught, 2),
            "customer_events_per_s": round(seeded.customers / total_s) if total_s else None,
        }
        out["settle_s"] = round(ctx.settle(), 2)
    out["events"] = count_events(ctx.system.database_url)
    out["big_tenant_customers"] = _tenant_rows(ctx, big[0])
    out["small_tenant_customers"] = _tenant_rows(ctx, smalls[0][0])
    out["database_bytes"] = ctx.sql("SELECT pg_database_size(current_database())")[0][0]

    out["reads"] = {}
    for label, (tenant, token) in (("one_big_tenant", big), ("one_small_tenant", smalls[0])):
        ids = ctx.ids_of(tenant, 500)
        kinds = read_kinds(ids, ctx.headers(tenant, token))
        measured = {}
        for name in (
            "by_id_cached",
            "page_cached",
            "by_id_uncached",
            "page_uncached",
            "phrase_uncached",
        ):
            items, cached = kinds[name]
            measured[name] = measure_read(
                ctx, items, cached, p.growth_read_connections, p.growth_read_duration_s
            )
        out["reads"][label] = measured
    out["deep_page"] = deep_pages(ctx, big[0], big[1], out["big_tenant_customers"])

    clients, seconds = p.growth_write_clients, p.growth_write_duration_s
    out["writes"] = {}
    for label, tenants in (("one_tenant", [big]), (f"{len(smalls)}_tenants", smalls)):
        req = ctx.customer_requests(tenants, clients, seconds, CUSTOMER_PATH)
        result = ctx.closed_loop(ctx.system.write_port, req, clients, seconds)
        out["writes"][label] = result | {"clients": clients}
    ctx.check_system()
    ctx.wait_applied()
    # the lag scenario's middle rate at this size: what the store's size does to it
    out["lag"] = _lag_run(ctx, p.growth_lag_rate, "customers", p.growth_lag_duration_s)
    ctx.check_system()
    ctx.wait_applied()
    out["replay"] = replay(ctx, app)
    return out


def growth(ctx: Context) -> dict[str, Any]:
    """The figures at each event-store size, with one big tenant (a share of every customer)
    and many small ones; also the replay figures (scenario 4) at each size."""
    p = ctx.profile
    big = ctx.tenant("big")
    smalls = [ctx.tenant(f"s{i:04d}") for i in range(p.growth_tenants)]
    out: dict[str, Any] = ctx.partial("growth")
    out |= {
        "tenants": 1 + len(smalls),
        "big_share": p.growth_big_share,
        # the Kafka partition its events go to (most of the seeded events)
        "big_partition": kafka.partition_of(big[0], int(ctx.system.settings().kafka_partitions)),
        "levels": [],
    }
    app = ctx.system.application(pool_size=2)
    try:
        for level in p.growth_levels:
            out["levels"].append(growth_level(ctx, app, level, big, smalls))
    finally:
        app.close()
    return out


SCENARIOS: dict[str, Scenario] = {
    "growth": growth,
    "writes": writes,
    "lag": lag,
    "reads": reads,
    "memory": memory,
}
