"""What every scenario shares: the running system, the load generators, tenants and tokens,
the sequence of unique customers, and a memory sampler of every process the bench started."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import redis

from beeoclock.embedded import free_port, spawn_kafka_broker, spawn_redis, wait_for_port
from bench import data, wrk
from bench.profiles import Profile
from bench.system import (
    ROOT,
    BenchError,
    Children,
    System,
    applied_everything,
    fresh_database,
    migrate,
    new_values,
    postgres_reachable,
    run_child,
    wait_until,
)

SYSTEM_PROCESSES = ("write-api", "read-api", "relay", "projector")


@dataclass
class Context:
    profile: Profile
    system: System
    workdir: Path
    generator: str
    notes: list[str] = field(default_factory=list)
    seq: data.Sequence = field(default_factory=data.Sequence)
    tag: str = field(default_factory=data.new_tag)
    servers: dict[str, Any] = field(default_factory=dict)
    memory: MemorySampler | None = None
    partials: dict[str, dict[str, Any]] = field(default_factory=dict)

    def partial(self, scenario: str) -> dict[str, Any]:
        """The scenario's results, filled as it goes: kept when it fails half way."""
        return self.partials.setdefault(scenario, {})

    # --- tenants ---------------------------------------------------------------------------

    def tenant(self, label: str) -> tuple[str, str]:
        tenant = f"{label}-{uuid.uuid4().hex[:8]}"
        return tenant, self.system.token([tenant])

    def headers(self, tenant: str, token: str, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}", "x-business-tenant-id": tenant, **extra}

    # --- load --------------------------------------------------------------------------------

    def closed_loop(
        self,
        port: int,
        requests: dict[str, Any],
        connections: int,
        duration_s: float,
        warmup_s: float | None = None,
    ) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": port,
            "connections": connections,
            "duration_s": duration_s,
            "warmup_s": self.profile.warmup_s if warmup_s is None else warmup_s,
            "requests": requests,
        }
        if self.generator == "wrk":
            return wrk.run(spec | {"threads": min(2, connections)}, self.workdir)
        spec["processes"] = 1 if connections <= 4 else self.profile.python_processes
        spec["latency_file"] = str(self.workdir / f"lat-{uuid.uuid4().hex[:8]}")
        return self.child_json("bench.httpload", spec, duration_s + spec["warmup_s"] + 60)

    def customer_requests(
        self, tenants: list[tuple[str, str]], connections: int, duration_s: float, path: str
    ) -> dict[str, Any]:
        """Unique customers to POST: a block of sequence numbers split between connections."""
        stride = int(max(duration_s + self.profile.warmup_s + 5, 5) * 20_000)
        base = self.seq.take(stride * max(connections, 2))
        return {
            "kind": "customer",
            "tenants": [list(t) for t in tenants],
            "tag": self.tag,
            "base": base,
            "stride": stride,
            "path": path,
        }

    def child_json(
        self, module: str, spec: dict[str, Any], timeout_s: float, env: dict[str, str] | None = None
    ) -> dict[str, Any]:
        path = self.workdir / f"{module.rsplit('.', 1)[-1]}-{uuid.uuid4().hex[:8]}.json"
        path.write_text(json.dumps(spec))
        log = self.workdir / "children.log"
        done = run_child(
            [sys.executable, "-m", module, str(path)], env or self.system.env(), timeout_s, log
        )
        lines = [x for x in (done.stdout or "").splitlines() if x.startswith("{")]
        if done.returncode != 0 or not lines:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
            msg = f"{module} failed ({done.returncode}):\n{tail}"
            raise BenchError(msg)
        result: dict[str, Any] = json.loads(lines[-1])
        return result

    # --- system ------------------------------------------------------------------------------

    def flush_redis(self) -> None:
        client = redis.Redis.from_url(self.system.redis_url)
        try:
            client.flushall()
        finally:
            client.close()

    def wait_applied(self, timeout_s: float | None = None) -> float:
        started = time.monotonic()
        wait_until(
            lambda: applied_everything(self.system.database_url),
            timeout_s or self.profile.catch_up_timeout_s,
            "the projector catching up with every write",
            poll_s=0.2,
        )
        return time.monotonic() - started

    def settle(self) -> float:
        """VACUUM ANALYZE the read models after a bulk load, and the positions every write and
        every projected batch update, the state autovacuum brings them to within a minute or
        two (planner statistics, a visibility map for index-only counts, no dead versions of a
        tenant's position row to step over): reads are measured at that steady state, not in
        the minute after a load. Seconds taken."""
        started = time.monotonic()
        with psycopg.connect(self.system.database_url, autocommit=True) as conn:
            conn.execute(
                "VACUUM (ANALYZE) customers, services, written_positions, applied_positions"
            )
        return time.monotonic() - started

    def check_system(self) -> None:
        self.system.children.check_alive(*SYSTEM_PROCESSES)

    def sql(self, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.system.database_url, autocommit=True) as conn:
            return list(conn.execute(query, params).fetchall())

    def ids_of(self, tenant: str, limit: int) -> list[str]:
        rows = self.sql(
            "SELECT id FROM customers WHERE tenant_id = %s ORDER BY id LIMIT %s", (tenant, limit)
        )
        return [str(r[0]) for r in rows]


