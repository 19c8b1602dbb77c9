"""Authenticate a request's key, enforce its scope and its rate limit.

Keys are looked up by their visible prefix and cached for a few seconds per process
(so revocation takes effect everywhere within `cache_seconds` ≤ 10 s). The presented
token is compared with the stored hash in constant time and never logged. Last-used
times are collected in memory and written in one batch now and then.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

import structlog
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import Scope as AsgiScope

from glowing_fiesta.auth import keys
from glowing_fiesta.auth.ratelimit import Decision, RateLimiter
from glowing_fiesta.errors import Forbidden, RateLimited, Unauthenticated
from glowing_fiesta.model import ApiKey, Scope
from glowing_fiesta.storage.base import Storage
from glowing_fiesta.telemetry import Telemetry

log = structlog.get_logger(__name__)


def token_from(headers: Mapping[str, str]) -> str | None:
    """The key from `Authorization: Bearer …` or `X-API-Key`."""
    auth = headers.get("authorization")
    if auth:
        # Split at any white space: a tab after `Bearer` is still a key sent.
        parts = auth.split(None, 1)
        if len(parts) == 2 and parts[0].lower() == "bearer":
            return parts[1].strip()
    api_key = headers.get("x-api-key")
    return api_key.strip() if api_key else None


def ratelimit_headers(decision: Decision) -> dict[str, str]:
    return {
        "X-RateLimit-Limit": str(decision.limit),
        "X-RateLimit-Remaining": str(decision.remaining),
        "X-RateLimit-Reset": str(decision.reset),
    }


@dataclass(frozen=True, slots=True)
class Principal:
    key: ApiKey
    decision: Decision


class Authenticator:
    def __init__(
        self,
        storage: Storage,
        limiter: RateLimiter,
        telemetry: Telemetry,
        *,
        default_limit: int,
        cache_seconds: float = 5.0,
    ) -> None:
        self.storage = storage
        self.limiter = limiter
        self.telemetry = telemetry
        self.default_limit = default_limit
        self.cache_seconds = cache_seconds
        self._cache: dict[str, tuple[float, ApiKey | None]] = {}
        self._touched: dict[int, float] = {}

    async def _lookup(self, prefix: str) -> ApiKey | None:
        now = time.monotonic()
        hit = self._cache.get(prefix)
        if hit is not None and now - hit[0] < self.cache_seconds:
            return hit[1]
        key = await self.storage.key_by_prefix(prefix)
        if len(self._cache) > 10_000:  # unknown prefixes must not grow memory forever
            self._cache.clear()
        self._cache[prefix] = (now, key)
        return key

    async def verify(self, token: str | None) -> ApiKey:
        """The active key for `token`, or `Unauthenticated`."""
        if not token:
            raise Unauthenticated("an API key is required (Authorization: Bearer <key>)")
        prefix = keys.prefix_of(token)
        key = await self._lookup(prefix) if prefix else None
        if key is None or not keys.matches(token, key.secret_hash):
            raise Unauthenticated("the API key is not valid")
        if not key.active:
            raise Unauthenticated("the API key has been revoked")
        return key

    async def request(self, request: Request, scope: Scope | None) -> Principal:
        """`admit` for a Starlette request."""
        return await self.admit(request.scope, request.headers, scope)

    async def admit(
        self, asgi_scope: AsgiScope, headers: Headers, scope: Scope | None
    ) -> Principal:
        """Authenticate an API request, count it against the key's limit, check the scope
        (None: any key, for a path that serves nothing).

        The rate-limit headers are left in the request's state (`request.state` to
        Starlette) so that every authenticated response carries them, errors included.
        """
        key = await self.verify(token_from(headers))
        decision = await self.limiter.hit(key.prefix, key.rate_limit or self.default_limit)
        self._touched[key.id] = time.time()
        asgi_scope.setdefault("state", {})["ratelimit_headers"] = ratelimit_headers(decision)
        if not decision.allowed:
            self.telemetry.rate_limited.inc()
            raise RateLimited(
                f"rate limit of {decision.limit} requests per minute exceeded", decision.reset
            )
        if scope is not None and scope not in key.scopes:
            raise Forbidden(f"this key lacks the '{scope.value}' scope")
        return Principal(key, decision)

    async def flush_last_used(self) -> None:
        touched, self._touched = self._touched, {}
        if touched:
            await self.storage.touch_keys(touched)
