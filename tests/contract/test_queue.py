"""The queue contract (queue/base.py) on the in-process queue and on Redis Streams,
then what only a broker can do: redelivery, backpressure, poison entries, outages."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import TypeVar

import msgpack
import pytest

from glowing_fiesta.errors import Unavailable
from glowing_fiesta.model import MetricType, Point, PointBatch
from glowing_fiesta.queue.base import Delivery, Queue
from glowing_fiesta.queue.inline import InlineQueue
from glowing_fiesta.queue.redis import RedisQueue
from tests.services import redis_prefix

QueueFactory = Callable[..., Queue]
Q = TypeVar("Q", bound=Queue)


def batch(n: int = 3, name: str = "q") -> PointBatch:
    return PointBatch(
        uuid.uuid4().hex,
        [Point(name, MetricType.VALUE, float(i), 1_700_000_000.5 + i) for i in range(n)],
    )


@pytest.fixture(params=["inline", "redis"])
def make_queue(request: pytest.FixtureRequest) -> Iterator[QueueFactory]:
    if request.param == "inline":
        yield lambda **kw: InlineQueue()
        return
    with redis_prefix() as (url, prefix):
        yield lambda **kw: RedisQueue(url, prefix=prefix, **kw)


@asynccontextmanager
async def started(queue: Q) -> AsyncIterator[Q]:
    await queue.start()
    try:
        yield queue
    finally:
        await queue.close()


def test_a_batch_goes_through_intact_and_is_settled(make_queue: QueueFactory) -> None:
    async def scenario() -> None:
        async with started(make_queue()) as q:
            sent = [batch(), batch(1, "other")]
            puts = [asyncio.create_task(q.put(b)) for b in sent]
            got: list[Delivery] = []
            while len(got) < 2:
                got += await q.claim(max_points=10_000, timeout=1.0)
            # Content kept; concurrent producers have no order between them.
            assert sorted((d.batch for d in got), key=lambda b: b.batch_id) == sorted(
                sent, key=lambda b: b.batch_id
            )
            await q.ack(got, [None, None])
            await asyncio.gather(*puts)  # put has returned for every batch
            assert await q.claim(max_points=10_000, timeout=0.05) == []
            await q.ping()

    asyncio.run(scenario())


def test_claim_respects_max_points_but_always_gives_one(make_queue: QueueFactory) -> None:
    async def scenario() -> None:
        async with started(make_queue()) as q:
            puts = [asyncio.create_task(q.put(batch(1000))) for _ in range(3)]
            await asyncio.sleep(0.05)
            first = await q.claim(max_points=1000, timeout=1.0)
            assert len(first) == 1
            rest: list[Delivery] = []
            while len(rest) < 2:
                rest += await q.claim(max_points=100_000, timeout=1.0)
            await q.ack(first + rest, [None] * 3)
            await asyncio.gather(*puts)

    asyncio.run(scenario())


def test_a_batch_whose_sender_gave_up_is_still_delivered(make_queue: QueueFactory) -> None:
    """A request cancelled while its batch waits (its client went away) does not take
    the batch out of the queue: the writer still gets it, and settling it is harmless."""

    async def scenario() -> None:
        async with started(make_queue()) as q:
            sent = batch(2, "gone")
            put = asyncio.create_task(q.put(sent))
            await asyncio.sleep(0.05)
            put.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await put
            got = await q.claim(max_points=10_000, timeout=1.0)
            assert [d.batch for d in got] == [sent]
            await q.ack(got, [None])
            assert await q.claim(max_points=10_000, timeout=0.05) == []

    asyncio.run(scenario())


@pytest.fixture
def redis_target() -> Iterator[tuple[str, str]]:
    with redis_prefix() as target:
        yield target


def test_entries_of_a_dead_consumer_are_redelivered(redis_target: tuple[str, str]) -> None:
    url, prefix = redis_target

    async def scenario() -> None:
        dead = RedisQueue(url, prefix=prefix, consumer="dead", claim_idle=0.2)
        alive = RedisQueue(url, prefix=prefix, consumer="alive", claim_idle=0.2)
        async with started(dead), started(alive):
            sent = batch()
            await dead.put(sent)
            (taken,) = await dead.claim(10_000, 1.0)  # ... and never acknowledged
            assert taken.redeliverable
            assert await alive.claim(10_000, 0.05) == []  # not idle long enough yet
            await asyncio.sleep(0.3)
            again: list[Delivery] = []
            for _ in range(20):
                again += await alive.claim(10_000, 0.1)
                if again:
                    break
            assert [d.batch for d in again] == [sent]
            await alive.ack(again, [None])
            assert await alive.refresh_depth() == 0

    asyncio.run(scenario())


def test_backpressure_when_the_stream_is_full(redis_target: tuple[str, str]) -> None:
    url, prefix = redis_target

    async def scenario() -> None:
        async with started(RedisQueue(url, prefix=prefix, max_entries=2)) as q:
            await q.put(batch())
            await q.check_room(3)
            await q.put(batch())
            # Asked before a put (the type guard asks before it creates metrics), the
            # queue says what the put would meet.
            with pytest.raises(Unavailable) as full:
                await q.check_room(3)
            assert "full" in full.value.message
            with pytest.raises(Unavailable) as refused:
                await q.put(batch())
            assert refused.value.retry_after >= 1
            taken = await q.claim(10_000, 1.0)
            await q.ack(taken, [None] * len(taken))
            await q.check_room(3)
            await q.put(batch())  # room again

    asyncio.run(scenario())


@pytest.mark.parametrize(
    "poison",
    [
        b"\xc1 not msgpack",
        # A version 2 entry whose type code is infinity: int() of it is an OverflowError.
        msgpack.packb([2, "bad", ["a"], [float("inf")], b"\0" * 4, b"\0" * 8, b"\0" * 8]),
    ],
)
def test_undecodable_entries_are_dropped_not_delivered(
    redis_target: tuple[str, str], poison: bytes
) -> None:
    import redis.asyncio as aioredis

    url, prefix = redis_target

    async def scenario() -> None:
        async with started(RedisQueue(url, prefix=prefix)) as q:
            raw = aioredis.Redis.from_url(url)
            await raw.xadd(f"{prefix}:points", {b"b": poison})
            await raw.aclose()
            good = batch()
            await q.put(good)
            got = await q.claim(10_000, 1.0)
            assert [d.batch for d in got] == [good]
            await q.ack(got, [None])
            assert await q.refresh_depth() == 0

    asyncio.run(scenario())


def test_redis_down_is_unavailable_not_a_crash() -> None:
    async def scenario() -> None:
        q = RedisQueue("redis://127.0.0.1:1/0", prefix="nowhere")
        with pytest.raises(Unavailable):
            await q.ping()
        with pytest.raises(Unavailable):
            await q.check_room(1)
        with pytest.raises(Unavailable):
            await q.put(batch())
        assert await q.claim(1000, 0.01) == []
        await q.close()

    asyncio.run(scenario())


def test_entries_failed_alone_come_back_beside_a_new_one_but_not_after_an_outage(
    redis_target: tuple[str, str],
) -> None:
    """After a plain failure (the database down) a worker reads only its own pending
    entries again: new ones would pile up in its pending list. After entries failed
    alone, one new entry comes with them, however many they are."""
    url, prefix = redis_target

    async def scenario() -> None:
        async with started(RedisQueue(url, prefix=prefix)) as q:
            sent = [batch(name=f"b{i}") for i in range(5)]
            for b in sent:
                await q.put(b)
            first = await q.claim(2000, 1.0)  # two entries a claim
            assert [d.batch for d in first] == sent[:2]
            await q.nack(first, Unavailable("the database does not answer", 2))
            again = await q.claim(2000, 1.0)
            assert [d.batch for d in again] == sent[:2]
            await q.nack(again, Unavailable("failed alone", 1), alone=True)
            beside = await q.claim(2000, 1.0)
            assert [d.batch for d in beside] == sent[:3]
            await q.ack(beside, [None] * 3)
            rest = await q.claim(10_000, 1.0)
            assert [d.batch for d in rest] == sent[3:]

    asyncio.run(scenario())
