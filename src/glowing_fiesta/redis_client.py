"""The one way this service opens a Redis client (the queue's and the rate limiter's)."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError


def connect(url: str, **options: Any) -> aioredis.Redis:
    """A client for `url`; `options` go to redis-py (timeouts).

    A command that finds its pooled connection closed (Redis restarted since it was last
    used) is sent once more on a new one. `from_url` clients retry nothing by default,
    so after a restart every pooled connection failed one request with a 503, and
    `/ready` reported Redis down while it answered. Only a closed connection is retried,
    not a timeout: a Redis that does not answer must turn into a 503 after one timeout.
    A command that did run before its connection closed may run twice; both callers
    allow that (a batch `XADD`ed twice is written once, by its id; a rate limit counts
    one request more)."""
    retry = Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))
    return aioredis.Redis.from_url(url, retry=retry, **options)
