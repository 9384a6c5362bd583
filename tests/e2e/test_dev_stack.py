"""`beeoclock dev`: one command brings the whole system up on one port, and Ctrl-C or SIGTERM
stops every child process and embedded server."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest

from beeoclock.embedded import free_port

pytestmark = pytest.mark.slow


def _lines(stream: object, out: queue.Queue[str]) -> None:
    for raw in iter(stream.readline, b""):  # type: ignore[attr-defined]
        out.put(raw.decode(errors="replace"))


def _processes_using(folder: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if any(str(folder) in part for part in proc.info["cmdline"] or ()):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "ctrl-c"])
def test_dev_serves_the_walkthrough_and_stops_everything(
    tmp_path: Path, stop_signal: signal.Signals
) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BEEOCLOCK_")}
    env["TMPDIR"] = str(tmp_path)  # the embedded PostgreSQL's data folder goes here
    dev = subprocess.Popen(
        [sys.executable, "-m", "beeoclock.cli", "dev", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    output: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_lines, args=(dev.stdout, output), daemon=True).start()
    try:
        deadline = time.monotonic() + 120
        seen = []
        while not any("ready: http://127.0.0.1" in line for line in seen):
            assert time.monotonic() < deadline, "".join(seen[-30:])
            assert dev.poll() is None, "".join(seen[-30:])
            try:
                seen.append(output.get(timeout=1))
            except queue.Empty:
                continue
        descendants = psutil.Process(dev.pid).children(recursive=True)
        assert len(descendants) >= 5  # api, relay, projector, broker, redis (+ migrate done)
        assert _processes_using(tmp_path), "the embedded PostgreSQL runs from the temp folder"

        token = subprocess.run(
            [sys.executable, "-m", "beeoclock.cli", "token", "--tenant", "dev-tenant"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        headers = {"Authorization": f"Bearer {token}", "x-business-tenant-id": "dev-tenant"}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=10) as http:
            created = http.post("/api/v1/customer", json={"firstName": "Anna"})
            assert created.status_code == 201, created.text
            customer_id = created.json()["_id"]
            # "ready" means the whole pipeline works: read-your-writes holds at once
            fetched = http.get(f"/api/v1/customer/{customer_id}")
            assert fetched.status_code == 200, fetched.text
            assert http.get("/readyz").json()["status"] == "ok"
            # the panel under `ng serve` may call it from the browser
            panel = "http://localhost:4200"
            asked = http.options(
                "/api/v1/customer",
                headers={
                    "Origin": panel,
                    "Access-Control-Request-Method": "POST",
                    "Access-Control-Request-Headers": "authorization,content-type",
                },
            )
            assert asked.status_code == 200, asked.text
            assert asked.headers["access-control-allow-origin"] == panel
            listed = http.get(f"/api/v1/customer/{customer_id}", headers={"Origin": panel})
            assert listed.headers["access-control-allow-origin"] == panel
            assert "etag" in listed.headers["access-control-expose-headers"].lower()
    finally:
        dev.send_signal(stop_signal)
        try:
            code = dev.wait(60)
        finally:
            if dev.poll() is None:
                dev.kill()
    assert code == 0
    _, alive = psutil.wait_procs(descendants, timeout=10)
    assert not alive, [p.pid for p in alive]
    time.sleep(0.5)
    assert not _processes_using(tmp_path)
    assert not (tmp_path / ".beeoclock" / "dev.env").exists()


def test_an_invalid_setting_stops_a_process_with_a_clear_message() -> None:
    env = {**os.environ, "BEEOCLOCK_JWT_SECRET": "short", "BEEOCLOCK_DATABASE_URL": ""}
    result = subprocess.run(
        [sys.executable, "-m", "beeoclock.cli", "migrate"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert "jwt_secret" in result.stderr
    assert "at least 32 characters" in result.stderr
    env = {k: v for k, v in os.environ.items() if not k.startswith("BEEOCLOCK_")}
    result = subprocess.run(
        [sys.executable, "-m", "beeoclock.cli", "relay"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert "BEEOCLOCK_DATABASE_URL" in result.stderr
