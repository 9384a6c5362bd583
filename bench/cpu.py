"""Where the machine's CPU goes during a measuring window: the CPU time of each group of
processes (each system process with its workers, PostgreSQL's, the broker's, Redis's, the
load generator's) and how busy the machine was, from psutil, between two instants inside the
window. What bounds a rate that the cores can't keep up with is read off it."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

import psutil

Groups = Callable[[], dict[str, list[psutil.Process]]]


def _seconds(proc: psutil.Process) -> float | None:
    with contextlib.suppress(psutil.Error):
        times = proc.cpu_times()
        return float(times.user + times.system)
    return None


def busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy so far (every core, every process).
    Linux counts guest time in user and nice already; idle, iowait and steal (the hypervisor
    running someone else) are no work of this machine's."""
    times = psutil.cpu_times()
    left_out = ("idle", "iowait", "steal", "guest", "guest_nice")
    return float(sum(getattr(times, f) for f in times._fields if f not in left_out))


def _snapshot(groups: Groups) -> tuple[dict[str, dict[int, float]], float]:
    found: dict[str, dict[int, float]] = {}
    for name, procs in groups().items():
        found[name] = {p.pid: seconds for p in procs if (seconds := _seconds(p)) is not None}
    return found, busy_seconds()


def process_groups(named: dict[str, psutil.Process], generator: str) -> Groups:
    """`named` processes with their children, every `postgres` process, and the bench's
    children whose command line holds `generator`."""

    def groups() -> dict[str, list[psutil.Process]]:
        out: dict[str, list[psutil.Process]] = {}
        for name, proc in named.items():
            with contextlib.suppress(psutil.Error):
                out[name] = [proc, *proc.children(recursive=True)]
        out["postgres"] = [p for p in psutil.process_iter(["name"]) if p.info["name"] == "postgres"]
        mine = psutil.Process(os.getpid()).children(recursive=True)
        out["load generator"] = [p for p in mine if generator in " ".join(_cmdline(p))]
        return out

    return groups


def _cmdline(proc: psutil.Process) -> list[str]:
    with contextlib.suppress(psutil.Error):
        return list(proc.cmdline())
    return []


@contextlib.contextmanager
def cpu_window(groups: Groups, start_s: float, length_s: float) -> Iterator[dict[str, Any]]:
    """Measure from `start_s` after entering for `length_s` (in a thread, while the block
    runs); the dict it yields is filled when the window closes: `cores` used by each group
    and `busy` (the machine's share of all its cores), over `seconds`."""
    out: dict[str, Any] = {}
    stop = threading.Event()

    def measure() -> None:
        if stop.wait(start_s):
            return
        before, busy_before = _snapshot(groups)
        if stop.wait(length_s):
            return
        after, busy_after = _snapshot(groups)
        cores: dict[str, float] = {}
        for name, procs in after.items():
            earlier = before.get(name, {})
            used = sum(t - earlier.get(pid, 0.0) for pid, t in procs.items())
            cores[name] = round(used / length_s, 3)
        ncpu = psutil.cpu_count() or 1
        out.update(
            seconds=length_s,
            cpus=ncpu,
            cores=dict(sorted(cores.items(), key=lambda kv: -kv[1])),
            busy=round((busy_after - busy_before) / (length_s * ncpu), 3),
        )

    thread = threading.Thread(target=measure, name="cpu-window", daemon=True)
    thread.start()
    try:
        yield out
    finally:
        stop.set()
        thread.join()
