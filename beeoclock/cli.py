"""`beeoclock`: one entry point, one subcommand per process or operator task."""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import os
import signal
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

from beeoclock.permissions import ALL_PERMISSIONS
from beeoclock.settings import Settings, SettingsError, load_settings

if TYPE_CHECKING:
    import psycopg
    import redis

    from commands.application import PanelApplication

DEV_ENV_FILE = Path(".beeoclock") / "dev.env"

#: Exit statuses, the same for every command (a monitoring script tells "damaged" from "the
#: check did not run" by them); EXIT_STATUS says what each means, in --help and the README.
EXIT_DAMAGE = 1
EXIT_USAGE = 2
EXIT_FAILED = 3
EXIT_NOT_FOUND = 4
EXIT_INTERRUPTED = 130
EXIT_STATUS = """\
exit status:
  0    done (replay --check: the read models equal a rebuild)
  1    replay --check found damage (rows missing, extra or different), and nothing else
  2    invalid arguments or settings: nothing was done
  3    could not run or complete: database unknown or unreachable, wrong master key,
       another replay of the same read model running, a lock not granted in time, an
       output file that can't be written, an unexpected error (with its traceback)
  4    not found: the tenant or customer named has no events
  130  interrupted (Ctrl-C)
  141  the reader of its output went away (`... | head`): ended by SIGPIPE, quietly
"""
#: how long an operator tool waits for the database to answer (the event store's connection
#: pool would wait 30 s before it says it can't connect)
CONNECT_TIMEOUT_S = 10


class CommandFailed(Exception):
    """The command stops: one line for the operator, and the exit status that says why."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def _serve(settings: Settings, args: argparse.Namespace, *, write: bool, read: bool) -> None:
    import uvicorn

    from beeoclock.app import create_app

    options: dict[str, Any] = {
        "host": args.host,
        "port": args.port,
        "log_level": "warning",
        "access_log": False,
        "timeout_graceful_shutdown": 10,
    }
    if args.workers > 1:  # worker processes: each builds its app from the environment
        factory = {(True, True): "api", (True, False): "write_api", (False, True): "read_api"}
        uvicorn.run(
            f"beeoclock.asgi:{factory[(write, read)]}",
            factory=True,
            workers=args.workers,
            **options,
        )
    else:
        uvicorn.run(create_app(settings, write=write, read=read), **options)


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

    settings.require("master_key")  # it opens personal data to project it
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
        list(ALL_PERMISSIONS)
        if args.permissions == "all"
        else [p.strip() for p in args.permissions.split(",") if p.strip()]
    )
    tenants = dict.fromkeys(args.tenant, permissions)
    print(mint_token(secret, args.sub, tenants, args.ttl))


def _operator_settings(settings: Settings) -> Settings:
    """Settings for operator tools: the environment's, else those of the `dev` stack
    running in this folder (.beeoclock/dev.env)."""
    if settings.database_url:
        return settings
    values = {k.removeprefix("BEEOCLOCK_").lower(): v for k, v in _dev_env().items()}
    return settings.model_copy(
        update={k: v for k, v in values.items() if k in Settings.model_fields}
    )


def _instant(value: str) -> datetime:
    from events.timefmt import parse_iso

    try:
        return parse_iso(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an ISO-8601 date-time") from None


def _positive(value: str) -> int:
    """A whole number of at least 1 (an argparse type: anything else is a usage error)."""
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number of at least 1")
    return number


def _port(value: str) -> int:
    number = _positive(value)
    if number > 65535:
        raise argparse.ArgumentTypeError(f"{value!r} is not a port (1 to 65535)")
    return number


def _tenant_id(value: str) -> str:
    """A tenant id as the API takes it (an argparse type): "" would mean every tenant, and
    "t:1" a prefix of other tenants' streams."""
    from beeoclock.auth import TENANT_ID

    if not TENANT_ID.fullmatch(value):
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a tenant id (1 to 64 letters, digits, '-' or '_')"
        )
    return value


