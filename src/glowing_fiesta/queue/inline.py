"""The in-process queue of the embedded layout: group commit for concurrent requests.

Requests put batches and wait; the writer task (same process) claims everything that
has accumulated, commits it in one transaction and settles each request's future. While
one commit runs, new requests pile up and ride the next one, so the commit rate adapts
to the load without a timer.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence

from glowing_fiesta.errors import GlowingFiestaError, TypeConflict, Unavailable
from glowing_fiesta.model import PointBatch
from glowing_fiesta.queue.base import Delivery


class InlineQueue:
    def __init__(self, max_points: int = 200_000) -> None:
        self._max_points = max_points
        self._items: deque[Delivery] = deque()
        self._points = 0
        self._wake = asyncio.Event()
        self._closed = False

    async def start(self) -> None:
        self._closed = False

    async def close(self) -> None:
        self._closed = True
        self._wake.set()

    async def ping(self) -> None:
        if self._closed:
            raise Unavailable("the queue is shut down", 1)

    async def check_room(self, points: int) -> None:
        self._check_room(points)

    def _check_room(self, points: int) -> None:
        # Plain, not a coroutine: `put` runs it on every single write.
        if self._closed:
            raise Unavailable("the service is shutting down", 1)
        if self._points + points > self._max_points:
            raise Unavailable("the writer is behind; retry shortly", 1)

    async def put(self, batch: PointBatch) -> None:
        self._check_room(len(batch))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.add_done_callback(_retrieve)
        self._items.append(Delivery(batch, token=done))
        self._points += len(batch)
        self._wake.set()
        # If the caller is cancelled (its client went away), so is `done`, but the batch
        # stays queued and is written all the same; `ack` passes over a settled future.
        # (Not `asyncio.shield`: its second future and callbacks were ~7% of a single
        # write's cost to the app.)
        await done

    async def claim(self, max_points: int, timeout: float) -> list[Delivery]:
        if not self._items:
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except TimeoutError:
                return []
        out: list[Delivery] = []
        taken = 0
        while self._items and (not out or taken + len(self._items[0].batch) <= max_points):
            item = self._items.popleft()
            taken += len(item.batch)
            out.append(item)
        self._points -= taken
        return out

    async def ack(
        self, deliveries: Sequence[Delivery], results: Sequence[TypeConflict | None]
    ) -> None:
        for delivery, result in zip(deliveries, results, strict=True):
            fut = delivery.token
            assert isinstance(fut, asyncio.Future)  # noqa: S101
            if fut.done():  # pragma: no cover - settled twice only by a writer bug
                continue
            if result is None:
                fut.set_result(None)
            else:
                fut.set_exception(result)

    async def nack(
        self, deliveries: Sequence[Delivery], error: GlowingFiestaError, *, alone: bool = False
    ) -> None:
        for delivery in deliveries:
            fut = delivery.token
            assert isinstance(fut, asyncio.Future)  # noqa: S101
            if not fut.done():
                fut.set_exception(error)

    async def wait_written(self, timeout: float) -> None:
        # A put returns only once its batch is committed: whatever was acknowledged is
        # written already.
        return

    async def bury(self, deliveries: Sequence[Delivery], error: GlowingFiestaError) -> None:
        # Each request still waits for its batch: it gets the error, and nothing is kept.
        await self.nack(deliveries, error)

    def depth(self) -> int:
        return len(self._items)

    async def refresh_depth(self) -> int:
        return self.depth()


def _retrieve(fut: asyncio.Future[None]) -> None:
    # Mark the outcome as seen: the request that waited for it may have gone away, and
    # its error is already counted and answered elsewhere.
    if not fut.cancelled():
        fut.exception()
