"""The GCRA rate limiter against real Redis: exact under concurrency, refilling at the rate,
separate per class, tenant and user, and explicit when Redis is gone."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis.asyncio as aredis

from beeoclock.embedded import free_port
from beeoclock.ratelimit import Decision, RateLimiter, RateLimiterUnavailable, limit_key
from beeoclock.settings import Rate


async def _burst(url: str, key: str, rate: Rate, callers: int, clients: int) -> list[Decision]:
    """`callers` checks at once, spread over `clients` connections (as API processes would)."""
    connections = [aredis.Redis.from_url(url) for _ in range(clients)]
    limiters = [RateLimiter(c) for c in connections]
    try:
        return await asyncio.gather(
            *(limiters[i % clients].check(key, rate) for i in range(callers))
        )
    finally:
        for connection in connections:
            await connection.aclose()


def test_exactly_the_limit_is_allowed_when_many_callers_race(servers: dict[str, str]) -> None:
    key = limit_key("customer_write", uuid.uuid4().hex, "user-1")
    decisions = asyncio.run(_burst(servers["redis"], key, Rate(25, 3600), callers=200, clients=8))
    allowed = [d for d in decisions if d.allowed]
    assert len(allowed) == 25
    assert sorted(d.remaining for d in allowed) == list(range(25))
    refused = [d for d in decisions if not d.allowed]
    assert len(refused) == 175
    # the next request is allowed one emission interval (3600 s / 25) after the burst
    assert all(140 < d.retry_after_s <= 144 for d in refused)
    assert all(d.headers("customer_write")["Retry-After"] in ("144", "143") for d in refused)


def test_the_budget_refills_at_the_rate(servers: dict[str, str]) -> None:
    key = limit_key("service_read", uuid.uuid4().hex, "user-1")
    rate = Rate(5, 1)  # one more every 200 ms

    async def scenario() -> tuple[list[Decision], Decision, Decision]:
        client = aredis.Redis.from_url(servers["redis"])
        limiter = RateLimiter(client)
        try:
            first = [await limiter.check(key, rate) for _ in range(6)]
            await asyncio.sleep(first[-1].retry_after_s + 0.02)
            after_wait = await limiter.check(key, rate)
            again = await limiter.check(key, rate)
            return first, after_wait, again
        finally:
            await client.aclose()

    first, after_wait, again = asyncio.run(scenario())
    assert [d.allowed for d in first] == [True] * 5 + [False]
    assert 0 < first[-1].retry_after_s <= 0.2
    assert after_wait.allowed
    assert not again.allowed


def test_budgets_are_separate_per_class_tenant_and_user(servers: dict[str, str]) -> None:
    tenant = uuid.uuid4().hex
    keys = [
        limit_key("customer_read", tenant, "user-1"),
        limit_key("customer_read", tenant, "user-2"),
        limit_key("customer_read", uuid.uuid4().hex, "user-1"),
        limit_key("service_read", tenant, "user-1"),
    ]
    assert len(set(keys)) == 4
    assert all("user-1" not in k for k in keys), "no user id in clear in Redis"

    async def scenario() -> list[list[bool]]:
        client = aredis.Redis.from_url(servers["redis"])
        limiter = RateLimiter(client)
        try:
            return [
                [(await limiter.check(k, Rate(2, 3600))).allowed for _ in range(3)] for k in keys
            ]
        finally:
            await client.aclose()

    assert asyncio.run(scenario()) == [[True, True, False]] * 4


def test_an_unreachable_redis_is_reported_not_waited_on() -> None:
    async def scenario() -> None:
        client = aredis.Redis.from_url(
            f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.5
        )
        limiter = RateLimiter(client)
        try:
            with pytest.raises(RateLimiterUnavailable):
                await limiter.check("rl:x", Rate(1, 60))
            # within the back-off the limiter doesn't even try
            with pytest.raises(RateLimiterUnavailable, match="moments ago"):
                await limiter.check("rl:x", Rate(1, 60))
        finally:
            await client.aclose()

    asyncio.run(scenario())
