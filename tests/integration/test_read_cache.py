"""The read cache against real Redis: a cached answer is used only if it was computed at or
after the position the read must reflect, and a generation bump retires it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable

import redis
import redis.asyncio as aredis

from projections.cache import ReadCache, generation_key, invalidate
from read_api.deps import ReadGate, read_through


def test_a_cached_answer_older_than_the_required_position_is_recomputed(
    servers: dict[str, str],
) -> None:
    tenant = uuid.uuid4().hex
    gen_key = generation_key(tenant, "customer", "c1")
    value_key = f"{tenant}:customer:c1"
    computed: list[bytes] = []

    async def scenario() -> list[bytes]:
        client = aredis.Redis.from_url(servers["redis"])
        cache = ReadCache(client)

        def answer(body: bytes) -> Callable[[], Awaitable[bytes]]:
            async def compute() -> bytes:
                computed.append(body)
                return body

            return compute

        try:
            got = [
                # computed at applied position 5 and stored with that label
                await read_through(cache, ReadGate(5, 5), gen_key, value_key, 60, answer(b"v5")),
                # a read that must reflect position 5 may use it
                await read_through(cache, ReadGate(5, 9), gen_key, value_key, 60, answer(b"x")),
                # one that must reflect position 6 may not
                await read_through(cache, ReadGate(6, 6), gen_key, value_key, 60, answer(b"v6")),
                # an eventual read takes what is there
                await read_through(cache, ReadGate(None, 0), gen_key, value_key, 60, answer(b"y")),
            ]
            # the projector retires every answer of the entity by bumping its generation
            invalidate(redis.Redis.from_url(servers["redis"]), [gen_key], ttl_s=120)
            got.append(
                await read_through(cache, ReadGate(None, 0), gen_key, value_key, 60, answer(b"z"))
            )
            return got
        finally:
            await client.aclose()

    assert asyncio.run(scenario()) == [b"v5", b"v5", b"v6", b"v6", b"z"]
    assert computed == [b"v5", b"v6", b"z"]
    ttl = redis.Redis.from_url(servers["redis"]).ttl(gen_key)
    assert 0 < ttl <= 120, "a generation key expires once it outlives its values"


def test_an_answer_computed_before_a_change_is_not_stored_after_it(
    servers: dict[str, str],
) -> None:
    """A read that began before a change (an erasure's purge among them) must not put its
    answer back once the change has bumped the generation."""

    async def scenario() -> tuple[bytes | None, bytes | None]:
        client = aredis.Redis.from_url(servers["redis"])
        cache = ReadCache(client)
        gen_key = generation_key(uuid.uuid4().hex, "customer", "c1")
        value_key = f"{gen_key}:value"
        try:
            generation, _, _ = await cache.get(gen_key, value_key)
            invalidate(redis.Redis.from_url(servers["redis"]), [gen_key], 60)  # the change
            await cache.put(gen_key, generation, value_key, 1, b"stale", 60)
            _, _, after_change = await cache.get(gen_key, value_key)
            fresh_generation, _, _ = await cache.get(gen_key, value_key)
            await cache.put(gen_key, fresh_generation, value_key, 2, b"fresh", 60)
            _, _, stored = await cache.get(gen_key, value_key)
            return after_change, stored
        finally:
            await client.aclose()

    assert asyncio.run(scenario()) == (None, b"fresh")


def test_a_generation_key_outlives_the_answers_stored_under_it(servers: dict[str, str]) -> None:
    """An answer stored late in its generation key's life keeps the key alive: were the key
    to expire first, the next change would start it again at 1 and bring that answer back
    as current (for eventual reads, which take what is cached)."""
    tenant = uuid.uuid4().hex
    gen_key = generation_key(tenant, "customer", "c1")
    value_key = f"{tenant}:customer:c1"
    sync = redis.Redis.from_url(servers["redis"])

    async def read(client: aredis.Redis, body: bytes, gate: ReadGate) -> bytes:
        async def compute() -> bytes:
            return body

        return await read_through(ReadCache(client), gate, gen_key, value_key, 5, compute)

    async def scenario() -> list[bytes]:
        client = aredis.Redis.from_url(servers["redis"])
        try:
            invalidate(sync, [gen_key], ttl_s=2)  # a change: generation 1, for 2 s
            # a read that waited for the change: cached under generation 1 for 5 s
            old = await read(client, b"old", ReadGate(5, 5))
            await asyncio.sleep(2.5)  # past the generation's own TTL
            invalidate(sync, [gen_key], ttl_s=2)  # the next change
            return [old, await read(client, b"new", ReadGate(None, 0))]
        finally:
            await client.aclose()

    assert asyncio.run(scenario()) == [b"old", b"new"]
    assert sync.get(gen_key) == b"2"
