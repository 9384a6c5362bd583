"""The one-command development stack: embedded servers for every URL not configured, the
schema, then the API (write + read on one port), the relay and the projector as child
processes, restarted if they crash. Ctrl-C or SIGTERM stops the children, then the servers."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from beeoclock import embedded
from beeoclock.auth import mint_token
from beeoclock.permissions import ALL_PERMISSIONS
from beeoclock.settings import Settings

_CHILDREN = {
    "api": ["api", "--host", "127.0.0.1"],
    "relay": ["relay"],
    "projector": ["projector"],
}


#: The panel's origin under Angular's development server (`ng serve`), allowed by `dev` unless
#: BEEOCLOCK_CORS_ORIGINS is set (set empty: none).
DEV_CORS_ORIGINS = "http://localhost:4200"


def dev_cors_origins(settings: Settings) -> str:
    """The origins the development stack allows: the environment's when it sets them (even
    to nothing), else the panel's development server's."""
    return (
        settings.cors_origins if "cors_origins" in settings.model_fields_set else DEV_CORS_ORIGINS
    )


class _Stop(Exception):
    pass


def run_dev_stack(settings: Settings, *, port: int, env_file: Path) -> None:
    def on_signal(*_: object) -> None:
        raise _Stop

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    children: dict[str, subprocess.Popen[bytes]] = {}
    try:
        with contextlib.ExitStack() as stack:
            values = {
                "BEEOCLOCK_DATABASE_URL": settings.database_url,
                "BEEOCLOCK_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
                "BEEOCLOCK_REDIS_URL": settings.redis_url,
                "BEEOCLOCK_JWT_SECRET": settings.jwt_secret or secrets.token_urlsafe(32),
                "BEEOCLOCK_MASTER_KEY": settings.master_key
                or base64.b64encode(secrets.token_bytes(32)).decode(),
                "BEEOCLOCK_CORS_ORIGINS": dev_cors_origins(settings),
            }
            if not settings.database_url:
                data = Path(tempfile.mkdtemp(prefix="beeoclock-pg-"))
                values["BEEOCLOCK_DATABASE_URL"] = stack.enter_context(
                    embedded.postgres_server(data)
                )
                _say("started embedded PostgreSQL")
            if not settings.kafka_bootstrap_servers:
                values["BEEOCLOCK_KAFKA_BOOTSTRAP_SERVERS"] = stack.enter_context(
                    embedded.kafka_broker()
                )
                _say(f"started tansu broker on {values['BEEOCLOCK_KAFKA_BOOTSTRAP_SERVERS']}")
            if not settings.redis_url:
                values["BEEOCLOCK_REDIS_URL"] = stack.enter_context(embedded.redis_server())
                _say(f"started embedded Redis on {values['BEEOCLOCK_REDIS_URL']}")
            env = {**os.environ, **values, "PYTHONUNBUFFERED": "1"}

            subprocess.run([sys.executable, "-m", "beeoclock.cli", "migrate"], env=env, check=True)
            env_file.parent.mkdir(parents=True, exist_ok=True)
            env_file.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
            env_file.chmod(0o600)
            stack.callback(env_file.unlink, missing_ok=True)

            for name in _CHILDREN:
                children[name] = _spawn(name, port, env)
            embedded.wait_for_port(port, 60)
            _probe(port, values["BEEOCLOCK_JWT_SECRET"])
            token = mint_token(
                values["BEEOCLOCK_JWT_SECRET"],
                "dev-user",
                {"dev-tenant": list(ALL_PERMISSIONS)},
                12 * 3600,
            )
            _say(f"ready: http://127.0.0.1:{port}  (docs at /docs)")
            if values["BEEOCLOCK_CORS_ORIGINS"]:
                origins = values["BEEOCLOCK_CORS_ORIGINS"]
                _say(f"browser pages from {origins} may call it (BEEOCLOCK_CORS_ORIGINS)")
            _say(f"development token for tenant dev-tenant (12 h):\n{token}")
            _supervise(children, port, env)
    except _Stop:
        pass
    finally:
        _stop_all(children)
        _say("stopped")


def _spawn(name: str, port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-m", "beeoclock.cli", *_CHILDREN[name]]
    if name == "api":
        args += ["--port", str(port)]
    return subprocess.Popen(args, env=env, start_new_session=True)


def _supervise(
    children: dict[str, subprocess.Popen[bytes]], port: int, env: dict[str, str]
) -> None:
    while True:
        time.sleep(0.5)
        for name, proc in list(children.items()):
            if proc.poll() is not None:
                _say(f"{name} exited with {proc.returncode}; restarting it")
                children[name] = _spawn(name, port, env)


def _stop_all(children: dict[str, subprocess.Popen[bytes]]) -> None:
    for proc in children.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 15
    for proc in children.values():
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _probe(port: int, secret: str, timeout_s: float = 90) -> None:
    """Ready means a write has travelled the whole pipeline: a customer of the `dev-probe`
    tenant is created and read back (the development database is thrown away on exit)."""
    token = mint_token(secret, "dev-stack", {"dev-probe": ["CREATE_CUSTOMER", "READ_CUSTOMER"]})
    headers = {"Authorization": f"Bearer {token}", "x-business-tenant-id": "dev-probe"}
    base = f"http://127.0.0.1:{port}/api/v1/customer"
    body = json.dumps({"firstName": "Probe"}).encode()
    create = urllib.request.Request(
        base, body, {**headers, "content-type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(create, timeout=30) as response:  # noqa: S310 - our own URL
        customer_id = json.loads(response.read())["_id"]
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            read = urllib.request.Request(f"{base}/{customer_id}", headers=headers)  # noqa: S310
            with urllib.request.urlopen(read, timeout=30):  # noqa: S310
                return
        except urllib.error.HTTPError as exc:
            if exc.code != 503 or time.monotonic() > deadline:
                raise


def _say(message: str) -> None:
    print(f"beeoclock dev: {message}", file=sys.stderr, flush=True)
