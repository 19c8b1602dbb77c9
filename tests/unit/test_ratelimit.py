"""The in-memory per-key rate limiter with an injected clock (SPEC §2.4)."""

from __future__ import annotations

import asyncio

import pytest

from glowing_fiesta.auth.ratelimit import WINDOW, Decision, MemoryRateLimiter

# A whole minute boundary: the window [T0, T0 + 60) starts here.
T0 = 1_750_000_020.0
assert T0 % WINDOW == 0


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def hits(limiter: MemoryRateLimiter, key: str, limit: int, n: int) -> list[Decision]:
    async def go() -> list[Decision]:
        return [await limiter.hit(key, limit) for _ in range(n)]

    return asyncio.run(go())


def hit(limiter: MemoryRateLimiter, key: str, limit: int) -> Decision:
    return hits(limiter, key, limit, 1)[0]


@pytest.mark.parametrize("limit", [1, 3, 100])
def test_n_requests_are_allowed_then_the_next_is_rejected(limit: int) -> None:
    limiter = MemoryRateLimiter(clock=Clock(T0 + 5))
    decisions = hits(limiter, "k", limit, limit + 2)
    assert [d.allowed for d in decisions] == [True] * limit + [False, False]
    assert all(d.limit == limit for d in decisions)


def test_remaining_counts_down_to_zero_and_stays_there() -> None:
    limiter = MemoryRateLimiter(clock=Clock(T0 + 5))
    assert [d.remaining for d in hits(limiter, "k", 3, 5)] == [2, 1, 0, 0, 0]


@pytest.mark.parametrize(
    ("offset", "reset"),
    [
        (0.0, 60),
        (0.001, 60),
        (0.5, 60),
        (1.0, 59),
        (30.2, 30),
        (58.9, 2),
        (59.0, 1),
        (59.5, 1),
        (59.999, 1),
    ],
)
def test_reset_is_whole_seconds_until_the_window_ends_and_at_least_1(
    offset: float, reset: int
) -> None:
    decision = hit(MemoryRateLimiter(clock=Clock(T0 + offset)), "k", 10)
    assert decision.reset == reset
    assert isinstance(decision.reset, int)


def test_reset_counts_down_as_the_window_passes() -> None:
    clock = Clock(T0 + 10)
    limiter = MemoryRateLimiter(clock=clock)
    first = hit(limiter, "k", 1)
    clock.now = T0 + 40
    second = hit(limiter, "k", 1)
    assert (first.allowed, first.reset) == (True, 50)
    assert (second.allowed, second.reset) == (False, 20)


def test_a_new_window_allows_n_again() -> None:
    clock = Clock(T0 + 1)
    limiter = MemoryRateLimiter(clock=clock)
    assert [d.allowed for d in hits(limiter, "k", 3, 4)] == [True, True, True, False]
    clock.now = T0 + 59.999
    assert not hit(limiter, "k", 3).allowed
    clock.now = T0 + WINDOW
    renewed = hits(limiter, "k", 3, 4)
    assert [d.allowed for d in renewed] == [True, True, True, False]
    assert [d.remaining for d in renewed] == [2, 1, 0, 0]


def test_a_full_burst_after_a_quiet_minute() -> None:
    clock = Clock(T0 + 30)
    limiter = MemoryRateLimiter(clock=clock)
    hits(limiter, "k", 50, 60)
    clock.now += 2 * WINDOW + 7  # quiet for more than a minute
    assert all(d.allowed for d in hits(limiter, "k", 50, 50))
    assert not hit(limiter, "k", 50).allowed


def test_keys_are_counted_independently() -> None:
    limiter = MemoryRateLimiter(clock=Clock(T0 + 5))
    assert not hits(limiter, "a", 2, 3)[-1].allowed
    b = hits(limiter, "b", 2, 2)
    assert [(d.allowed, d.remaining) for d in b] == [(True, 1), (True, 0)]
    assert not hit(limiter, "a", 2).allowed


def test_each_key_is_held_to_its_own_limit() -> None:
    limiter = MemoryRateLimiter(clock=Clock(T0 + 5))
    assert [d.allowed for d in hits(limiter, "small", 1, 2)] == [True, False]
    assert all(d.allowed for d in hits(limiter, "big", 1000, 1000))


def test_close_is_harmless() -> None:
    limiter = MemoryRateLimiter(clock=Clock())
    asyncio.run(limiter.close())
    assert hit(limiter, "k", 1).allowed
