"""The rate limiter contract on memory and on Redis, and Redis' failure policy."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator

import pytest

from glowing_fiesta.auth.ratelimit import MemoryRateLimiter, RateLimiter
from glowing_fiesta.auth.ratelimit_redis import RedisRateLimiter
from tests.services import redis_prefix

LimiterFactory = Callable[[Callable[[], float]], RateLimiter]


@pytest.fixture(params=["memory", "redis"])
def make_limiter(request: pytest.FixtureRequest) -> Iterator[LimiterFactory]:
    if request.param == "memory":
        yield lambda clock: MemoryRateLimiter(clock=clock)
        return
    with redis_prefix() as (url, prefix):
        yield lambda clock: RedisRateLimiter(url, prefix=prefix, clock=clock)


def test_n_requests_a_minute_then_429_then_a_new_window(make_limiter: LimiterFactory) -> None:
    now = [6_000_000.0 + 15.2]  # 15.2 s into a window
    limiter = make_limiter(lambda: now[0])
    key = uuid.uuid4().hex

    async def scenario() -> None:
        decisions = [await limiter.hit(key, 3) for _ in range(4)]
        assert [d.allowed for d in decisions] == [True, True, True, False]
        assert [d.remaining for d in decisions] == [2, 1, 0, 0]
        assert {d.limit for d in decisions} == {3}
        assert decisions[-1].reset == 45  # whole seconds until the window ends
        assert (await limiter.hit("someone else", 3)).allowed
        now[0] += 45
        fresh = await limiter.hit(key, 3)
        assert fresh.allowed
        assert fresh.remaining == 2
        await limiter.close()

    asyncio.run(scenario())


def test_two_limiters_on_one_redis_share_the_count() -> None:
    with redis_prefix() as (url, prefix):

        async def scenario() -> list[bool]:
            a = RedisRateLimiter(url, prefix=prefix)
            b = RedisRateLimiter(url, prefix=prefix)
            out = [(await (a if i % 2 else b).hit("k", 4)).allowed for i in range(6)]
            await a.close()
            await b.close()
            return out

        assert asyncio.run(scenario()) == [True, True, True, True, False, False]


def test_redis_unreachable_fails_open_and_is_counted() -> None:
    errors: list[int] = []
    limiter = RedisRateLimiter("redis://127.0.0.1:1/0", on_error=lambda: errors.append(1))

    async def scenario() -> None:
        for _ in range(3):
            decision = await limiter.hit("k", 1)
            assert decision.allowed
        await limiter.close()

    asyncio.run(scenario())
    assert len(errors) == 3
