"""The writer: claim from the queue → storage.apply (one transaction) → ack.

The loop has a fixed shape: stop event, claim with a timeout, one commit, settle, one
logged catch-all. A failed commit is never acknowledged: inline waiters get a 503 and
redeliverable entries stay pending in the broker.
"""

from __future__ import annotations

import asyncio
import time

import structlog

from glowing_fiesta.errors import GlowingFiestaError, Unavailable
from glowing_fiesta.queue.base import Delivery, Queue
from glowing_fiesta.storage.base import Storage, WriteItem
from glowing_fiesta.telemetry import Telemetry

log = structlog.get_logger(__name__)
BURY_AFTER = 3
# A failure that repeats (an entry no transaction can write, retried every `retry_delay`
# with nothing beside it to prove it the cause) logs its traceback once in this many
# seconds, and a line with a count in between.
TRACE_EVERY = 60.0


class Writer:
    def __init__(
        self,
        queue: Queue,
        storage: Storage,
        telemetry: Telemetry,
        *,
        max_points: int = 20_000,
        idle_timeout: float = 1.0,
        retry_delay: float = 0.5,
    ) -> None:
        self.queue = queue
        self.storage = storage
        self.telemetry = telemetry
        self.max_points = max_points
        self.idle_timeout = idle_timeout
        self.retry_delay = retry_delay
        self._stop = asyncio.Event()
        # Failures alone of redeliverable entries, by their token (see `_write_alone`).
        self._strikes: dict[object, int] = {}
        # The last failure logged with its traceback, when, and how often it came since.
        self._traced: tuple[str, float] = ("", 0.0)
        self._repeats = 0

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        """Write until `stop()`; the commit under way when it is called completes."""
        while not self._stop.is_set():
            try:
                await self.step()
            except asyncio.CancelledError:
                raise
            except Exception:  # the loop must survive anything one batch does
                log.exception("writer_step_failed")
                await asyncio.sleep(self.retry_delay)

    async def step(self) -> int:
        """Claim and write one group; returns the number of points written."""
        deliveries = await self.queue.claim(self.max_points, self.idle_timeout)
        self.telemetry.queue_depth.set(self.queue.depth())
        if not deliveries:
            return 0
        return await self.write(deliveries)

    async def write(self, deliveries: list[Delivery]) -> int:
        """One transaction for all `deliveries`, then settle them with the queue."""
        items = [WriteItem(d.batch, dedupe=d.redeliverable) for d in deliveries]
        points = sum(len(d.batch) for d in deliveries)
        started = time.perf_counter()
        try:
            results = await self.storage.apply(items)
        except GlowingFiestaError as exc:
            log.warning("writer_commit_failed", error=exc.message, points=points)
            await self._failed(deliveries, exc)
            return 0
        except Exception as exc:
            self._log_failure(exc, points=points, batches=len(deliveries))
            if len(deliveries) > 1:
                return await self._write_alone(deliveries)
            await self._failed(deliveries, _failure(exc), alone=True)
            return 0
        self.telemetry.writer_seconds.observe(time.perf_counter() - started)
        self.telemetry.writer_batch_points.observe(points)
        if self._strikes:  # written after all: its failures were passing ones
            for delivery in deliveries:
                self._strikes.pop(delivery.token, None)
        await self.queue.ack(deliveries, results)
        return sum(len(d.batch) for d, r in zip(deliveries, results, strict=True) if r is None)

    async def _write_alone(self, deliveries: list[Delivery]) -> int:
        """After a group failed for a reason other than the database being unavailable:
        each delivery in a transaction of its own. One that fails alone while others
        are written is what fails (data no transaction can write, such as a stored cell
        it must merge with that is corrupt), not the database: after `BURY_AFTER` such
        tries it is buried (kept aside by the queue, see `Queue.bury`) instead of
        failing every group it is read with, for ever. If none is written, the cause is
        likely the database: all are retried."""
        written = 0
        failed: list[tuple[Delivery, GlowingFiestaError]] = []
        for i, delivery in enumerate(deliveries):
            try:
                results = await self.storage.apply(
                    [WriteItem(delivery.batch, dedupe=delivery.redeliverable)]
                )
            except GlowingFiestaError as exc:  # unavailable now: retry the rest later
                await self._failed([d for d, _ in failed] + deliveries[i:], exc)
                return written
            except Exception as exc:
                failed.append((delivery, _failure(exc)))
                continue
            self._strikes.pop(delivery.token, None)
            await self.queue.ack([delivery], results)
            written += len(delivery.batch) if results[0] is None else 0
        if len(failed) == len(deliveries):
            await self._failed(deliveries, failed[0][1], alone=True)
            return written
        for delivery, error in failed:
            self.telemetry.writer_errors.inc()
            # A redeliverable entry is buried only once it has failed alone, beside
            # written ones, BURY_AFTER times: a passing error (a dropped connection, a
            # deadlock the driver did not report as one) must not put a good batch aside.
            # An inline batch's request waits: it gets the error now.
            strikes = BURY_AFTER
            if delivery.redeliverable:
                strikes = self._strikes.get(delivery.token, 0) + 1
            if strikes < BURY_AFTER:
                if len(self._strikes) > 10_000:
                    self._strikes.clear()
                self._strikes[delivery.token] = strikes
                log.warning(
                    "writer_batch_failed_alone",
                    batch=delivery.batch.batch_id,
                    strikes=strikes,
                    error=error.message,
                )
                await self.queue.nack([delivery], error, alone=True)
                continue
            self._strikes.pop(delivery.token, None)
            log.error(
                "queue_batch_unwritable",
                batch=delivery.batch.batch_id,
                points=len(delivery.batch),
                error=error.message,
            )
            await self.queue.bury([delivery], error)
        return written

    def _log_failure(self, exc: Exception, **fields: object) -> None:
        error = f"{exc.__class__.__name__}: {exc}"
        now = time.monotonic()
        if error == self._traced[0] and now - self._traced[1] < TRACE_EVERY:
            self._repeats += 1
            log.error("writer_commit_failed", error=error, repeats=self._repeats, **fields)
            return
        self._traced = (error, now)
        self._repeats = 0
        log.error("writer_commit_failed", error=error, exc_info=exc, **fields)

    async def _failed(
        self, deliveries: list[Delivery], error: GlowingFiestaError, *, alone: bool = False
    ) -> None:
        self.telemetry.writer_errors.inc()
        await self.queue.nack(deliveries, error, alone=alone)
        # The database is likely down and redeliverable entries will come straight back:
        # do not spin on it.
        await asyncio.sleep(self.retry_delay)


def _failure(exc: Exception) -> GlowingFiestaError:
    return Unavailable(f"the write failed ({exc.__class__.__name__}); retry", 1)
