"""The rate limiter contract on memory, on a shared file and on Redis, and the failure
policies of the shared ones."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from glowing_fiesta.auth import ratelimit_file
from glowing_fiesta.auth.ratelimit import MemoryRateLimiter, RateLimiter
from glowing_fiesta.auth.ratelimit_file import FileRateLimiter
from glowing_fiesta.auth.ratelimit_redis import RedisRateLimiter
from tests.services import redis_prefix

LimiterFactory = Callable[[Callable[[], float]], RateLimiter]


@pytest.fixture(params=["memory", "file", "redis"])
def make_limiter(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LimiterFactory]:
    if request.param == "memory":
        yield lambda clock: MemoryRateLimiter(clock=clock)
        return
    if request.param == "file":
        yield lambda clock: FileRateLimiter(tmp_path / "gf.db-ratelimit", clock=clock)
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


def test_limiters_on_one_file_share_the_count_and_a_new_minute_resets_it(
    tmp_path: Path,
) -> None:
    now = [6_000_000.0 + 50]
    path = ratelimit_file.path_beside(tmp_path / "gf.db")
    a = FileRateLimiter(path, clock=lambda: now[0])
    b = FileRateLimiter(path, clock=lambda: now[0])

    async def scenario() -> tuple[list[bool], list[int]]:
        allowed = [(await (a if i % 2 else b).hit("k", 4)).allowed for i in range(6)]
        now[0] += 10  # the next minute: whichever limiter comes first starts it afresh
        fresh = [(await b.hit("k", 4)).remaining, (await a.hit("k", 4)).remaining]
        await a.close()
        await b.close()
        return allowed, fresh

    assert asyncio.run(scenario()) == ([True, True, True, True, False, False], [3, 2])
    assert path.exists()


def test_more_keys_than_slots_in_a_minute_fail_open_and_are_counted(tmp_path: Path) -> None:
    errors: list[int] = []
    limiter = FileRateLimiter(tmp_path / "rl", on_error=lambda: errors.append(1), slots=4)

    async def scenario() -> list[bool]:
        # Four keys take the four slots and use up their limit of one.
        out = [(await limiter.hit(f"k{i}", 1)).allowed for i in range(4)]
        out += [(await limiter.hit(f"k{i}", 1)).allowed for i in range(4)]
        out += [(await limiter.hit("k-fifth", 1)).allowed for _ in range(2)]
        await limiter.close()
        return out

    assert asyncio.run(scenario()) == [True] * 4 + [False] * 4 + [True, True]
    assert len(errors) == 2


def test_a_file_that_cannot_be_made_fails_open(tmp_path: Path) -> None:
    errors: list[int] = []
    limiter = FileRateLimiter(tmp_path / "missing" / "rl", on_error=lambda: errors.append(1))

    async def scenario() -> list[bool]:
        out = [(await limiter.hit("k", 1)).allowed for _ in range(2)]
        await limiter.close()
        return out

    assert asyncio.run(scenario()) == [True, True]
    assert len(errors) == 2


def test_a_minute_from_the_future_in_the_file_does_not_hold_counts_after_the_clock_is_set_back(
    tmp_path: Path,
) -> None:
    now = [6_000_000.0 + 3600 + 10]  # an hour fast
    path = tmp_path / "rl"

    async def scenario() -> tuple[bool, bool, int]:
        fast = FileRateLimiter(path, clock=lambda: now[0])
        assert (await fast.hit("k", 1)).allowed
        refused = not (await fast.hit("k", 1)).allowed
        await fast.close()
        now[0] -= 3600  # the clock corrected; a restarted process reads the same file
        again = FileRateLimiter(path, clock=lambda: now[0])
        fresh = await again.hit("k", 1)
        await again.close()
        return refused, fresh.allowed, fresh.reset

    assert asyncio.run(scenario()) == (True, True, 50)


def test_a_hit_counted_in_the_minute_another_process_began_resets_with_that_minute(
    tmp_path: Path,
) -> None:
    start = 6_000_000.0  # a whole minute
    path = tmp_path / "rl"

    async def scenario() -> tuple[int, int, bool]:
        ahead = FileRateLimiter(path, clock=lambda: start + 0.01)
        behind = FileRateLimiter(path, clock=lambda: start - 0.05)  # read its clock earlier
        await ahead.hit("k", 2)
        late = await behind.hit("k", 2)  # the second hit of the new minute, not the first
        over = await behind.hit("k", 2)
        await ahead.close()
        await behind.close()
        return late.remaining, over.reset, over.allowed

    assert asyncio.run(scenario()) == (0, 60, False)
