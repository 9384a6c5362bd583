"""`beeoclock`: one entry point, one subcommand per process or operator task."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from beeoclock.settings import Settings, SettingsError, load_settings

ALL_PERMISSIONS = [
    "READ_CUSTOMER",
    "CREATE_CUSTOMER",
    "EDIT_CUSTOMER",
    "DELETE_CUSTOMER",
    "READ_SERVICE",
    "CREATE_SERVICE",
    "EDIT_SERVICE",
    "DELETE_SERVICE",
    "MANAGE_SERVICE_MEDIA",
    "READ_AUDIT",
]
DEV_ENV_FILE = Path(".beeoclock") / "dev.env"


def _serve(settings: Settings, args: argparse.Namespace, *, write: bool, read: bool) -> None:
    import uvicorn

    from beeoclock.app import create_app

    app = create_app(settings, write=write, read=read)
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=10,
    )


def _run_worker(settings: Settings, make: Callable[[Settings], object]) -> None:
    settings.require("database_url", "kafka_bootstrap_servers", "redis_url")
    worker = make(settings)

    def stop(*_: object) -> None:
        worker.stop()  # type: ignore[attr-defined]

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    worker.run()  # type: ignore[attr-defined]


def cmd_relay(settings: Settings, _: argparse.Namespace) -> None:
    from workers.relay import Relay

    _run_worker(settings, Relay)


def cmd_projector(settings: Settings, _: argparse.Namespace) -> None:
    from workers.projector import Projector

    _run_worker(settings, Projector)


def cmd_migrate(settings: Settings, _: argparse.Namespace) -> None:
    from beeoclock.migrations import migrate

    settings.require("database_url")
    applied = migrate(settings)
    print(f"applied: {', '.join(applied)}" if applied else "schema is up to date")


def cmd_token(settings: Settings, args: argparse.Namespace) -> None:
    from beeoclock.auth import mint_token

    secret = settings.jwt_secret or _dev_env().get("BEEOCLOCK_JWT_SECRET", "")
    if not secret:
        raise SettingsError(
            "missing settings: BEEOCLOCK_JWT_SECRET (or run `beeoclock dev` in this folder)"
        )
    permissions = (
        ALL_PERMISSIONS
        if args.permissions == "all"
        else [p.strip() for p in args.permissions.split(",") if p.strip()]
    )
    tenants = dict.fromkeys(args.tenant, permissions)
    print(mint_token(secret, args.sub, tenants, args.ttl))


def _dev_env() -> dict[str, str]:
    if not DEV_ENV_FILE.exists():
        return {}
    pairs = (line.split("=", 1) for line in DEV_ENV_FILE.read_text().splitlines() if "=" in line)
    return dict(pairs)


def cmd_dev(settings: Settings, args: argparse.Namespace) -> None:
    from beeoclock.devstack import run_dev_stack

    run_dev_stack(settings, port=args.port, env_file=DEV_ENV_FILE)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="beeoclock",
        description="Bee O'clock panel service: event-sourced customers and services.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    dev = sub.add_parser(
        "dev",
        help="run the whole stack on one port (embedded servers for every URL not configured)",
    )
    dev.add_argument("--port", type=int, default=8000)
    dev.set_defaults(func=cmd_dev)

    for name, helptext, write, read in (
        ("api", "serve the write and the read API on one port", True, True),
        ("write-api", "serve the write API", True, False),
        ("read-api", "serve the read API", False, True),
    ):
        api = sub.add_parser(name, help=helptext)
        api.add_argument("--host", default="127.0.0.1")
        api.add_argument("--port", type=int, default=8000)
        api.set_defaults(func=lambda s, a, w=write, r=read: _serve(s, a, write=w, read=r))

    sub.add_parser("relay", help="publish the event store's notifications to Kafka").set_defaults(
        func=cmd_relay
    )
    sub.add_parser("projector", help="apply Kafka events to the read models").set_defaults(
        func=cmd_projector
    )
    sub.add_parser("migrate", help="create or upgrade the database schema").set_defaults(
        func=cmd_migrate
    )

    token = sub.add_parser("token", help="print a development JWT")
    token.add_argument(
        "--tenant", action="append", required=True, help="tenant id granted (repeatable)"
    )
    token.add_argument(
        "--permissions", default="all", help="comma-separated permissions, or 'all' (default)"
    )
    token.add_argument("--sub", default="dev-user", help="the token subject (user id)")
    token.add_argument("--ttl", type=int, default=3600, help="seconds until it expires")
    token.set_defaults(func=cmd_token)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    from beeoclock import logs

    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
        logs.configure(settings.log_level)
        args.func(settings, args)
    except SettingsError as exc:
        print(f"beeoclock: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
