"""Per-key rate limits: a fixed one-minute window counted per request.

A key with limit N may send N requests in each wall-clock minute (so always N in a
burst after a quiet minute). `Decision.reset` is the whole seconds until the window
ends, which is also the `Retry-After` of a rejected request.

The in-memory limiter is exact for one process (the embedded default runs one server
process); the Redis limiter shares counts across processes and machines.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import structlog

log = structlog.get_logger(__name__)

WINDOW = 60


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset: int


class RateLimiter(Protocol):
    async def hit(self, key: str, limit: int) -> Decision:
        """Count one request for `key` and say whether it is within `limit`."""

    async def close(self) -> None: ...


def decide(count: int, limit: int, now: float) -> Decision:
    """The decision for the `count`-th request of the current window."""
    window_end = (math.floor(now / WINDOW) + 1) * WINDOW
    reset = max(1, math.ceil(window_end - now))
    return Decision(count <= limit, limit, max(0, limit - count), reset)


class FailOpen:
    """What a shared limiter does with a request it could not count: lets it through
    (the caller answers `decide(1, …)`), counts it with `on_error` and logs at most
    every 10 s."""

    def __init__(self, on_error: Callable[[], None] | None) -> None:
        self._on_error = on_error
        self._last_log = 0.0

    def __call__(self, now: float, event: str, **details: object) -> None:
        if self._on_error is not None:
            self._on_error()
        if now - self._last_log > 10:
            self._last_log = now
            log.warning(event, policy="fail_open", **details)


class MemoryRateLimiter:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._window = -1
        self._counts: dict[str, int] = {}

    async def hit(self, key: str, limit: int) -> Decision:
        now = self._clock()
        window = math.floor(now / WINDOW)
        if window != self._window:
            # A new window: forget every count at once (bounded memory, O(1) per hit).
            self._window = window
            self._counts = {}
        count = self._counts.get(key, 0) + 1
        self._counts[key] = count
        return decide(count, limit, now)

    async def close(self) -> None:
        return None
