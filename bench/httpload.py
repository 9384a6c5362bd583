"""A closed-loop HTTP/1.1 load generator in pure Python (asyncio, raw keep-alive sockets,
uvloop when installed, several processes): the fallback when `wrk` is missing, and what the
smoke run uses. Each connection sends its next request as soon as the previous answer has
been read completely.

Run as `python -m bench.httpload SPEC.json`; prints one JSON object on stdout.
Spec: host, port, duration_s, warmup_s, connections, processes, and `requests`:
  {"kind": "cycle", "items": [[method, path, {headers}, body or null], ...]}
  {"kind": "customer", "tenants": [[tenant, token], ...], "tag": "...", "base": n, "stride": n}
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import sys
import time
from array import array
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import data
from bench.stats import summarize

RequestMaker = Callable[[], bytes]


def request_bytes(
    method: str, path: str, host: str, headers: dict[str, str], body: str | None
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    payload = body.encode() if body is not None else b""
    if body is not None:
        lines.append(f"Content-Length: {len(payload)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


def customer_request(
    host: str, tenant: str, token: str, tag: str, n: int, path: str = "/api/v1/customer"
) -> bytes:
    body = json.dumps(data.customer_body(tag, n), ensure_ascii=False)
    headers = {
        "Authorization": f"Bearer {token}",
        "x-business-tenant-id": tenant,
        "Content-Type": "application/json",
    }
    return request_bytes("POST", path, host, headers, body)


def make_requests(spec: dict[str, Any], worker: int) -> RequestMaker:
    host = f"{spec['host']}:{spec['port']}"
    req = spec["requests"]
    if req["kind"] == "cycle":
        items = [request_bytes(m, p, host, h, b) for m, p, h, b in req["items"]]
        state = {"i": worker * 7919}

        def next_cycle() -> bytes:
            state["i"] += 1
            return items[state["i"] % len(items)]

        return next_cycle
    tenants = req["tenants"]
    path = req.get("path", "/api/v1/customer")
    counter = {"n": req["base"] + worker * req["stride"]}

    def next_customer() -> bytes:
        n = counter["n"]
        counter["n"] = n + 1
        tenant, token = tenants[n % len(tenants)]
        return customer_request(host, tenant, token, req["tag"], n, path)

    return next_customer


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """(status, body, keep-alive) of one HTTP/1.1 response."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    lower = head.lower()
    body = b""
    i = lower.find(b"\r\ncontent-length:")
    if i >= 0:
        j = lower.find(b"\r\n", i + 2)
        length = int(head[i + 17 : j])
        body = await reader.readexactly(length) if length else b""
    elif b"transfer-encoding: chunked" in lower:
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                break
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
        body = b"".join(parts)
    return status, body, b"connection: close" not in lower


class Recorder:
    def __init__(self, start: float, end: float) -> None:
        self.start, self.end = start, end
        self.latencies = array("f")
        self.statuses: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()

    def record(self, sent: float, done: float, status: int) -> None:
        if self.start <= done <= self.end:
            self.latencies.append((done - sent) * 1000)
            self.statuses[str(status)] += 1


async def _connection(
    host: str, port: int, make: RequestMaker, rec: Recorder, stop_at: float
) -> None:
    reader = writer = None
    while time.perf_counter() < stop_at:
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(host, port)
            assert reader is not None
            payload = make()
            sent = time.perf_counter()
            writer.write(payload)
            status, _, keep = await read_response(reader)
            rec.record(sent, time.perf_counter(), status)
            if not keep:
                writer.close()
                reader = writer = None
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            rec.errors[type(exc).__name__] += 1
            if writer is not None:
                writer.close()
            reader = writer = None
            await asyncio.sleep(0.01)
    if writer is not None:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def _worker_main(spec: dict[str, Any], worker: int, connections: int) -> Recorder:
    make = make_requests(spec, worker)
    now = time.perf_counter()
    start = now + spec.get("warmup_s", 0.0)
    rec = Recorder(start, start + spec["duration_s"])
    tasks = [
        _connection(spec["host"], spec["port"], make, rec, rec.end) for _ in range(connections)
    ]
    await asyncio.gather(*tasks)
    return rec


def _install_uvloop() -> None:
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def _worker(spec: dict[str, Any], worker: int, connections: int, out: str, queue: Any) -> None:
    _install_uvloop()
    rec = asyncio.run(_worker_main(spec, worker, connections))
    Path(out).write_bytes(rec.latencies.tobytes())
    queue.put((worker, dict(rec.statuses), dict(rec.errors)))


def run(spec: dict[str, Any]) -> dict[str, Any]:
    processes = max(1, min(spec.get("processes", 1), spec["connections"]))
    share = [spec["connections"] // processes] * processes
    for i in range(spec["connections"] % processes):
        share[i] += 1
    base = Path(spec["latency_file"])
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    procs = [
        ctx.Process(target=_worker, args=(spec, i, share[i], f"{base}.{i}", queue))
        for i in range(processes)
    ]
    for p in procs:
        p.start()
    statuses: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    timeout = spec["duration_s"] + spec.get("warmup_s", 0) + 30
    for _ in procs:
        _, st, er = queue.get(timeout=timeout)
        statuses.update(st)
        errors.update(er)
    latencies: list[float] = []
    for i, p in enumerate(procs):
        p.join(10)
        if p.is_alive():
            p.kill()
        part = Path(f"{base}.{i}")
        arr = array("f")
        arr.frombytes(part.read_bytes())
        latencies.extend(arr)
        part.unlink()
    requests = sum(statuses.values())
    ok = sum(c for s, c in statuses.items() if s.startswith("2"))
    return {
        "generator": "python",
        "connections": spec["connections"],
        "duration_s": spec["duration_s"],
        "requests": requests,
        "rps": round(requests / spec["duration_s"], 1),
        "ok_rps": round(ok / spec["duration_s"], 1),
        "statuses": dict(sorted(statuses.items())),
        "errors": dict(errors),
        **summarize(latencies),
    }


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    print(json.dumps(run(spec)))


if __name__ == "__main__":
    main()
