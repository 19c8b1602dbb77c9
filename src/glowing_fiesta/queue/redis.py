"""The Redis Streams queue of the production layout.

`put` XADDs the validated batch and returns once Redis has accepted it (durable as far
as Redis' own persistence goes: AOF with `appendfsync always` for every write, `everysec`
for all but the last second). Writers read with a consumer group; an entry stays
pending until the writer's transaction committed and it is XACKed (and XDELed, so that
the stream's length is the backlog). Entries left pending by a dead worker are taken
over with XAUTOCLAIM once idle for `claim_idle` seconds; the storage's batch-id claims
make the redelivery a no-op if the dead worker had committed before dying.

Backpressure: when the stream holds `max_entries` entries, `put` raises `Unavailable`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
import uuid
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError, ResponseError

from glowing_fiesta import redis_client
from glowing_fiesta.errors import GlowingFiestaError, TypeConflict, Unavailable
from glowing_fiesta.model import PointBatch
from glowing_fiesta.queue import codec
from glowing_fiesta.queue.base import Delivery

log = structlog.get_logger(__name__)
GROUP = "writers"
_FIELD = b"b"


class RedisQueue:
    def __init__(
        self,
        url: str,
        *,
        prefix: str = "gf",
        max_entries: int = 10_000,
        claim_idle: float = 30.0,
        consumer: str | None = None,
    ) -> None:
        self.stream = f"{prefix}:points"
        self.dead_stream = f"{prefix}:dead"
        self.max_entries = max_entries
        self.claim_idle_ms = int(claim_idle * 1000)
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._redis: aioredis.Redis = redis_client.connect(
            url,
            socket_connect_timeout=2,
            # Longer than any XREADGROUP block; a Redis that stops answering turns into
            # a 503 after this, never a request that hangs.
            socket_timeout=5,
            health_check_interval=30,
        )
        self._depth = 0
        self._next_autoclaim = 0.0
        self._autoclaim_cursor = "0-0"
        self._reread_own = True  # after a restart, our consumer name is new: harmless
        self._beside_new = False  # see `claim` and `nack(alone=...)`

    async def start(self) -> None:
        """Create the consumer group if need be. A Redis that is down now is not fatal:
        the service starts, reports not ready and answers 503 until Redis is back."""
        try:
            await self._ensure_group()
        except RedisError as exc:
            log.warning("redis_unavailable_at_start", error=str(exc))

    async def _ensure_group(self) -> None:
        try:
            await self._redis.xgroup_create(self.stream, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def close(self) -> None:
        await self._redis.aclose()

    async def ping(self) -> None:
        try:
            await self._redis.ping()
        except RedisError as exc:
            raise Unavailable(f"redis does not answer: {exc}", 2) from exc

    async def check_room(self, points: int) -> None:
        try:
            depth = await self._redis.xlen(self.stream)
        except RedisError as exc:
            raise _unavailable(exc) from exc
        self._depth = depth
        if depth >= self.max_entries:
            raise Unavailable(
                f"the write queue is full ({depth:,} batches waiting); retry shortly", 2
            )

    async def put(self, batch: PointBatch) -> None:
        await self.check_room(len(batch))
        try:
            await self._redis.xadd(self.stream, {_FIELD: codec.encode(batch)})
        except RedisError as exc:
            raise _unavailable(exc) from exc

    async def claim(self, max_points: int, timeout: float) -> list[Delivery]:
        count = max(1, max_points // 1000)
        try:
            entries = await self._stale(count)
            if not entries and self._reread_own:
                entries = await self._read("0", count, None)
                self._reread_own = bool(entries)
            if entries and self._beside_new:
                # Entries that failed alone come back with at least one new entry,
                # however many they are: one that fails every try is then tried beside
                # others that succeed, which shows that it is the entry that fails (the
                # writer buries it), and they cannot keep new entries out. Not after a
                # plain failure (the database down): new entries would only pile up in
                # this consumer's pending list.
                self._beside_new = False
                try:
                    entries += await self._read(">", max(1, count - len(entries)), None)
                except RedisError as exc:  # those already read (and now ours) still go
                    log.warning("queue_claim_failed", error=str(exc))
                    self._reread_own = True
            elif not entries:
                entries = await self._read(">", count, int(timeout * 1000))
        except ResponseError as exc:
            if "NOGROUP" in str(exc):  # Redis was down at start, or lost its data
                await self._ensure_group()
            else:
                log.warning("queue_claim_failed", error=str(exc))
            return []
        except RedisError as exc:
            log.warning("queue_claim_failed", error=str(exc))
            await asyncio.sleep(1.0)  # Redis is down: do not spin
            return []
        with contextlib.suppress(RedisError):
            self._depth = await self._redis.xlen(self.stream)
        deliveries: list[Delivery] = []
        poison: list[bytes] = []
        for entry_id, fields in entries:
            try:
                batch = codec.decode(fields[_FIELD])
            except (ValueError, KeyError, TypeError):
                log.error("queue_entry_undecodable", entry=entry_id)
                poison.append(entry_id)
                continue
            deliveries.append(Delivery(batch, redeliverable=True, token=entry_id))
        if poison:
            await self._settle(poison)
        return deliveries

    async def _read(self, start: str, count: int, block_ms: int | None) -> list[Any]:
        reply: Any = await self._redis.xreadgroup(
            GROUP, self.consumer, {self.stream: start}, count=count, block=block_ms
        )
        if not reply:
            return []
        _, entries = reply[0]
        # Own pending entries that were deleted meanwhile come back with no fields.
        return [(eid, fields) for eid, fields in entries if fields]

    async def _stale(self, count: int) -> list[Any]:
        """Entries another (dead) consumer left pending longer than the claim timeout."""
        now = time.monotonic()
        if now < self._next_autoclaim:
            return []
        reply: Any = await self._redis.xautoclaim(
            self.stream,
            GROUP,
            self.consumer,
            min_idle_time=self.claim_idle_ms,
            start_id=self._autoclaim_cursor,
            count=count,
        )
        cursor, entries = reply[0], reply[1]
        self._autoclaim_cursor = cursor.decode() if isinstance(cursor, bytes) else str(cursor)
        if self._autoclaim_cursor == "0-0":
            # A full pass found nothing more: look again in a little while.
            self._next_autoclaim = now + self.claim_idle_ms / 4000
        if entries:
            log.info("queue_entries_reclaimed", count=len(entries))
        return [(eid, fields) for eid, fields in entries if fields]

    async def _settle(self, entry_ids: list[Any], dead: list[dict[Any, Any]] | None = None) -> None:
        """Acknowledge and delete entries in one transaction, adding `dead` (the
        entries' fields) to the dead stream in the same one."""
        async with self._redis.pipeline(transaction=True) as pipe:
            for fields in dead or ():
                pipe.xadd(self.dead_stream, fields)
            pipe.xack(self.stream, GROUP, *entry_ids)
            pipe.xdel(self.stream, *entry_ids)
            await pipe.execute()

    async def ack(
        self, deliveries: Sequence[Delivery], results: Sequence[TypeConflict | None]
    ) -> None:
        for delivery, result in zip(deliveries, results, strict=True):
            if result is not None:
                # The 202 went out before the writer saw the conflict (the request-time
                # type check races with a concurrent first write): the batch is dropped,
                # and said so.
                log.error(
                    "queue_batch_dropped",
                    batch=delivery.batch.batch_id,
                    reason=result.message,
                    points=len(delivery.batch),
                )
        if deliveries:
            try:
                await self._settle([d.token for d in deliveries])
            except RedisError as exc:
                # Not acknowledged: read again (our own) and skipped by the batch-id
                # claim, so that it leaves the stream soon (a DELETE waits for that).
                log.warning("queue_ack_failed", error=str(exc))
                self._reread_own = True

    async def nack(
        self, deliveries: Sequence[Delivery], error: GlowingFiestaError, *, alone: bool = False
    ) -> None:
        # Leave the entries pending; read our own pending entries again next time.
        self._reread_own = True
        self._beside_new = self._beside_new or alone

    async def wait_written(self, timeout: float) -> None:
        # Entries are deleted from the stream once written (or put aside): those up to
        # the last id given so far are what was acknowledged before now.
        deadline = time.monotonic() + timeout
        try:
            info: Any = await self._redis.xinfo_stream(self.stream)
            last = info["last-generated-id"]
            while await self._redis.xrange(self.stream, "-", last, count=1):
                if time.monotonic() >= deadline:
                    raise Unavailable(
                        "batches accepted before this request still wait in the write queue; "
                        "retry once the workers have written them",
                        2,
                    )
                await asyncio.sleep(0.05)
        except ResponseError as exc:
            if "no such key" not in str(exc).lower():
                raise _unavailable(exc) from exc
        except RedisError as exc:
            raise _unavailable(exc) from exc

    async def bury(self, deliveries: Sequence[Delivery], error: GlowingFiestaError) -> None:
        # Moved, in one transaction, to a stream no writer reads: kept for an operator
        # to look at (`XRANGE <prefix>:dead - +`), and re-add once the cause is fixed.
        dead: list[dict[Any, Any]] = [
            {_FIELD: codec.encode(d.batch), b"error": error.message} for d in deliveries
        ]
        try:
            await self._settle([d.token for d in deliveries], dead)
        except RedisError as exc:
            # Still pending: read again (our own), and buried again.
            log.warning("queue_bury_failed", error=str(exc))
            self._reread_own = True

    def depth(self) -> int:
        return self._depth

    async def refresh_depth(self) -> int:
        self._depth = await self._redis.xlen(self.stream)
        return self._depth


def _unavailable(exc: RedisError) -> Unavailable:
    return Unavailable(f"the write queue is unavailable: {exc}", 2)
