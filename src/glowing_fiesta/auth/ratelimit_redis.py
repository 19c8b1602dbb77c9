"""The shared rate limiter on Redis: one fixed-window counter per key and minute.

One atomic script per request (INCR, and EXPIRE on the first hit), so counts hold
across every process and machine that shares the Redis.

Failure policy: when Redis does not answer, requests are let through (fail open) and
each such decision is counted (`gf_rate_limiter_errors_total`) and logged at a limited
rate. Losing rate limiting for a moment is better than refusing every write while the
queue might still accept it; the queue itself answers 503 if Redis is really gone.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from glowing_fiesta import redis_client
from glowing_fiesta.auth.ratelimit import WINDOW, Decision, FailOpen, decide

_SCRIPT = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return n
"""


class RedisRateLimiter:
    def __init__(
        self,
        url: str,
        *,
        prefix: str = "gf",
        on_error: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis: aioredis.Redis = redis_client.connect(
            url, socket_connect_timeout=1, socket_timeout=1
        )
        self._script = self._redis.register_script(_SCRIPT)
        self._prefix = f"{prefix}:rl"
        self._fail_open = FailOpen(on_error)
        self._clock = clock

    async def hit(self, key: str, limit: int) -> Decision:
        now = self._clock()
        window = math.floor(now / WINDOW)
        try:
            count = int(
                await self._script(keys=[f"{self._prefix}:{key}:{window}"], args=[WINDOW + 5])
            )
        except RedisError as exc:
            self._fail_open(now, "rate_limiter_unavailable", error=str(exc))
            return decide(1, limit, now)
        return decide(count, limit, now)

    async def close(self) -> None:
        await self._redis.aclose()
