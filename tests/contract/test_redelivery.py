"""Redis queue + writer + each engine: a batch redelivered after its commit counts once;
an entry no transaction can write is put aside, not retried with the others for ever."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio as aioredis
import structlog.testing
from sqlalchemy import update

from glowing_fiesta.aggregate import VALUES_TAG
from glowing_fiesta.model import Metric, MetricType, Point, PointBatch, Resolution
from glowing_fiesta.queue import codec
from glowing_fiesta.queue.redis import RedisQueue
from glowing_fiesta.storage.base import WriteItem
from glowing_fiesta.storage.schema import rollups
from glowing_fiesta.storage.sql import SqlStorage
from glowing_fiesta.telemetry import Telemetry
from glowing_fiesta.writer import BURY_AFTER, Writer
from tests.services import redis_prefix


def test_worker_dies_after_commit_before_ack(engine_url: str) -> None:
    with redis_prefix() as (url, prefix):

        async def scenario() -> int:
            storage = SqlStorage(engine_url)
            first = RedisQueue(url, prefix=prefix, consumer="first", claim_idle=0.2)
            second = RedisQueue(url, prefix=prefix, consumer="second", claim_idle=0.2)
            await first.start()
            await second.start()
            sent = PointBatch(
                uuid.uuid4().hex,
                [
                    Point("redelivered", MetricType.COUNTER, 1.0, 1_700_000_000 + i)
                    for i in range(100)
                ],
            )
            await first.put(sent)
            # The first worker commits, then dies before its XACK.
            (delivery,) = await first.claim(10_000, 1.0)
            assert await storage.apply([WriteItem(delivery.batch, dedupe=True)]) == [None]
            # The second worker takes the entry over once it is idle, and writes it again.
            await asyncio.sleep(0.3)
            survivor = Writer(second, storage, Telemetry())
            for _ in range(20):
                if await survivor.step():
                    break
            assert await second.refresh_depth() == 0
            metric = await storage.get_metric("redelivered")
            assert metric is not None
            stored = await storage.count_points(metric.id)
            await first.close()
            await second.close()
            await storage.close()
            return stored

        assert asyncio.run(scenario()) == 100


async def _corrupt_metric(storage: SqlStorage, t0: float) -> Metric:
    """A value metric `old` whose day cell at `t0` the merge refuses: any write of a
    point of that day fails, every time."""
    seed = PointBatch(uuid.uuid4().hex, [Point("old", MetricType.VALUE, 1.0, t0)])
    assert await storage.apply([WriteItem(seed)]) == [None]
    old = await storage.get_metric("old")
    assert old is not None
    with storage._write_engine.begin() as conn:
        conn.execute(
            update(rollups)
            .where(rollups.c.metric_id == old.id, rollups.c.res == int(Resolution.DAY))
            .values(sketch=bytes([VALUES_TAG, 1, 2]))
        )
    return old


T0 = 1_700_000_000


@asynccontextmanager
async def _beside_a_corrupt_metric(
    engine_url: str, url: str, prefix: str
) -> AsyncIterator[tuple[SqlStorage, RedisQueue, Metric]]:
    """A storage holding the corrupt metric `old` (at T0), and a started queue."""
    storage = SqlStorage(engine_url)
    queue = RedisQueue(url, prefix=prefix)
    await queue.start()
    try:
        yield storage, queue, await _corrupt_metric(storage, T0)
    finally:
        await queue.close()
        await storage.close()


def test_when_every_entry_fails_alone_none_is_buried(engine_url: str) -> None:
    """Nothing written beside them: the cause may be the database, so all are kept
    pending and tried again, none put aside."""
    with redis_prefix() as (url, prefix):

        async def scenario() -> None:
            async with _beside_a_corrupt_metric(engine_url, url, prefix) as (storage, queue, _):
                for i in range(2):
                    point = Point("old", MetricType.VALUE, 2.0, T0 + i)
                    await queue.put(PointBatch(uuid.uuid4().hex, [point]))
                writer = Writer(queue, storage, Telemetry(), retry_delay=0.01)
                with structlog.testing.capture_logs() as logged:
                    for _ in range(4):
                        assert await writer.step() == 0
                raw = aioredis.Redis.from_url(url)
                assert await raw.xlen(f"{prefix}:dead") == 0
                pending: Any = await raw.xpending(f"{prefix}:points", "writers")
                await raw.aclose()
                assert pending["pending"] == 2
                # Tried again and again, it logs its traceback once, then counts repeats.
                failed = [e for e in logged if e["event"] == "writer_commit_failed"]
                assert [("exc_info" in e, e.get("repeats")) for e in failed] == [
                    (True, None),
                    (False, 1),
                    (False, 2),
                    (False, 3),
                ]
                assert all("ValueError" in e["error"] for e in failed)

        asyncio.run(scenario())


def test_an_entry_no_transaction_can_write_is_buried_and_the_rest_written(
    engine_url: str,
) -> None:
    """One entry fails every transaction it is in (here: a stored cell of its metric is
    corrupt). Written beside others, it must not hold them back for ever: they are
    written, and it is moved to the dead stream, whole, with the reason."""
    with redis_prefix() as (url, prefix):

        async def scenario() -> None:
            async with _beside_a_corrupt_metric(engine_url, url, prefix) as (storage, queue, old):
                bad = PointBatch(uuid.uuid4().hex, [Point("old", MetricType.VALUE, 2.0, T0 + 1)])
                await queue.put(bad)
                # One entry a claim (max_points=1000), the hardest case: the bad entry alone
                # proves nothing; each new entry beside it is written while it fails, and
                # after BURY_AFTER such tries it is put aside. Writes keep coming meanwhile.
                writer = Writer(queue, storage, Telemetry(), max_points=1000, retry_delay=0.01)
                goods: list[str] = []
                dead_stream = f"{prefix}:dead"
                raw = aioredis.Redis.from_url(url)
                for i in range(12):
                    goods.append(f"good{i}")
                    await queue.put(
                        PointBatch(uuid.uuid4().hex, [Point(goods[-1], MetricType.COUNTER, 1, T0)])
                    )
                    await writer.step()
                    if await raw.xlen(dead_stream):
                        break
                await raw.aclose()
                for _ in range(10):
                    if not await queue.refresh_depth():
                        break
                    await writer.step()
                for name in goods:
                    metric = await storage.get_metric(name)
                    assert metric is not None, name
                    assert await storage.count_points(metric.id) == 1
                assert len(goods) == 1 + BURY_AFTER  # alone once, then beside one new each time
                assert await storage.count_points(old.id) == 1  # the seed alone
                raw = aioredis.Redis.from_url(url)
                dead: Any = await raw.xrange(f"{prefix}:dead")
                pending = await raw.xpending(f"{prefix}:points", "writers")
                await raw.aclose()
                assert [codec.decode(fields[b"b"]) for _, fields in dead] == [bad]
                assert b"ValueError" in dead[0][1][b"error"]
                assert pending["pending"] == 0
                assert await queue.claim(10_000, 0.05) == []  # never delivered again

        asyncio.run(scenario())
