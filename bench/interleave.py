"""Interleaved A/B runs of the write path: is a change faster, on a machine whose speed
drifts? Two source trees (say `git worktree add /tmp/before HEAD~3` and this checkout), each
started in turn as the bench starts the system (separate processes, a fresh database, a
Redis and a broker of its own), in alternating order (A B, then B A, ...); every run POSTs
new customers with wrk at `--clients` for `--windows` windows of `--seconds`.

    python -m bench.interleave TREE_A TREE_B [--rounds 2] [--clients 32] [--seconds 15]
                                             [--windows 2] [--api-workers 1] [--postgres URL]

Prints one line per run and, last, a JSON object: per tree, every window's creates/s and
p99, and their means. Each run's system is the tree's own code (its folder first on the
module path); the load generator and the servers are the same for both. Needs wrk
(bench/install_tools.sh)."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.system import DEFAULT_POSTGRES

MARK = "INTERLEAVE_JSON "

# run inside a tree (`python -c`, the tree's folder first on the module path): only what
# every tree with a bench/ of this shape has
ONE_RUN = """
import json, sys
from pathlib import Path
from bench.context import running_system
from bench.profiles import FULL
from bench.scenarios import CUSTOMER_PATH

workdir, clients = Path(sys.argv[1]), int(sys.argv[2])
seconds, windows, server = float(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
with running_system(FULL, server, workdir, "wrk", "WARNING") as ctx:
    found = []
    for _ in range(windows):
        tenant = ctx.tenant("ab")
        requests = ctx.customer_requests([tenant], clients, seconds, CUSTOMER_PATH)
        result = ctx.closed_loop(ctx.system.write_port, requests, clients, seconds)
        found.append({k: result[k] for k in ("ok_rps", "p50_ms", "p99_ms")})
print("MARK" + json.dumps(found), flush=True)
""".replace("MARK", MARK)


def one_run(tree: Path, args: argparse.Namespace) -> list[dict[str, float]]:
    env = os.environ | {"PYTHONPATH": str(tree), "BENCH_API_WORKERS": str(args.api_workers)}
    with tempfile.TemporaryDirectory(prefix="beeoclock-interleave-") as workdir:
        command = [sys.executable, "-c", ONE_RUN, workdir, str(args.clients)]
        command += [str(args.seconds), str(args.windows), args.postgres]
        done = subprocess.run(
            command,
            cwd=tree,
            env=env,
            capture_output=True,
            text=True,
            timeout=120 + args.windows * (args.seconds + 60),
            check=False,
        )
    for line in done.stdout.splitlines():
        if line.startswith(MARK):
            found: list[dict[str, float]] = json.loads(line.removeprefix(MARK))
            return found
    msg = f"the run in {tree} failed ({done.returncode}): {done.stderr[-2000:]}"
    raise RuntimeError(msg)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("trees", nargs=2, type=Path, help="the two source trees, A and B")
    parser.add_argument(
        "--rounds", type=int, default=2, help="runs of each tree; the order alternates: A B, B A"
    )
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--windows", type=int, default=2)
    parser.add_argument("--api-workers", type=int, default=1)
    parser.add_argument(
        "--postgres",
        default=os.environ.get("BENCH_POSTGRES_URL", DEFAULT_POSTGRES),
        help="PostgreSQL server URL, as for `python -m bench`",
    )
    args = parser.parse_args()
    trees = [tree.resolve() for tree in args.trees]
    windows: dict[str, list[dict[str, float]]] = {str(tree): [] for tree in trees}
    for round_ in range(args.rounds):
        for tree in trees if round_ % 2 == 0 else trees[::-1]:
            found = one_run(tree, args)
            windows[str(tree)] += found
            shown = ", ".join(f"{w['ok_rps']:.0f}/s p99 {w['p99_ms']:.1f} ms" for w in found)
            print(f"{tree}: {shown}", flush=True)
    summary: dict[str, Any] = {
        "clients": args.clients,
        "seconds": args.seconds,
        "api_workers": args.api_workers,
        "trees": {
            tree: {
                "windows": found,
                "mean_ok_rps": round(statistics.mean(w["ok_rps"] for w in found), 1),
                "mean_p99_ms": round(statistics.mean(w["p99_ms"] for w in found), 1),
            }
            for tree, found in windows.items()
        },
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
