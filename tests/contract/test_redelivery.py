"""Redis queue + writer + each engine: a batch redelivered after its commit counts once."""

from __future__ import annotations

import asyncio
import uuid

from glowing_fiesta.model import MetricType, Point, PointBatch
from glowing_fiesta.queue.redis import RedisQueue
from glowing_fiesta.storage.base import WriteItem
from glowing_fiesta.storage.sql import SqlStorage
from glowing_fiesta.telemetry import Telemetry
from glowing_fiesta.writer import Writer
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
