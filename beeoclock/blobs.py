"""Content-addressed storage of uploaded media (service banners): a blob's key is the SHA-256
of its bytes, in lowercase hex, so a stored blob never changes and storing the same bytes again
is a no-op.

Writing is synchronous (`BlobStore.put`, called from the write routes, which run in the thread
pool beside the synchronous event store); reading is asynchronous (`AsyncBlobReader.get`, called
from the read routes on the event loop). Routes depend on these two protocols only; the
composition root picks the backend.

The PostgreSQL backend keeps blobs in `media_blobs` (migration 006). Another backend plugs in
by implementing the same two methods with the same contract: `put` refuses bytes that do not
match the hash (`verify_address`) and is idempotent; `get` answers None for a hash it does not
hold. A filesystem store would write a temporary file and rename it to `<root>/<hash>` (atomic,
so concurrent puts of one hash are harmless); an object store would use the hash as the object
key.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import psycopg
from psycopg_pool import AsyncConnectionPool, ConnectionPool

_ADDRESS = re.compile(r"[0-9a-f]{64}")

_INSERT = (
    "INSERT INTO media_blobs (sha256, content_type, size, data) VALUES (%s, %s, %s, %s) "
    "ON CONFLICT (sha256) DO NOTHING"
)
_SELECT = "SELECT content_type, data FROM media_blobs WHERE sha256 = %s"


@dataclass(frozen=True)
class Blob:
    data: bytes
    content_type: str
    sha256: str


class BlobStore(Protocol):
    def put(self, sha256: str, data: bytes, content_type: str) -> None:
        """Store the bytes under their hash; a no-op if already stored. ValueError if the hash
        is not the SHA-256 of the bytes."""


class AsyncBlobReader(Protocol):
    async def get(self, sha256: str) -> Blob | None:
        """The blob stored under the hash, or None."""


def content_address(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def is_address(value: str) -> bool:
    return _ADDRESS.fullmatch(value) is not None


def verify_address(sha256: str, data: bytes) -> None:
    """Raise ValueError unless `sha256` is the content address of `data`: a blob filed under
    the wrong key would serve other bytes than its referrer expects, forever."""
    if content_address(data) != sha256:
        raise ValueError(f"{sha256!r} is not the SHA-256 (lowercase hex) of the data")


class PostgresBlobStore:
    """`BlobStore` over a psycopg connection pool, or a conninfo (a connection per put)."""

    def __init__(self, source: ConnectionPool[Any] | str) -> None:
        self._source = source

    def put(self, sha256: str, data: bytes, content_type: str) -> None:
        verify_address(sha256, data)
        with self._connection() as conn:
            conn.execute(_INSERT, (sha256, content_type, len(data), data))

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        # Both commit when the block ends without an error.
        if isinstance(self._source, str):
            with psycopg.connect(self._source) as conn:
                yield conn
        else:
            with self._source.connection() as conn:
                yield conn


class PostgresBlobReader:
    """`AsyncBlobReader` over the read API's async pool."""

    def __init__(self, pool: AsyncConnectionPool[Any]) -> None:
        self._pool = pool

    async def get(self, sha256: str) -> Blob | None:
        if not is_address(sha256):
            return None  # nothing is ever stored under it: spare the round trip
        async with self._pool.connection() as conn:
            # binary: bytea as raw bytes, not hex text of twice the size
            cur = await conn.execute(_SELECT, (sha256,), binary=True)
            row = await cur.fetchone()
        if row is None:
            return None
        content_type, data = row
        return Blob(data=bytes(data), content_type=str(content_type), sha256=sha256)
