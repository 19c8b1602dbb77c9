"""The composition root: builds every component from settings. Nothing else does."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import structlog
from starlette.applications import Starlette

from glowing_fiesta.api.app import create_app
from glowing_fiesta.api.auth import Authenticator
from glowing_fiesta.api.services import Pingable, Services
from glowing_fiesta.api.typeguard import TypeGuard
from glowing_fiesta.auth.ratelimit import MemoryRateLimiter, RateLimiter
from glowing_fiesta.ingest.validate import Rules
from glowing_fiesta.logs import configure as configure_logging
from glowing_fiesta.query import QueryService
from glowing_fiesta.queue.base import Queue
from glowing_fiesta.queue.inline import InlineQueue
from glowing_fiesta.retention import Retention
from glowing_fiesta.settings import Settings, load_settings
from glowing_fiesta.storage.sql import SqlStorage
from glowing_fiesta.telemetry import Telemetry
from glowing_fiesta.writer import Writer

log = structlog.get_logger(__name__)


@dataclass
class Components:
    settings: Settings
    storage: SqlStorage
    queue: Queue
    limiter: RateLimiter
    telemetry: Telemetry
    services: Services
    writer: Writer
    retention: Retention

    @property
    def embedded(self) -> bool:
        """True when this process writes to storage itself (no Redis queue)."""
        return isinstance(self.queue, InlineQueue)

    async def close(self) -> None:
        try:
            await self.limiter.close()
            await self.queue.close()
            await self.storage.close()
        finally:
            self.telemetry.close()


def build(settings: Settings) -> Components:
    """Every component for `serve`, `worker` and the CLI, chosen from settings."""
    telemetry = Telemetry(shared_queue=bool(settings.redis_url))
    storage = SqlStorage(settings.database_url, sqlite_synchronous=settings.sqlite_synchronous)
    queue: Queue
    limiter: RateLimiter
    readiness: dict[str, Pingable] = {"database": storage}
    if settings.redis_url:
        # Imported only here: the Redis client is ~5 MB of `serve`'s memory in the
        # embedded layout, which never uses it.
        from glowing_fiesta.auth.ratelimit_redis import RedisRateLimiter
        from glowing_fiesta.queue.redis import RedisQueue

        queue = RedisQueue(
            settings.redis_url,
            prefix=settings.redis_prefix,
            max_entries=settings.queue_max_batches,
            claim_idle=settings.queue_claim_idle_seconds,
        )
        limiter = RedisRateLimiter(
            settings.redis_url, prefix=settings.redis_prefix, on_error=telemetry.limiter_errors.inc
        )
        readiness["redis"] = queue
    else:
        queue = InlineQueue(max_points=settings.writer_max_points * 10)
        limiter = _embedded_limiter(settings, telemetry)
        readiness["queue"] = queue
    auth = Authenticator(
        storage,
        limiter,
        telemetry,
        default_limit=settings.rate_limit_per_minute,
        cache_seconds=settings.key_cache_seconds,
    )
    rules = Rules(
        retention_seconds=settings.retention_days * 86400,
        clock_skew_seconds=settings.clock_skew_seconds,
        max_batch_points=settings.max_batch_points,
    )
    services = Services(
        storage=storage,
        queue=queue,
        query=QueryService(storage),
        auth=auth,
        telemetry=telemetry,
        rules=rules,
        max_body_bytes=settings.max_body_bytes,
        readiness=readiness,
        type_guard=TypeGuard(storage, queue) if settings.redis_url else None,
    )
    writer = Writer(queue, storage, telemetry, max_points=settings.writer_max_points)
    retention = Retention(
        storage,
        telemetry,
        raw_days=settings.retention_days,
        rollup_days=settings.rollup_retention_days,
    )
    return Components(settings, storage, queue, limiter, telemetry, services, writer, retention)


def _embedded_limiter(settings: Settings, telemetry: Telemetry) -> RateLimiter:
    """Counts shared by every `serve` process on the SQLite file (`serve --workers N`);
    in one process's memory for other databases without Redis."""
    database = settings.sqlite_path()
    if database is None:
        return MemoryRateLimiter()
    from glowing_fiesta.auth.ratelimit_file import FileRateLimiter, path_beside

    return FileRateLimiter(path_beside(database), on_error=telemetry.limiter_errors.inc)


