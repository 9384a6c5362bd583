"""Redis cache of read-model answers, invalidated by generations.

Keys: `g:{tenant}:{stream}` is the tenant's list generation and `g:{tenant}:{stream}:{id}` an
entity's; the projector increments them after each commit. A cached value lives under
`v:...:{generation}` and is prefixed with the applied position it was computed at, so a read
that must reflect a later write treats it as a miss (read-your-writes never served stale).

Redis is an accelerator only: when it fails, reads go to PostgreSQL and skip the cache for a
short while instead of waiting on a dead server at every request.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

import redis
import redis.asyncio as aredis

from beeoclock.settings import Settings

log = logging.getLogger(__name__)

_GET = """
local g = redis.call('GET', KEYS[1]) or '0'
return {g, redis.call('GET', ARGV[1] .. g)}
"""
#: Stored only while the generation it was computed under is current: an answer computed
#: before a change (an erasure among them) never lands after the change's purge. The
#: generation's key is kept at least as long as the answer: were it to expire first, the next
#: change would start it again at 1, and an answer stored under 1 before would be current
#: again (see `invalidate`)
_PUT = """
if (redis.call('GET', KEYS[1]) or '0') ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3])
if ARGV[1] ~= '0' and redis.call('TTL', KEYS[1]) < tonumber(ARGV[3]) + 60 then
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]) + 60)
end
return 1
"""
_BACKOFF_S = 1.0


def generation_ttl_s(settings: Settings) -> int:
    """How long a generation's key lives after a bump: past every answer stored under it
    (`invalidate`)."""
    return 2 * max(settings.cache_entity_ttl_s, settings.cache_page_ttl_s) + 60


def generation_key(tenant_id: str, stream: str, entity_id: str | None = None) -> str:
    base = f"g:{tenant_id}:{stream}"
    return f"{base}:{entity_id}" if entity_id is not None else base


class ReadCache:
    """The read API's side: look up and store answers (async)."""

    def __init__(self, client: aredis.Redis | None) -> None:
        self._client = client
        self._down_until = 0.0
        self._get = client.register_script(_GET) if client is not None else None
        self._put = client.register_script(_PUT) if client is not None else None

    def _available(self) -> bool:
        return self._client is not None and time.monotonic() >= self._down_until

    def _failed(self, exc: Exception) -> None:
        log.warning("redis unavailable, reading without cache: %s", exc)
        self._down_until = time.monotonic() + _BACKOFF_S

    async def get(self, gen_key: str, value_key: str) -> tuple[str, int, bytes | None]:
        """Returns (generation, label, body); body None on a miss."""
        if not self._available() or self._get is None:
            return "", 0, None
        try:
            generation, value = await self._get(keys=[gen_key], args=[f"v:{value_key}:"])
        except (redis.RedisError, OSError) as exc:
            self._failed(exc)
            return "", 0, None
        generation = generation.decode() if isinstance(generation, bytes) else str(generation)
        if value is None:
            return generation, 0, None
        label, _, body = bytes(value).partition(b"\n")
        return generation, int(label), body

    async def put(
        self, gen_key: str, generation: str, value_key: str, label: int, body: bytes, ttl_s: int
    ) -> None:
        if not generation or not self._available() or self._put is None:
            return
        try:
            await self._put(
                keys=[gen_key, f"v:{value_key}:{generation}"],
                args=[generation, str(label).encode() + b"\n" + body, ttl_s],
            )
        except (redis.RedisError, OSError) as exc:
            self._failed(exc)

    async def ping(self) -> bool:
        if self._client is None:
            return False
        try:
            return bool(await self._client.ping())
        except (redis.RedisError, OSError):
            return False


def invalidate(client: redis.Redis | None, keys: Iterable[str], ttl_s: int) -> None:
    """The projector's side, after its commit: bump the generations of what changed.
    A generation's key outlives every value stored under it (`ttl_s` here, and `_PUT`
    extends it to outlive each answer it stores), then goes too: a customer not changed or
    read for that long keeps no key. A key that went had no answer left under any of its
    generations, so starting again at 1 brings none back; an answer stored while the key
    was absent is under generation 0, which a key once bumped never holds again."""
    keys = list(keys)
    if client is None or not keys:
        return
    try:
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.incr(key)
            pipe.expire(key, ttl_s)
        pipe.execute()
    except (redis.RedisError, OSError) as exc:
        log.warning("redis unavailable, cache entries expire by TTL: %s", exc)
