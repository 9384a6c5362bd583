"""A replay's staging table gets the live table's primary key and indexes once its rows are in,
each partition's built on its own: stopped midway, the build goes on without building an
index twice, and ends with what the live table has, partition by partition."""

from __future__ import annotations

from collections import Counter
from typing import Any

import psycopg
import pytest

from beeoclock.settings import Settings
from workers.replay import TARGETS, Replay, _index_shape


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