@dataclass
class ServeRuntime:
    """What runs beside the routes in `serve`. Embedded layout: the writer, retention and
    key last-used flushes. Production layout (Redis): only the flushes; workers write."""

    components: Components
    _writer: asyncio.Task[None] | None = None
    _others: list[asyncio.Task[None]] = field(default_factory=list)

    async def start(self) -> None:
        c = self.components
        await c.storage.open()
        await c.queue.start()
        _calm_garbage_collector()
        self._others = [asyncio.create_task(_every(10.0, c.services.auth.flush_last_used))]
        if c.embedded:
            if c.settings.rollup_process:
                await c.storage.start_rollups(
                    log_level=c.settings.log_level, log_format=c.settings.log_format
                )
            self._writer = asyncio.create_task(c.writer.run(), name="writer")
            self._others.append(asyncio.create_task(_every(1.0, c.storage.maintain)))
            self._others.append(
                asyncio.create_task(
                    _every(c.settings.retention_interval_seconds, c.retention.run, first=30.0)
                )
            )

    async def stop(self) -> None:
        c = self.components
        for task in self._others:
            task.cancel()
        if self._writer is not None:
            # Refuse new writes, let the writer finish its commit, then drain what is
            # queued, so that nothing a client is waiting for is dropped.
            await c.queue.close()
            c.writer.stop()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
            while c.queue.depth():
                await c.writer.step()
        with contextlib.suppress(Exception):
            await c.services.auth.flush_last_used()
        await c.close()


async def run_worker(components: Components, stop: asyncio.Event) -> None:
    """`glowing-fiesta worker`: consume the Redis queue until `stop` is set.

    The commit under way when `stop` is set completes and is acknowledged; entries not
    yet acknowledged stay pending in Redis for the next worker.
    """
    c = components
    await c.storage.open()
    await c.queue.start()
    writer = asyncio.create_task(c.writer.run(), name="writer")
    maintenance = asyncio.create_task(_every(1.0, c.storage.maintain))
    retention = asyncio.create_task(
        _every(c.settings.retention_interval_seconds, c.retention.run, first=30.0)
    )
    log.info("worker_started", queue=getattr(c.queue, "stream", "inline"))
    await stop.wait()
    c.writer.stop()
    retention.cancel()
    maintenance.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await writer
    await c.close()
    log.info("worker_stopped")


def _calm_garbage_collector() -> None:
    """Keep full collections off the request path's tail latency.

    Everything alive after start-up (modules, SQLAlchemy's caches) is moved out of the
    collector's sight, so a full collection only walks what requests create. Young
    collections run every 50,000 allocations instead of 700: requests free almost all
    they allocate by reference counting, and at the default each collection walked the
    in-flight requests' objects again (8.7% of `serve`'s event-loop thread under
    single-point writes; after this, none measurable).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


async def _every(
    seconds: float, job: Callable[[], Awaitable[object]], *, first: float | None = None
) -> None:
    await asyncio.sleep(seconds if first is None else first)
    while True:
        started = asyncio.get_running_loop().time()
        try:
            await job()
        except Exception:  # a periodic job must never take the service down
            log.exception("periodic_job_failed", job=getattr(job, "__qualname__", str(job)))
        await asyncio.sleep(max(0.0, seconds - (asyncio.get_running_loop().time() - started)))


def create_app_from(settings: Settings) -> Starlette:
    components = build(settings)
    return create_app(components.services, ServeRuntime(components))


def app_factory() -> Starlette:
    """Entry point for uvicorn (`--factory`): settings from the environment."""
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    return create_app_from(settings)
