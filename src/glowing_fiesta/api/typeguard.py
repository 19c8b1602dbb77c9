"""Request-time type checks, for layouts whose writer cannot answer the client.

With the Redis queue a 202 goes out before any writer sees the batch, so a counter
write to a value metric must be refused here (409). A metric the database does not know
yet is created here, with the type of this first write, before the batch is queued: so
of two concurrent first writes with different types one gets 409, as in the embedded
layout, instead of both getting 202 and a worker dropping one. Types never change while
a metric exists, so known types are cached for `ttl` seconds (the cache only errs after
a DELETE, for at most `ttl`; the writer then rejects the batch and logs
`queue_batch_dropped`).
"""

from __future__ import annotations

import time

from glowing_fiesta.errors import Detail, TypeConflict
from glowing_fiesta.model import MetricType, PointBatch
from glowing_fiesta.storage.base import Storage


class TypeGuard:
    def __init__(self, storage: Storage, ttl: float = 10.0) -> None:
        self.storage = storage
        self.ttl = ttl
        self._known: dict[str, tuple[float, MetricType]] = {}

    async def check(self, batch: PointBatch) -> None:
        now = time.monotonic()
        names = {p.metric for p in batch.points}
        stale = [n for n in names if n not in self._known or now - self._known[n][0] > self.ttl]
        if stale:
            found = await self.storage.get_metrics(stale)
            missing = {p.metric: p.type for p in batch.points if p.metric not in found}
            if missing:
                found.update(await self.storage.ensure_metrics(missing))
            if len(self._known) > 100_000:
                self._known.clear()
            for name, metric in found.items():
                self._known[name] = (now, metric.type)
        details = [
            Detail(
                f"metric {p.metric!r} is a {known[1].value}, not a {p.type.value}",
                field="metric",
                index=i,
            )
            for i, p in enumerate(batch.points)
            if (known := self._known.get(p.metric)) is not None and known[1] is not p.type
        ]
        if details:
            raise TypeConflict(details[0].message, details)
