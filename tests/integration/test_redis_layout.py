"""`serve` in the production layout (GF_REDIS_URL set): enqueue and answer, no writer."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import redis
from starlette.testclient import TestClient

from glowing_fiesta.bootstrap import create_app_from
from glowing_fiesta.model import MetricType, Point, PointBatch
from glowing_fiesta.queue.redis import RedisQueue
from glowing_fiesta.settings import Settings
from glowing_fiesta.storage.base import WriteItem
from glowing_fiesta.storage.sql import SqlStorage
from glowing_fiesta.telemetry import Telemetry
from glowing_fiesta.writer import Writer
from tests.conftest import KeyMaker, bearer
from tests.services import private_redis, redis_prefix


@pytest.fixture
def redis_settings(settings: Settings) -> Iterator[Settings]:
    with redis_prefix() as (url, prefix):
        yield settings.model_copy(update={"redis_url": url, "redis_prefix": prefix})


def test_accepts_into_the_stream_and_checks_types_at_request_time(
    redis_settings: Settings, make_key: KeyMaker, database_url: str
) -> None:
    key = make_key()
    existing = PointBatch(uuid.uuid4().hex, [Point("orders", MetricType.COUNTER, 1, time.time())])

    async def seed() -> None:
        storage = SqlStorage(database_url)
        await storage.apply([WriteItem(existing)])
        await storage.close()

    asyncio.run(seed())
    with TestClient(create_app_from(redis_settings)) as client:
        r = client.post("/api/metrics/counter", json={"metric": "orders"}, headers=bearer(key))
        assert r.status_code == 202
        r = client.post(
            "/api/metrics/value", json={"metric": "orders", "value": 2}, headers=bearer(key)
        )
        assert r.status_code == 409
        assert r.json()["error"]["details"][0]["field"] == "metric"
        # A new metric's first write fixes its type at once, with no worker running: the
        # next write of the other type is refused, not dropped later.
        ok = client.post(
            "/api/metrics/value", json={"metric": "fresh", "value": 2}, headers=bearer(key)
        )
        assert ok.status_code == 202
        r = client.post("/api/metrics/counter", json={"metric": "fresh"}, headers=bearer(key))
        assert r.status_code == 409
        listed = client.get("/api/metrics", headers=bearer(key)).json()["metrics"]
        assert {m["name"]: m["type"] for m in listed} == {"orders": "counter", "fresh": "value"}
        # A refused batch creates none of its new metrics (SPEC §2): not even those
        # before the conflicting point.
        refused = client.post(
            "/api/metrics/batch",
            json={
                "points": [
                    {"metric": "brand_new", "type": "counter"},
                    {"metric": "fresh", "type": "counter"},
                ]
            },
            headers=bearer(key),
        )
        assert refused.status_code == 409
        assert refused.json()["error"]["details"][0]["index"] == 1
        listed = client.get("/api/metrics", headers=bearer(key)).json()["metrics"]
        assert {m["name"]: m["type"] for m in listed} == {"orders": "counter", "fresh": "value"}
        ready = client.get("/ready")
        assert ready.status_code == 200
        assert ready.json()["checks"] == {"database": "ok", "redis": "ok"}
        metrics = client.get("/metrics").text
        assert 'gf_points_ingested_total{type="counter"} 1.0' in metrics
    stream = redis.Redis.from_url(str(redis_settings.redis_url))
    assert stream.xlen(f"{redis_settings.redis_prefix}:points") == 2  # waiting for a worker
    stream.close()


def test_a_delete_takes_the_batches_queued_before_it(
    redis_settings: Settings, make_key: KeyMaker, database_url: str
) -> None:
    """Found by a bug hunt: three counter points still queued at a DELETE were written
    after it and created the metric again (behind a write of the name as a value, they
    were dropped). Now the DELETE waits for them to be written, and deletes them with
    the rest."""
    key = make_key(scopes="write,read,admin")
    url, prefix = str(redis_settings.redis_url), redis_settings.redis_prefix

    async def drain() -> None:  # a worker's part: write what waits in the stream
        storage = SqlStorage(database_url)
        queue = RedisQueue(url, prefix=prefix)
        await queue.start()
        writer = Writer(queue, storage, Telemetry())
        while await queue.refresh_depth():
            await writer.step()
        await queue.close()
        await storage.close()

    with TestClient(create_app_from(redis_settings)) as client:
        for _ in range(3):
            r = client.post("/api/metrics/counter", json={"metric": "gone"}, headers=bearer(key))
            assert r.status_code == 202
        r = client.delete("/api/metrics/gone", headers=bearer(key))  # no worker running
        assert r.status_code == 503
        assert "still wait in the write queue" in r.json()["error"]["message"]
        assert int(r.headers["Retry-After"]) >= 1
        assert [
            m["name"] for m in client.get("/api/metrics", headers=bearer(key)).json()["metrics"]
        ] == ["gone"]
        asyncio.run(drain())
        assert client.delete("/api/metrics/gone", headers=bearer(key)).status_code == 204
        # Taken with the rest: nothing left to create the metric again.
        assert client.get("/api/series?metric=gone", headers=bearer(key)).status_code == 404
        assert client.get("/api/metrics", headers=bearer(key)).json()["metrics"] == []
        # A blank name is a 422 before any wait (the stream holds a batch again).
        r = client.post("/api/metrics/counter", json={"metric": "other"}, headers=bearer(key))
        assert r.status_code == 202
        r = client.delete("/api/metrics/%20", headers=bearer(key))
        assert r.status_code == 422


def test_metrics_show_the_streams_depth_whichever_process_answers(
    redis_settings: Settings, make_key: KeyMaker
) -> None:
    """Two `serve` processes on one stream: the one that took no write still reports
    what waits in it (under `serve --workers N`, the latest reading is the sum's)."""
    key = make_key()
    with (
        TestClient(create_app_from(redis_settings)) as writing,
        TestClient(create_app_from(redis_settings)) as scraped,
    ):
        for _ in range(3):
            r = writing.post("/api/metrics/counter", json={"metric": "d"}, headers=bearer(key))
            assert r.status_code == 202
        assert "gf_queue_depth 3.0" in scraped.get("/metrics").text.splitlines()


def test_a_full_stream_means_503_and_no_new_metric(
    redis_settings: Settings, make_key: KeyMaker
) -> None:
    key = make_key()
    full = redis_settings.model_copy(update={"queue_max_batches": 1})
    with TestClient(create_app_from(full)) as client:
        ok = client.post("/api/metrics/counter", json={"metric": "x"}, headers=bearer(key))
        assert ok.status_code == 202  # the stream now holds its one batch: no worker
        r = client.post(
            "/api/metrics/value", json={"metric": "new", "value": 1}, headers=bearer(key)
        )
        assert r.status_code == 503
        assert "full" in r.json()["error"]["message"]
        # The refused first write fixed no type: `new` is not there to refuse a counter.
        listed = client.get("/api/metrics", headers=bearer(key)).json()["metrics"]
        assert [m["name"] for m in listed] == ["x"]


@contextmanager
def _serving_until_redis_stops(settings: Settings, key: str) -> Iterator[tuple[TestClient, str]]:
    """A service on a Redis of its own that took one write, then lost its Redis."""
    with private_redis() as (url, proc):
        app = create_app_from(settings.model_copy(update={"redis_url": url}))
        with TestClient(app) as client:
            ok = client.post("/api/metrics/counter", json={"metric": "x"}, headers=bearer(key))
            assert ok.status_code == 202
            proc.terminate()  # Redis goes away under a running service
            proc.wait(10)
            yield client, url


def _limiter_errors(client: TestClient) -> float:
    lines = client.get("/metrics").text.splitlines()
    return float(next(x for x in lines if x.startswith("gf_rate_limiter_errors_total ")).split()[1])


def test_redis_down_means_503_with_retry_after_and_not_ready(
    settings: Settings, make_key: KeyMaker
) -> None:
    key = make_key()
    with _serving_until_redis_stops(settings, key) as (client, _):
        r = client.post("/api/metrics/counter", json={"metric": "x"}, headers=bearer(key))
        assert r.status_code == 503
        assert r.json()["error"]["code"] == "unavailable"
        assert int(r.headers["Retry-After"]) >= 1
        # Nothing of a refused write stays: the metric created for it neither, so a
        # first write of the other type later is not refused.
        r = client.post("/api/metrics/counter", json={"metric": "new"}, headers=bearer(key))
        assert r.status_code == 503
        listed = client.get("/api/metrics", headers=bearer(key)).json()["metrics"]
        assert [m["name"] for m in listed] == ["x"]
        ready = client.get("/ready")
        assert ready.status_code == 503
        assert ready.json()["checks"]["database"] == "ok"
        assert "redis" in ready.json()["message"]
        # The limiter fails open and says so in the service's own metrics.
        assert _limiter_errors(client) >= 1


def test_a_restarted_redis_is_used_again_at_once(settings: Settings, make_key: KeyMaker) -> None:
    """The pooled connections of the queue and the limiter died with the old Redis:
    the first commands after the restart go out on new ones, not as 503s."""
    key = make_key()
    with _serving_until_redis_stops(settings, key) as (client, url):
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        with private_redis(port):
            ready = client.get("/ready")
            assert ready.status_code == 200, ready.json()
            r = client.post("/api/metrics/counter", json={"metric": "x"}, headers=bearer(key))
            assert r.status_code == 202, r.json()
            assert _limiter_errors(client) == 0


def test_serve_starts_while_redis_is_down(settings: Settings) -> None:
    app = create_app_from(settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"}))
    with TestClient(app) as client:
        assert client.get("/health").status_code == 200
        assert client.get("/ready").status_code == 503