class MemorySampler:
    """RSS of every process the bench started, sampled every second in a thread: the peak
    per process, and `snapshot()` for steady state."""

    def __init__(self, pids: dict[str, int]) -> None:
        import psutil

        self.procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.peak: dict[str, int] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def add(self, name: str, pid: int) -> None:
        import psutil

        with contextlib.suppress(psutil.Error):
            self.procs[name] = psutil.Process(pid)

    def _run(self) -> None:
        while not self.stop.wait(1.0):
            for name, rss in self.snapshot().items():
                self.peak[name] = max(self.peak.get(name, 0), rss)

    def snapshot(self) -> dict[str, int]:
        import psutil

        out = {}
        for name, proc in list(self.procs.items()):
            with contextlib.suppress(psutil.Error):
                out[name] = int(proc.memory_info().rss)
                # an API run with --workers: each worker is an API process of its own (the
                # supervisor's other children, such as multiprocessing's tracker, are not)
                workers = 0
                for child in sorted(proc.children(), key=lambda c: c.pid):
                    with contextlib.suppress(psutil.Error):
                        if "multiprocessing.spawn" in " ".join(child.cmdline()):
                            workers += 1
                            out[f"{name} worker {workers}"] = int(child.memory_info().rss)
        return out

    def __enter__(self) -> MemorySampler:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(5)


def _stop_popen(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@contextlib.contextmanager
def running_system(
    profile: Profile, postgres_url: str, workdir: Path, generator: str, log_level: str
) -> Iterator[Context]:
    """Servers, a fresh database and the system's processes for the block; everything is
    stopped (by pid) and the database dropped afterwards."""
    with contextlib.ExitStack() as stack:
        servers: dict[str, Any] = {}
        if postgres_reachable(postgres_url):
            servers["postgres"] = "server"
        else:
            from beeoclock.embedded import postgres_server

            folder = workdir / "pg"
            postgres_url = stack.enter_context(postgres_server(folder))
            servers["postgres"] = "embedded (the configured server was unreachable)"
        redis_port, kafka_port = free_port(), free_port()
        redis_proc = spawn_redis(redis_port)
        stack.callback(_stop_popen, redis_proc)
        kafka_proc = spawn_kafka_broker(kafka_port)
        stack.callback(_stop_popen, kafka_proc)
        wait_for_port(kafka_port)
        database_url = stack.enter_context(fresh_database(postgres_url))
        children = Children(workdir / "logs")
        stack.callback(children.stop_all)
        values = new_values(
            database_url, f"127.0.0.1:{kafka_port}", f"redis://127.0.0.1:{redis_port}/0", log_level
        )
        system = System(values, children, postgres_url)
        migrate(system, workdir / "logs" / "migrate.log")
        system.write_port = system.start_api("write-api")
        system.read_port = system.start_api("read-api")
        system.start_worker("relay")
        system.start_worker("projector")
        ctx = Context(profile, system, workdir, generator, servers=servers)
        ctx.servers |= {"redis_pid": redis_proc.pid, "kafka_pid": kafka_proc.pid}
        wait_until_projecting(ctx)
        pids = system.pids() | {"redis-server": redis_proc.pid, "tansu": kafka_proc.pid}
        ctx.memory = stack.enter_context(MemorySampler(pids))
        yield ctx


def wait_until_projecting(ctx: Context, timeout_s: float = 120.0) -> None:
    """Until a write is readable through the read API: the projector has joined its group."""
    tenant, token = ctx.tenant("probe")
    headers = ctx.headers(tenant, token)
    system = ctx.system
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=10) as client:
        created = client.post(
            f"http://127.0.0.1:{system.write_port}/api/v1/customer",
            json={"firstName": "Probe"},
            headers=headers,
        )
        if created.status_code != 201:
            msg = f"probe write answered {created.status_code}: {created.text[:300]}"
            raise BenchError(msg)
        path = f"/api/v1/customer/{created.json()['_id']}"
        while time.monotonic() < deadline:
            ctx.check_system()
            got = client.get(f"http://127.0.0.1:{system.read_port}{path}", headers=headers)
            if got.status_code == 200:
                return
            time.sleep(0.2)
    msg = f"the probe write was not readable within {timeout_s}s"
    raise BenchError(msg)


def choose_generator(requested: str, smoke: bool, notes: list[str]) -> str:
    if requested == "python" or (requested == "auto" and smoke):
        if smoke:
            notes.append("Smoke run: the pure-Python load generator (bench/httpload.py).")
        return "python"
    if wrk.available():
        return "wrk"
    if requested == "wrk":
        msg = "wrk is not installed (apt-get install -y wrk)"
        raise BenchError(msg)
    notes.append(
        "wrk is not installed: closed-loop load came from the pure-Python generator "
        "(bench/httpload.py), which saturates sooner; install wrk for the real figures."
    )
    return "python"


def redis_benchmark() -> str | None:
    return shutil.which("redis-benchmark")


def env_without_bench() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("BEEOCLOCK_")} | {
        "PYTHONPATH": str(ROOT)
    }