def _entity_id(value: str) -> str:
    """A customer or service id as the API takes it (an argparse type)."""
    from beeoclock.ids import ENTITY_ID

    if not ENTITY_ID.fullmatch(value):
        raise argparse.ArgumentTypeError(
            f"{value!r} is not an id (1 to 64 letters, digits, '-' or '_')"
        )
    return value


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


@contextlib.contextmanager
def _database(settings: Settings) -> Iterator[psycopg.Connection[Any]]:
    """A connection to the database, made before any work: a wrong database name or a server
    that is down is said in seconds. The master key is checked on it too: a wrong one would
    fail halfway through the work (or seal new data with keys nobody could open)."""
    import psycopg

    from events.pii import Vault

    try:
        conn = psycopg.connect(settings.database_url, connect_timeout=CONNECT_TIMEOUT_S)
    except psycopg.OperationalError as exc:
        raise CommandFailed(f"cannot connect to the database: {_first_line(exc)}") from None
    with conn:
        row = conn.execute(
            "SELECT tenant_id, subject_id FROM pii_keys WHERE wrapped IS NOT NULL LIMIT 1"
        ).fetchone()
        if row is not None:  # raises VaultError when the master key does not unwrap it
            Vault(settings.master_key_bytes, conn.cursor).key((row[0], row[1]))
        conn.commit()
        yield conn


@contextlib.contextmanager
def _output(
    path: str | None, *, force: bool = False, newline: str | None = None
) -> Iterator[TextIO]:
    """Where an export goes: standard output, or a file readable by its owner only (an export
    holds personal data). It is written beside the target under a temporary name and given
    the target's name only once complete, so a failed export leaves no file and no half of
    one, and never touches an earlier file; an existing one is replaced only when `force`d
    (the name itself is replaced: a symlink there, not what it points to). A folder that
    can't be written stops the export before it is made."""
    if not path:
        yield sys.stdout
        return
    if os.path.lexists(path) and not force:
        raise CommandFailed(f"{path} exists (--force replaces it)")
    folder = os.path.dirname(path) or "."
    try:  # mkstemp: mode 0600, whatever the umask
        fd, temporary = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", dir=folder)
    except OSError as exc:
        raise CommandFailed(f"cannot write {path}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "w", newline=newline) as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        if force:
            os.replace(temporary, path)
        else:  # a link fails where a file appeared meanwhile: never one replaced unasked
            try:
                os.link(temporary, path)
            except FileExistsError:
                raise CommandFailed(f"{path} exists (--force replaces it)") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)


#: the streams of the event store that belong to a tenant's customers and services
TENANT_STREAMS = ("customer", "service")


def _has_events(conn: psycopg.Connection[Any], tenant: str, entity: str | None = None) -> bool:
    """Whether the event store holds an event of the tenant (or of one entity of it)."""
    if entity is not None:
        ids = [f"{stream}:{tenant}:{entity}" for stream in TENANT_STREAMS]
        row = conn.execute(
            "SELECT EXISTS (SELECT 1 FROM panel_events WHERE originator_id = ANY(%s))", (ids,)
        ).fetchone()
    else:  # an index probe per stream
        exists = "EXISTS (SELECT 1 FROM panel_events WHERE starts_with(originator_id, %s))"
        row = conn.execute(
            "SELECT " + " OR ".join([exists] * len(TENANT_STREAMS)),
            [f"{stream}:{tenant}:" for stream in TENANT_STREAMS],
        ).fetchone()
    conn.commit()
    return bool(row and row[0])


