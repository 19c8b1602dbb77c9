"""The embedded write path: group commit, durability on failure, backpressure, drain."""

from __future__ import annotations

import asyncio
import sqlite3
import time
import uuid

import pytest
from starlette.testclient import TestClient

from glowing_fiesta.bootstrap import ServeRuntime, build
from glowing_fiesta.errors import Unavailable
from glowing_fiesta.model import MetricType, Point, PointBatch
from glowing_fiesta.queue.inline import InlineQueue
from glowing_fiesta.settings import Settings
from tests.conftest import KeyMaker, bearer


def one(name: str, t: float) -> PointBatch:
    return PointBatch(uuid.uuid4().hex, [Point(name, MetricType.COUNTER, 1.0, t)])


def test_concurrent_requests_share_commits_and_all_land(settings: Settings) -> None:
    async def scenario() -> tuple[int, float]:
        components = build(settings)
        runtime = ServeRuntime(components)
        await runtime.start()
        t = time.time() - 60
        await asyncio.gather(*(components.queue.put(one("gc", t)) for _ in range(500)))
        commits = next(iter(components.telemetry.writer_batch_points.collect()))
        count = next(s.value for s in commits.samples if s.name.endswith("_count"))
        await runtime.stop()
        storage = build(settings).storage
        metric = await storage.get_metric("gc")
        assert metric is not None
        stored = await storage.count_points(metric.id)
        await storage.close()
        return stored, count

    stored, commits = asyncio.run(scenario())
    assert stored == 500
    assert commits < 100  # 500 waiting requests rode a handful of transactions


def test_a_failed_commit_is_a_503_and_nothing_is_acknowledged(
    client: TestClient, make_key: KeyMaker, database_url: str
) -> None:
    key = make_key()
    path = database_url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as db:
        db.execute("ALTER TABLE metrics RENAME TO broken")
    r = client.post("/api/metrics/counter", json={"metric": "w"}, headers=bearer(key))
    assert r.status_code == 503
    assert r.json()["error"]["code"] == "unavailable"
    assert int(r.headers["Retry-After"]) >= 1
    with sqlite3.connect(path) as db:
        db.execute("ALTER TABLE broken RENAME TO metrics")
        assert db.execute("SELECT count(*) FROM metrics").fetchone() == (0,)
    assert client.get("/api/metrics/w", headers=bearer(key)).status_code == 404
    # The writer survived the failure and the service recovers by itself.
    r = client.post("/api/metrics/counter", json={"metric": "w"}, headers=bearer(key))
    assert r.status_code == 202


def test_backpressure_refuses_instead_of_growing() -> None:
    async def scenario() -> None:
        queue = InlineQueue(max_points=2)
        waiting = [asyncio.create_task(queue.put(one("bp", 0))) for _ in range(2)]
        await asyncio.sleep(0)
        with pytest.raises(Unavailable):
            await queue.check_room(1)
        with pytest.raises(Unavailable) as refused:
            await queue.put(one("bp", 0))
        assert refused.value.retry_after >= 1
        assert queue.depth() == 2
        claimed = await queue.claim(max_points=10, timeout=0.1)
        await queue.ack(claimed, [None] * len(claimed))
        await asyncio.gather(*waiting)
        assert queue.depth() == 0
        await queue.check_room(2)
        assert await queue.claim(max_points=10, timeout=0.01) == []

    asyncio.run(scenario())


def test_shutdown_writes_everything_already_queued(settings: Settings) -> None:
    async def scenario() -> int:
        components = build(settings)
        runtime = ServeRuntime(components)
        await runtime.start()
        t = time.time() - 60
        puts = [asyncio.create_task(components.queue.put(one("drain", t))) for _ in range(200)]
        await asyncio.sleep(0)  # queued, not yet written
        await runtime.stop()
        await asyncio.gather(*puts)  # every waiter got its acknowledgement
        storage = build(settings).storage
        metric = await storage.get_metric("drain")
        assert metric is not None
        n = await storage.count_points(metric.id)
        await storage.close()
        return n

    assert asyncio.run(scenario()) == 200
