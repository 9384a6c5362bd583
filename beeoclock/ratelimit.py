"""Rate limits in Redis: the generic cell rate algorithm (GCRA), one Lua script, so a check is
one atomic round trip and exact however many API processes and callers race.

A limit of N requests per period P lets a caller make N requests at once, then one more each
P/N (the "emission interval" T). Redis keeps one number per (class, tenant, user): the
theoretical arrival time (TAT) of the next request. A request at time `now` is allowed when
`TAT - N*T <= now` (the burst is not exhausted), and then moves the TAT to
`max(TAT, now) + T`. Redis's own clock is used (`TIME`), so API processes never disagree.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from dataclasses import dataclass

import redis
import redis.asyncio as aredis

from beeoclock.settings import Rate

log = logging.getLogger(__name__)

_GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local limit_at = tat - interval * burst
if now < limit_at + interval then
  return {0, 0, limit_at + interval - now, tat - now}
end
local new_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000))
return {1, math.floor((now - (new_tat - interval * burst)) / interval), 0, new_tat - now}
"""
_BACKOFF_S = 1.0


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    #: seconds until another request is allowed (0 when allowed)
    retry_after_s: float
    #: seconds until the full burst is available again
    reset_s: float
    period_s: int

    def headers(self, policy: str) -> dict[str, str]:
        """`RateLimit-*` fields (IETF httpapi draft) and, when refused, `Retry-After`."""
        headers = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(math.ceil(self.reset_s)),
            "RateLimit-Policy": f'{self.limit};w={self.period_s};name="{policy}"',
        }
        if not self.allowed:
            headers["Retry-After"] = str(max(1, math.ceil(self.retry_after_s)))
        return headers


class RateLimiterUnavailable(Exception):
    """Redis can't be asked; the caller decides by the kind of request."""


def limit_key(limit_class: str, tenant_id: str, subject: str) -> str:
    # the subject is hashed: keys carry no user identifiers (some providers use e-mails)
    who = hashlib.blake2b(f"{tenant_id}\x00{subject}".encode(), digest_size=12).hexdigest()
    return f"rl:{limit_class}:{tenant_id}:{who}"


class RateLimiter:
    def __init__(self, client: aredis.Redis) -> None:
        self._client = client
        self._script = client.register_script(_GCRA)
        self._down_until = 0.0

    async def check(self, key: str, rate: Rate) -> Decision:
        """Count one request against `rate`; raises RateLimiterUnavailable."""
        if time.monotonic() < self._down_until:
            msg = "redis was unreachable moments ago"
            raise RateLimiterUnavailable(msg)
        interval_us = rate.period_s * 1_000_000 // rate.count
        try:
            allowed, remaining, retry_us, reset_us = await self._script(
                keys=[key], args=[interval_us, rate.count]
            )
        except (redis.RedisError, OSError) as exc:
            log.warning("redis unavailable for rate limiting: %s", exc)
            self._down_until = time.monotonic() + _BACKOFF_S
            raise RateLimiterUnavailable(str(exc)) from None
        return Decision(
            allowed=bool(allowed),
            limit=rate.count,
            remaining=int(remaining),
            retry_after_s=int(retry_us) / 1e6,
            reset_s=int(reset_us) / 1e6,
            period_s=rate.period_s,
        )
