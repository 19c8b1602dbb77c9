"""The queue interface.

Contracts:
- `put(batch)` returns only when the batch is durable: committed to storage (inline
  queue) or persisted by the broker (Redis). It raises `Unavailable` under backpressure
  or when the broker is down, and `TypeConflict` when the inline writer rejects the batch.
- `claim` hands the writer up to `max_points` points' worth of deliveries, waiting at
  most `timeout` seconds for the first one.
- `ack` settles deliveries once the writer committed them (with the per-delivery result
  from storage); `nack` settles them as failed, leaving them to be retried where the
  queue can redeliver; `bury` puts aside those that no transaction can write.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from glowing_fiesta.errors import GlowingFiestaError, TypeConflict
from glowing_fiesta.model import PointBatch


@dataclass(slots=True)
class Delivery:
    batch: PointBatch
    # Redelivered entries must be de-duplicated by the writer; inline ones never are.
    redeliverable: bool = False
    token: object = field(default=None, repr=False)


class Queue(Protocol):
    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise `Unavailable` unless the queue answers now."""

    async def check_room(self, points: int) -> None:
        """Raise `Unavailable` unless a `put` of `points` points made now would be taken:
        the queue answers and is not full (a `put` may still fail after this)."""

    async def put(self, batch: PointBatch) -> None: ...

    async def claim(self, max_points: int, timeout: float) -> list[Delivery]: ...

    async def ack(
        self, deliveries: Sequence[Delivery], results: Sequence[TypeConflict | None]
    ) -> None: ...

    async def nack(
        self, deliveries: Sequence[Delivery], error: GlowingFiestaError, *, alone: bool = False
    ) -> None:
        """`alone`: each failed in a transaction of its own, the database answering
        (not `Unavailable`): where they come back, they come with at least one new
        delivery, so that what fails every time is tried beside what may not."""

    async def wait_written(self, timeout: float) -> None:
        """Return once every batch acknowledged before the call is written (the
        writers settled it), or raise `Unavailable` after `timeout` seconds."""

    async def bury(self, deliveries: Sequence[Delivery], error: GlowingFiestaError) -> None:
        """Settle deliveries that no transaction can write (the writer wrote others
        beside them): kept aside where the queue can keep them, for an operator, never
        delivered again; refused to their waiting requests otherwise."""

    def depth(self) -> int:
        """Batches waiting to be written, as last seen (for /metrics)."""

    async def refresh_depth(self) -> int:
        """Batches waiting to be written now, asked of the queue itself (a scrape of
        /metrics); `depth()` returns it until seen again."""