def _require_events(
    conn: psycopg.Connection[Any], tenant: str | None, entity: str | None = None
) -> None:
    """A tenant (or an entity of it) the event store has no event of is not found: most
    likely a mistyped id, which would otherwise give an empty answer that looks fine."""
    if tenant is None:
        return
    if not _has_events(conn, tenant):
        raise CommandFailed(f"tenant {tenant} not found: it has no events", EXIT_NOT_FOUND)
    if entity is not None and not _has_events(conn, tenant, entity):
        raise CommandFailed(
            f"{entity} not found in tenant {tenant}: it has no events", EXIT_NOT_FOUND
        )


def _check_replayable(conn: psycopg.Connection[Any], tenant: str, tables: list[str]) -> None:
    """A tenant without events can still have read-model rows (forged, or left behind): a
    replay removes them and a check reports them. Without either, there is nothing to do."""
    from psycopg import sql

    if _has_events(conn, tenant):
        return
    for table in tables:
        query = sql.SQL("SELECT EXISTS (SELECT 1 FROM {} WHERE tenant_id = %s)")
        row = conn.execute(query.format(sql.Identifier(table)), (tenant,)).fetchone()
        if row and row[0]:
            print(
                f"beeoclock: tenant {tenant} has no events: its read-model rows have none "
                "behind them",
                file=sys.stderr,
            )
            return
    raise CommandFailed(
        f"tenant {tenant} not found: it has no events and no read-model rows to replay",
        EXIT_NOT_FOUND,
    )


def cmd_replay(settings: Settings, args: argparse.Namespace) -> None:
    from workers.replay import TARGETS, Replay, ReplayError

    settings = _operator_settings(settings)
    settings.require("database_url", "master_key")
    names = list(TARGETS) if args.projection == "all" else [args.projection]
    with _database(settings) as conn:
        if args.tenant is not None:
            _check_replayable(conn, args.tenant, [TARGETS[name].table for name in names])
    damaged = False
    for name in names:
        replay = Replay(
            settings,
            TARGETS[name],
            args.tenant,
            batch=args.batch,
            restart=args.restart,
            progress=not args.quiet,
            checking=args.check,
            workers=args.workers,
        )
        try:
            report = replay.check() if args.check else replay.run()
        except ReplayError as exc:
            raise CommandFailed(str(exc)) from None
        damaged |= report.damaged
        print(json.dumps(report.as_dict()), flush=True)
    if args.check and damaged:
        sys.exit(EXIT_DAMAGE)


def cmd_audit_export(settings: Settings, args: argparse.Namespace) -> None:
    from beeoclock.bootstrap import panel_application
    from workers.audit import export

    settings = _operator_settings(settings)
    settings.require("database_url", "master_key")
    with _database(settings) as conn:
        _require_events(conn, args.tenant, args.entity)
        with _output(args.output, force=args.force, newline="") as out:
            app = panel_application(settings, pool_size=2)
            try:
                count = export(
                    app, conn, out, args.tenant, args.entity, args.since, args.until, args.format
                )
            finally:
                app.close()
    print(f"beeoclock: exported {count} events", file=sys.stderr)


def cmd_gdpr(settings: Settings, args: argparse.Namespace) -> None:
    import redis

    from beeoclock.bootstrap import panel_application

    settings = _operator_settings(settings)
    settings.require("database_url", "master_key")
    with _database(settings) as conn:
        _require_events(conn, args.tenant)
        with _output(getattr(args, "output", None), force=getattr(args, "force", False)) as out:
            app = panel_application(settings, pool_size=2)
            client = redis.Redis.from_url(settings.redis_url) if settings.redis_url else None
            try:
                document = _gdpr_action(settings, args, app, conn, client)
            finally:
                app.close()
                if client is not None:
                    client.close()
            out.write(json.dumps(document, indent=2, ensure_ascii=False) + "\n")


