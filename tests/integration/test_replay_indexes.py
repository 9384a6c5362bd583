"""A replay's staging table gets the live table's primary key and indexes once its rows are in,
each partition's built on its own: stopped midway, the build goes on without building an
index twice, and ends with what the live table has, partition by partition."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections import Counter
from typing import Any

import psycopg
import pytest

from beeoclock.settings import Settings
from tests.support import env_of, eventually
from workers.replay import CLIENT_CHECK_MS, TARGETS, Replay, _index_shape


def indexes(conn: psycopg.Connection[Any], table: str) -> Counter[tuple[bool, bool, str]]:
    """(primary, unique, `USING ...`) of each index of `table`, counted."""
    return Counter(
        (primary, *_index_shape(definition))
        for primary, definition in conn.execute(
            "SELECT i.indisprimary, pg_get_indexdef(i.indexrelid) FROM pg_index i "
            "WHERE i.indrelid = %s::regclass",
            (table,),
        ).fetchall()
    )


def partitions(conn: psycopg.Connection[Any], table: str) -> list[str]:
    return [
        name
        for (name,) in conn.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = %s::regclass ORDER BY 1",
            (table,),
        ).fetchall()
    ]


@pytest.mark.parametrize("projection", ["customers", "services"])
def test_an_index_build_stopped_midway_goes_on_and_ends_as_the_live_table(
    settings: Settings, projection: str
) -> None:
    replay = Replay(settings, TARGETS[projection], checking=True, workers=2)
    live = TARGETS[projection].table
    with psycopg.connect(settings.database_url) as conn:
        replay._drop_staging(conn)
        replay._create_staging(conn)
        conn.commit()
        try:
            first = partitions(conn, replay.staging)[0]
            assert indexes(conn, first) == Counter()  # no key while the rows are copied in
            # stopped midway: one partition has two of its indexes already
            conn.execute(f'CREATE UNIQUE INDEX ON "{first}" (tenant_id, id)')
            conn.execute(f'CREATE INDEX ON "{first}" USING btree (tenant_id, updated_at, id)')
            conn.commit()
            replay._index_staging(conn)
            replay._index_staging(conn)  # and once more: nothing left to build
            expected = indexes(conn, partitions(conn, live)[0])
            assert all(count == 1 for count in expected.values())
            for partition in partitions(conn, replay.staging):
                assert indexes(conn, partition) == expected, partition
            assert indexes(conn, replay.staging) == indexes(conn, live)
        finally:
            conn.rollback()
            replay._drop_staging(conn)
            conn.commit()


def test_an_index_build_a_killed_run_left_going_is_waited_for_not_built_again(
    settings: Settings,
) -> None:
    """A killed replay's backends go on with the statements they were running: a resume that
    starts while one is still building an index (not committed yet, so not seen) waits for
    it instead of building the same index beside it."""
    replay = Replay(settings, TARGETS["customers"], checking=True, workers=2)
    live = TARGETS["customers"].table
    with (
        psycopg.connect(settings.database_url) as conn,
        psycopg.connect(settings.database_url) as orphan,
    ):
        replay._drop_staging(conn)
        replay._create_staging(conn)
        conn.commit()
        try:
            first = partitions(conn, replay.staging)[0]
            # the killed run's build, under way (its transaction open) as the resume starts
            orphan.execute(f'CREATE INDEX ON "{first}" USING gin (tenant_id, search gin_trgm_ops)')
            finishing = threading.Timer(1.0, orphan.commit)
            finishing.start()
            try:
                replay._index_staging(conn)
            finally:
                finishing.join()
            expected = indexes(conn, partitions(conn, live)[0])
            for partition in partitions(conn, replay.staging):
                assert indexes(conn, partition) == expected, partition
        finally:
            conn.rollback()
            replay._drop_staging(conn)
            conn.commit()


#: a replay process's index connections, given one long statement; it says when it runs
_BUSY_REPLAY = """
import queue, sys
from psycopg import sql
from beeoclock.settings import Settings
from workers.replay import TARGETS, Replay

jobs = queue.SimpleQueue()
jobs.put(sql.SQL("SELECT pg_sleep(60)"))
print("building", flush=True)
Replay(Settings(), TARGETS["customers"], workers=1)._run_in_parallel(jobs)
"""


def test_a_killed_replays_index_connections_stop_their_statements(settings: Settings) -> None:
    """What a replay's index connections run stops soon after the replay is killed, so
    that a resume does not wait for (or race) builds nobody will use."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _BUSY_REPLAY], env=env_of(settings), stdout=subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"building\n"
        with psycopg.connect(settings.database_url, autocommit=True) as conn:

            def busy() -> int:
                row = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND application_name = 'beeoclock-replay' AND state = 'active' "
                    "AND query LIKE '%%pg_sleep%%'"
                ).fetchone()
                return int(row[0]) if row else 0

            eventually(lambda: busy() == 1, timeout_s=10)
            proc.kill()
            proc.wait()
            started = time.monotonic()
            eventually(lambda: busy() == 0, timeout_s=10)
            assert time.monotonic() - started < 2 + CLIENT_CHECK_MS / 1000
    finally:
        proc.kill()
        proc.wait()
