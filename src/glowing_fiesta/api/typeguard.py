"""Request-time type checks, for layouts whose writer cannot answer the client.

With the Redis queue a 202 goes out before any writer sees the batch, so a counter
write to a value metric must be refused here (409). A metric the database does not know
yet is created here, with the type of this first write, before the batch is queued: so
of two concurrent first writes with different types one gets 409, as in the embedded
layout, instead of both getting 202 and a worker dropping one. Types never change while
a metric exists, so known types are cached for `ttl` seconds (the cache only errs after
a DELETE, for at most `ttl`; the writer then rejects the batch and logs
`queue_batch_dropped`).

A refused write creates nothing (SPEC §2): a batch that conflicts with a stored metric
is refused before any of its new metrics is created, their creation is all or none,
and it waits for the queue to say it would take the batch (Redis down or the stream
full: 503 with nothing created). Metrics are never deleted here to undo a write: a
batch of another request, queued for the same new name meanwhile, could be written
under the deleted id and lost. So a write whose `XADD` fails after its new metrics were
created (Redis gone in the moment between, or the stream filled by other requests in
that moment) leaves them, empty, with their types.
"""

from __future__ import annotations

import time

from glowing_fiesta.errors import Detail, TypeConflict
from glowing_fiesta.model import Metric, MetricType, PointBatch
from glowing_fiesta.queue.base import Queue
from glowing_fiesta.storage.base import Storage


class TypeGuard:
    def __init__(self, storage: Storage, queue: Queue, ttl: float = 10.0) -> None:
        self.storage = storage
        self.queue = queue
        self.ttl = ttl
        self._known: dict[str, tuple[float, MetricType]] = {}

    async def check(self, batch: PointBatch) -> None:
        """Refuse the batch (TypeConflict) unless every point's type is its metric's,
        creating the metrics it is the first write of."""
        now = time.monotonic()
        names = {p.metric for p in batch.points}
        stale = [n for n in names if n not in self._known or now - self._known[n][0] > self.ttl]
        if stale:
            found = await self.storage.get_metrics(stale)
            self._remember(found, now)
            missing = {p.metric: p.type for p in batch.points if p.metric not in found}
            if missing and not self._conflicts(batch):
                # Unavailable (503) before anything is created: Redis down, stream full.
                await self.queue.check_room(len(batch))
                self._remember(await self.storage.ensure_metrics(missing), now)
        details = self._conflicts(batch)
        if details:
            # Lost a race to a first write of the other type: ensure_metrics created none.
            raise TypeConflict(details[0].message, details)

    def _remember(self, found: dict[str, Metric], now: float) -> None:
        if len(self._known) > 100_000:
            self._known.clear()
        for name, metric in found.items():
            self._known[name] = (now, metric.type)

    def _conflicts(self, batch: PointBatch) -> list[Detail]:
        return [
            Detail(
                f"metric {p.metric!r} is a {known[1].value}, not a {p.type.value}",
                field="metric",
                index=i,
            )
            for i, p in enumerate(batch.points)
            if (known := self._known.get(p.metric)) is not None and known[1] is not p.type
        ]
