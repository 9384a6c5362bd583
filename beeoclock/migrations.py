"""Schema migrations: the event store's tables (created by the `eventsourcing` library) and the
numbered SQL files of `projections/migrations`, applied once each, in order, under a lock."""

from __future__ import annotations

import logging
from importlib import resources
from typing import Any

import psycopg

from beeoclock.settings import Settings

log = logging.getLogger(__name__)

_LOCK_KEY = 0x62656F6D  # advisory lock serializing concurrent `migrate` runs


def migration_files() -> list[tuple[int, str, str]]:
    folder = resources.files("projections") / "migrations"
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            version = int(entry.name.split("_", 1)[0])
            found.append((version, entry.name, entry.read_text()))
    return sorted(found)


def latest_version() -> int:
    return max(v for v, _, _ in migration_files())


def applied_version(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute(
        "SELECT CASE WHEN to_regclass('schema_migrations') IS NULL THEN 0 "
        "ELSE (SELECT COALESCE(MAX(version), 0) FROM schema_migrations) END"
    ).fetchone()
    return int(row[0]) if row else 0


def migrate(settings: Settings) -> list[str]:
    """Bring the database to the latest schema; returns the names of the files applied."""
    from commands.application import PanelApplication

    env = settings.eventsourcing_env() | {"CREATE_TABLE": "y", "POSTGRES_POOL_SIZE": "1"}
    applied: list[str] = []
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            PanelApplication(env=env).close()  # creates the event store tables if absent
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, "
                "name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            current = applied_version(conn)
            for version, name, sql in migration_files():
                if version <= current:
                    continue
                with conn.transaction():
                    conn.execute(sql.encode())
                    conn.execute(
                        "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                        (version, name),
                    )
                log.info("applied migration %s", name)
                applied.append(name)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return applied
