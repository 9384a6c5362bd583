"""The media blob store against real PostgreSQL: content-addressed, idempotent, and it refuses
bytes filed under a hash that is not theirs."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from beeoclock.blobs import Blob, BlobStore, PostgresBlobReader, PostgresBlobStore, content_address
from beeoclock.settings import Settings
from projections.tenant_pool import reader_pool


@pytest.fixture(params=["pool", "conninfo"])
def store(request: pytest.FixtureRequest, settings: Settings) -> Iterator[BlobStore]:
    if request.param == "conninfo":
        yield PostgresBlobStore(settings.database_url)
        return
    with ConnectionPool(settings.database_url, min_size=1, max_size=4, open=True) as pool:
        yield PostgresBlobStore(pool)


def read(settings: Settings, sha256: str) -> Blob | None:
    async def get() -> Blob | None:
        async with reader_pool(settings.database_url, max_size=2) as pool:
            return await PostgresBlobReader(pool).get(sha256)

    return asyncio.run(get())


def stored_rows(settings: Settings, sha256: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(settings.database_url) as conn:
        return conn.execute(
            "SELECT content_type, size FROM media_blobs WHERE sha256 = %s", (sha256,)
        ).fetchall()


def test_a_stored_blob_reads_back_with_its_bytes_and_content_type(
    store: BlobStore, settings: Settings
) -> None:
    data = os.urandom(5 * 1024 * 1024)  # an upload at the size limit, with every byte value
    sha256 = content_address(data)

    store.put(sha256, data, "image/png")

    assert read(settings, sha256) == Blob(data=data, content_type="image/png", sha256=sha256)
    assert stored_rows(settings, sha256) == [("image/png", len(data))]


def test_storing_the_same_bytes_again_changes_nothing(store: BlobStore, settings: Settings) -> None:
    data = os.urandom(1024)
    sha256 = content_address(data)

    store.put(sha256, data, "image/jpeg")
    store.put(sha256, data, "image/jpeg")
    with ThreadPoolExecutor(max_workers=6) as pool:
        list(pool.map(lambda _: store.put(sha256, data, "image/jpeg"), range(12)))

    assert stored_rows(settings, sha256) == [("image/jpeg", 1024)]
    assert read(settings, sha256) == Blob(data=data, content_type="image/jpeg", sha256=sha256)


def test_an_unknown_or_malformed_hash_reads_as_nothing(settings: Settings) -> None:
    assert read(settings, content_address(os.urandom(64))) is None
    assert read(settings, "not-a-hash") is None
    assert read(settings, content_address(b"x").upper()) is None


def test_bytes_under_a_hash_that_is_not_theirs_are_refused(
    store: BlobStore, settings: Settings
) -> None:
    data, other = os.urandom(256), os.urandom(256)
    wrong = content_address(other)

    with pytest.raises(ValueError, match="SHA-256"):
        store.put(wrong, data, "image/webp")

    with pytest.raises(ValueError, match="SHA-256"):
        store.put(content_address(data).upper(), data, "image/webp")

    assert read(settings, wrong) is None
    assert stored_rows(settings, content_address(data)) == []
