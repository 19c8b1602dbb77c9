"""The composition root: builds every component from settings. Nothing else does."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import structlog
from starlette.applications import Starlette

from glowing_fiesta.api.app import create_app
from glowing_fiesta.api.auth import Authenticator
from glowing_fiesta.api.services import Services
from glowing_fiesta.auth.ratelimit import MemoryRateLimiter, RateLimiter
from glowing_fiesta.ingest.validate import Rules
from glowing_fiesta.logs import configure as configure_logging
from glowing_fiesta.query import QueryService
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
    queue: InlineQueue
    limiter: RateLimiter
    telemetry: Telemetry
    services: Services
    writer: Writer
    retention: Retention


def build(settings: Settings) -> Components:
    if settings.redis_url:
        log.warning(
            "redis_not_supported_yet",
            message="GF_REDIS_URL is set but this version runs the in-process queue",
        )
    telemetry = Telemetry()
    storage = SqlStorage(settings.database_url, sqlite_synchronous=settings.sqlite_synchronous)
    queue = InlineQueue(max_points=settings.writer_max_points * 10)
    limiter = MemoryRateLimiter()
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
    )
    writer = Writer(queue, storage, telemetry, max_points=settings.writer_max_points)
    retention = Retention(
        storage,
        telemetry,
        raw_days=settings.retention_days,
        rollup_days=settings.rollup_retention_days,
    )
    return Components(settings, storage, queue, limiter, telemetry, services, writer, retention)


@dataclass
class EmbeddedRuntime:
    """Runs beside the routes in `serve`: the writer, key last-used flushes, retention."""

    components: Components
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def start(self) -> None:
        c = self.components
        await c.storage.open()
        await c.queue.start()
        self._tasks = [
            asyncio.create_task(c.writer.run(), name="writer"),
            asyncio.create_task(_every(10.0, c.services.auth.flush_last_used), name="keys"),
            asyncio.create_task(
                _every(c.settings.retention_interval_seconds, c.retention.run, first=30.0),
                name="retention",
            ),
        ]

    async def stop(self) -> None:
        c = self.components
        # Refuse new writes, let the writer finish its commit, then drain what is queued
        # so that nothing a client is waiting for is dropped.
        await c.queue.close()
        c.writer.stop()
        writer_task, *others = self._tasks
        for task in others:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writer_task
        while c.queue.depth():
            await c.writer.step()
        with contextlib.suppress(Exception):
            await c.services.auth.flush_last_used()
        await c.storage.close()


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
    return create_app(components.services, EmbeddedRuntime(components))


def app_factory() -> Starlette:
    """Entry point for uvicorn (`--factory`): settings from the environment."""
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    return create_app_from(settings)