def _gdpr_action(
    settings: Settings,
    args: argparse.Namespace,
    app: PanelApplication,
    conn: psycopg.Connection[Any],
    client: redis.Redis | None,
) -> dict[str, Any]:
    from commands.errors import DomainError, InvalidCommand, NotFound
    from workers import gdpr

    try:
        if args.action == "export":
            return gdpr.export_customer(app, conn, settings, args.tenant, args.customer, client)
        if args.action == "seal-legacy":
            prefix = f"customer:{args.tenant}:" if args.tenant else "customer:"
            return {
                "sealed": gdpr.seal_plain(app, conn, prefix),
                "snapshotsDropped": gdpr.drop_plain_snapshots(conn, prefix),
            }
        actor = args.actor or f"operator:{getpass.getuser()}"
        return gdpr.erase_customer(
            app, conn, settings, args.tenant, args.customer, args.reason, actor, client
        )
    except NotFound as exc:
        raise CommandFailed(exc.message, EXIT_NOT_FOUND) from None
    except InvalidCommand as exc:
        raise CommandFailed(exc.message, EXIT_USAGE) from None
    except DomainError as exc:
        raise CommandFailed(exc.message) from None


def _dev_env() -> dict[str, str]:
    if not DEV_ENV_FILE.exists():
        return {}
    pairs = (line.split("=", 1) for line in DEV_ENV_FILE.read_text().splitlines() if "=" in line)
    return dict(pairs)


def cmd_dev(settings: Settings, args: argparse.Namespace) -> None:
    from beeoclock.devstack import run_dev_stack

    run_dev_stack(settings, port=args.port, env_file=DEV_ENV_FILE)


def _add_output(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--output", help="a new file, readable by its owner only (default: standard output)"
    )
    parser.add_argument("--force", action="store_true", help="replace the --output file")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="beeoclock",
        description="Bee O'clock panel service: event-sourced customers and services.",
        epilog=EXIT_STATUS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # the operator tools' own --help says what their exit status means too
    operator: dict[str, Any] = {
        "epilog": EXIT_STATUS,
        "formatter_class": argparse.RawDescriptionHelpFormatter,
    }

    dev = sub.add_parser(
        "dev",
        help="run the whole stack on one port (embedded servers for every URL not configured)",
    )
    dev.add_argument("--port", type=_port, default=8000)
    dev.set_defaults(func=cmd_dev)

    for name, helptext, write, read in (
        ("api", "serve the write and the read API on one port", True, True),
        ("write-api", "serve the write API", True, False),
        ("read-api", "serve the read API", False, True),
    ):
        api = sub.add_parser(name, help=helptext)
        api.add_argument("--host", default="127.0.0.1")
        api.add_argument("--port", type=_port, default=8000)
        api.add_argument(
            "--workers",
            type=_positive,
            default=1,
            help="worker processes (one per core is typical)",
        )
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
        "--tenant",
        type=_tenant_id,
        action="append",
        required=True,
        help="tenant id granted (repeatable)",
    )
    token.add_argument(
        "--permissions", default="all", help="comma-separated permissions, or 'all' (default)"
    )
    token.add_argument("--sub", default="dev-user", help="the token subject (user id)")
    token.add_argument("--ttl", type=_positive, default=3600, help="seconds until it expires")
    token.set_defaults(func=cmd_token)

    replay = sub.add_parser(
        "replay", help="rebuild read models from the event store and swap them in, live", **operator
    )
    replay.add_argument("--projection", choices=["customers", "services", "all"], default="all")
    replay.add_argument("--tenant", type=_tenant_id, help="rebuild one tenant's rows only")
    replay.add_argument(
        "--check",
        action="store_true",
        help="rebuild aside and report how the live read model differs (exit 1 if it does)",
    )
    replay.add_argument(
        "--restart", action="store_true", help="start over instead of resuming a broken run"
    )
    replay.add_argument("--batch", type=_positive, default=5000, help="events per transaction")
    replay.add_argument(
        "--workers",
        type=_positive,
        help="worker processes of a whole-table rebuild (default: one per core when large)",
    )
    replay.add_argument("--quiet", action="store_true", help="no progress line")
    replay.set_defaults(func=cmd_replay)

    audit = sub.add_parser("audit", help="audit trail tools").add_subparsers(
        dest="audit_command", required=True, metavar="ACTION"
    )
    audit_export = audit.add_parser(
        "export", help="a tenant's events with who, when and what", **operator
    )
    audit_export.add_argument("--tenant", type=_tenant_id, required=True)
    audit_export.add_argument("--entity", type=_entity_id, help="one customer or service id")
    audit_export.add_argument("--since", type=_instant, help="from this ISO instant (included)")
    audit_export.add_argument("--until", type=_instant, help="to this ISO instant (excluded)")
    audit_export.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
    _add_output(audit_export)
    audit_export.set_defaults(func=cmd_audit_export)

    gdpr = sub.add_parser("gdpr", help="a customer's data: export it, or erase it").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    gdpr_export = gdpr.add_parser(
        "export", help="everything about one customer, as JSON", **operator
    )
    gdpr_erase = gdpr.add_parser(
        "erase",
        help="crypto-shred a customer's personal data and purge read models and caches",
        **operator,
    )
    for action in (gdpr_export, gdpr_erase):
        action.add_argument("--tenant", type=_tenant_id, required=True)
        action.add_argument("--customer", type=_entity_id, required=True)
        action.set_defaults(func=cmd_gdpr)
    _add_output(gdpr_export)
    seal = gdpr.add_parser(
        "seal-legacy",
        help="seal the personal data of events stored before crypto-shredding (run once after "
        "upgrading)",
        **operator,
    )
    seal.add_argument("--tenant", type=_tenant_id, help="one tenant only")
    seal.set_defaults(func=cmd_gdpr)
    gdpr_erase.add_argument("--reason", required=True, help="why (recorded; no personal data)")
    gdpr_erase.add_argument("--actor", help="who erases (default: operator:<login name>)")
    return parser


