"""`python -m bench [--smoke]`: start the system, run every scenario (each bounded in time,
an error in one does not stop the others), write RESULTS.md, results.json and plots, stop
everything. Exits non-zero when a scenario failed."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import shlex
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import profiles
from bench.context import Context, choose_generator, running_system
from bench.scenarios import SCENARIOS
from bench.system import DEFAULT_POSTGRES

HERE = Path(__file__).resolve().parent


class ScenarioTimeout(Exception):
    """A scenario ran past its time bound."""


class Stopped(BaseException):
    """SIGTERM: stop everything and clean up."""


@contextlib.contextmanager
def time_bound(seconds: float) -> Iterator[None]:
    def expire(*_: object) -> None:
        msg = f"stopped after its time bound of {seconds:.0f}s"
        raise ScenarioTimeout(msg)

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _levels(text: str | None) -> tuple[int, ...] | None:
    if not text:
        return None
    return tuple(int(float(x)) for x in text.split(",") if x.strip())


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="every scenario at a tiny size")
    parser.add_argument(
        "--out",
        type=Path,
        help="where RESULTS.md, results.json and plots/ go (default: bench/ for a full run, "
        "a temporary folder for --smoke)",
    )
    parser.add_argument(
        "--postgres",
        default=os.environ.get("BENCH_POSTGRES_URL", DEFAULT_POSTGRES),
        help="PostgreSQL server URL; a fresh database is made there and dropped at the end",
    )
    parser.add_argument(
        "--only", help=f"comma-separated scenarios to run, of: {', '.join(SCENARIOS)}"
    )
    parser.add_argument(
        "--generator", choices=("auto", "wrk", "python"), default="auto", help="load generator"
    )
    parser.add_argument("--duration", type=float, help="seconds of every measuring window")
    parser.add_argument(
        "--api-workers",
        type=int,
        default=int(os.environ.get("BENCH_API_WORKERS", "2")),
        help="worker processes of each API (`beeoclock write-api --workers N`; default 2, "
        "one per core)",
    )
    parser.add_argument("--levels", help="growth sizes in events, e.g. 10000,100000")
    parser.add_argument("--scenario-timeout", type=float, help="seconds each scenario may take")
    parser.add_argument("--log-level", default="INFO", help="BEEOCLOCK_LOG_LEVEL of the system")
    return parser.parse_args(argv)


def run_scenarios(ctx: Context, names: list[str], results: dict[str, Any]) -> None:
    for name in names:
        started = time.monotonic()
        print(f"[bench] {name} ...", flush=True)
        try:
            with time_bound(ctx.profile.scenario_timeout_s):
                results["scenarios"][name] = SCENARIOS[name](ctx)
            status = "ok"
        except Exception as exc:
            status = "error"
            results["errors"][name] = "".join(traceback.format_exception(exc))[-4000:]
            if ctx.partials.get(name):
                results["scenarios"][name] = ctx.partials[name]  # what it measured before
            print(f"[bench] {name} FAILED: {exc}", flush=True)
        seconds = time.monotonic() - started
        results["timings"][name] = {"status": status, "seconds": round(seconds, 1)}
        print(f"[bench] {name} {status} in {seconds:.1f}s", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    profile = profiles.SMOKE if args.smoke else profiles.FULL
    profile = profiles.with_overrides(profile, args.duration, _levels(args.levels))
    if args.scenario_timeout:
        profile = dataclasses.replace(profile, scenario_timeout_s=args.scenario_timeout)
    names = [n.strip() for n in (args.only or ",".join(SCENARIOS)).split(",") if n.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        print(f"unknown scenarios: {unknown}; known: {list(SCENARIOS)}", file=sys.stderr)
        return 2
    out = args.out or (Path(tempfile.mkdtemp(prefix="bench-smoke-")) if args.smoke else HERE)
    out.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="beeoclock-bench-"))
    notes: list[str] = []
    command = "python -m bench " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    results: dict[str, Any] = {
        "profile": profile.name,
        "command": os.environ.get("BENCH_COMMAND", command.strip()),
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "scenarios": {},
        "errors": {},
        "timings": {},
        "notes": notes,
        "workdir": str(workdir),
    }

    def stop(*_: object) -> None:
        raise Stopped

    signal.signal(signal.SIGTERM, stop)
    os.environ["BENCH_API_WORKERS"] = str(max(1, args.api_workers))
    notes.append(
        f"Each API runs {max(1, args.api_workers)} worker process(es) "
        f"(`beeoclock write-api|read-api --workers {max(1, args.api_workers)}`)."
    )
    started = time.monotonic()
    print(f"[bench] {profile.name} run; logs in {workdir}", flush=True)
    try:
        generator = choose_generator(args.generator, args.smoke, notes)
        results["generator"] = generator
        with running_system(profile, args.postgres, workdir, generator, args.log_level) as ctx:
            ctx.notes.extend(n for n in notes if n not in ctx.notes)
            results["servers"] = ctx.servers
            from bench import report

            results["machine"] = report.machine(ctx)
            run_scenarios(ctx, names, results)
            notes[:] = ctx.notes
    except (Exception, Stopped, KeyboardInterrupt) as exc:
        results["errors"]["system"] = "".join(traceback.format_exception(exc))[-4000:]
        print(f"[bench] the run stopped: {exc!r}", flush=True)
    results["seconds"] = round(time.monotonic() - started, 1)
    from bench import report

    unexpected = report.problems(results)
    if unexpected and args.smoke:
        results["errors"]["answers"] = "\n".join(unexpected)
    elif unexpected:
        notes.extend(f"Unexpected: {x}" for x in unexpected)

    report.write(results, out)
    print(f"[bench] done in {results['seconds']:.0f}s; results in {out}", flush=True)
    for name, error in results["errors"].items():
        print(f"[bench] error in {name}:\n{error}", file=sys.stderr)
    return 1 if results["errors"] else 0
