"""A test run ended by SIGTERM (`timeout`, an editor's stop button) stops the servers it
started, as Ctrl-C does: the session's fixtures tear down (tests/conftest.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[2]

CHILD_TEST = """
import os
import time
from pathlib import Path

import psutil


def test_holds_the_servers(servers):
    started = [p.pid for p in psutil.Process().children(recursive=True)]
    Path(os.environ["PIDS_FILE"]).write_text(" ".join(map(str, started)))
    time.sleep(120)
"""


def _alive(pids: list[int]) -> list[int]:
    alive = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
        except psutil.NoSuchProcess:
            pass
    return alive


def test_a_terminated_run_stops_the_servers_it_started(
    servers: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "test_child.py").write_text(textwrap.dedent(CHILD_TEST))
    pids_file = tmp_path / "pids"
    env = {k: v for k, v in os.environ.items() if not k.startswith("BEEOCLOCK_")}
    # the session's PostgreSQL; Redis and the broker are started by the run itself
    env |= {"BEEOCLOCK_DATABASE_URL": servers["postgres"], "PIDS_FILE": str(pids_file)}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    command += ["-p", "tests.conftest", "--rootdir", str(tmp_path), str(tmp_path)]
    run = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    started: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while not pids_file.exists() and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert pids_file.exists(), (run.stdout.read() if run.stdout else b"").decode()[-2000:]
        time.sleep(0.2)  # the file is written in one call; let it land
        started = [int(p) for p in pids_file.read_text().split()]
        assert len(_alive(started)) >= 2  # redis-server and tansu
        run.send_signal(signal.SIGTERM)
        run.wait(30)
        deadline = time.monotonic() + 10
        while _alive(started) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _alive(started) == []
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
        for pid in _alive(started):  # what a failed run left behind: stop it here
            psutil.Process(pid).kill()