def _stop(message: str, code: int) -> NoReturn:
    print(f"beeoclock: {message}", file=sys.stderr)
    sys.exit(code)


def _fault(exc: Exception) -> str | None:
    """The one line that says an ordinary operational fault; None for anything else."""
    import psycopg
    from eventsourcing.persistence import OperationalError as StoreUnavailable

    from events.pii import VaultError

    if isinstance(exc, psycopg.errors.LockNotAvailable):
        return f"another session held a lock too long ({_first_line(exc)}); run it again"
    if isinstance(exc, psycopg.OperationalError | StoreUnavailable):
        return f"database: {_first_line(exc)}"
    if isinstance(exc, VaultError):
        return _first_line(exc)
    return None


def _end_like_cat() -> NoReturn:
    """The reader of the output went away (`beeoclock audit export ... | head`): end quietly,
    killed by SIGPIPE as `cat` is, so a shell sees what it sees of any tool there."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())  # what is still buffered goes nowhere at exit
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGPIPE)
    sys.exit(128 + signal.SIGPIPE)


def main(argv: Sequence[str] | None = None) -> None:
    """Run a command; every way it can end is one of the exit statuses of EXIT_STATUS (argparse
    itself exits 2 on a usage error)."""
    from beeoclock import logs

    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
        logs.configure(settings.log_level)
        args.func(settings, args)
    except SettingsError as exc:
        _stop(str(exc), EXIT_USAGE)
    except CommandFailed as exc:
        _stop(exc.message, exc.code)
    except KeyboardInterrupt:
        sys.exit(EXIT_INTERRUPTED)
    except BrokenPipeError:
        _end_like_cat()
    except Exception as exc:
        fault = _fault(exc)
        if fault is not None:
            _stop(fault, EXIT_FAILED)
        # a bug: its traceback, and never the status of "damage found"
        traceback.print_exc()
        _stop(f"unexpected error ({type(exc).__name__}): see the traceback above", EXIT_FAILED)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
