"""The embedded writer in a process of its own: it writes, and its death loses nothing
that was acknowledged."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator

import pytest

from glowing_fiesta.bootstrap import Components, ServeRuntime, build
from glowing_fiesta.errors import TypeConflict, Unavailable
from glowing_fiesta.model import MetricType, Point, PointBatch, Resolution
from glowing_fiesta.settings import Settings
from glowing_fiesta.storage.sql import SqlStorage


def batch(name: str, kind: MetricType = MetricType.COUNTER, points: int = 1) -> PointBatch:
    return PointBatch(uuid.uuid4().hex, [Point(name, kind, 2.0, time.time() - 60)] * points)


async def stored_points(settings: Settings, name: str) -> int:
    storage = build(settings).storage
    try:
        metric = await storage.get_metric(name)
        return 0 if metric is None else await storage.count_points(metric.id)
    finally:
        await storage.close()


def test_writes_go_through_a_child_process(settings: Settings) -> None:
    async def scenario() -> tuple[int | None, int]:
        components = build(settings)
        runtime = ServeRuntime(components)
        await runtime.start()
        pid = components.storage.writer_pid
        await asyncio.gather(*(components.queue.put(batch("wp")) for _ in range(50)))
        await runtime.stop()
        return pid, await stored_points(settings, "wp")

    pid, stored = asyncio.run(scenario())
    assert pid is not None
    assert pid != os.getpid()
    assert stored == 50


def test_a_type_conflict_comes_back_from_the_child(settings: Settings) -> None:
    async def scenario() -> None:
        components = build(settings)
        runtime = ServeRuntime(components)
        await runtime.start()
        try:
            await components.queue.put(batch("tc", MetricType.COUNTER))
            with pytest.raises(TypeConflict) as raised:
                await components.queue.put(batch("tc", MetricType.VALUE))
            assert raised.value.details[0].field == "metric"
            assert raised.value.details[0].index == 0
        finally:
            await runtime.stop()

    asyncio.run(scenario())


def test_a_killed_writer_is_a_503_and_the_next_write_starts_a_new_one(settings: Settings) -> None:
    async def scenario() -> tuple[int, int, int]:
        components = build(settings)
        runtime = ServeRuntime(components)
        await runtime.start()
        try:
            await components.queue.put(batch("k"))
            first = components.storage.writer_pid
            assert first is not None
            os.kill(first, signal.SIGKILL)
            await asyncio.sleep(0.2)
            with pytest.raises(Unavailable):
                await components.queue.put(batch("k"))
            await components.queue.put(batch("k"))
            second = components.storage.writer_pid
            assert second is not None
        finally:
            await runtime.stop()
        return first, second, await stored_points(settings, "k")

    first, second, stored = asyncio.run(scenario())
    assert second != first
    assert stored == 2  # the acknowledged writes, and not the refused one


def test_the_writer_can_stay_in_process(settings: Settings) -> None:
    async def scenario() -> tuple[int | None, int]:
        components = build(settings.model_copy(update={"writer_process": False}))
        runtime = ServeRuntime(components)
        await runtime.start()
        pid = components.storage.writer_pid
        await components.queue.put(batch("ip"))
        await runtime.stop()
        return pid, await stored_points(settings, "ip")

    assert asyncio.run(scenario()) == (None, 1)


@contextlib.asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[tuple[Components, SqlStorage]]:
    """The embedded runtime as `serve` runs it, writer process included."""
    components = build(settings)
    runtime = ServeRuntime(components)
    await runtime.start()
    storage = components.storage
    assert isinstance(storage, SqlStorage)
    try:
        yield components, storage
    finally:
        await runtime.stop()


async def day_count(storage: SqlStorage, name: str) -> int:
    """Points in `name`'s day cells, as a query reads them."""
    metric, reads = await storage.read_series(
        name, [(Resolution.DAY, 0.0, time.time() + 86400)], sketches=False
    )
    assert metric is not None
    return sum(row[1] for row in reads[0])


# A write of more than ROLLUP_AT_ONCE points has its cells written later, with others'.
@pytest.mark.parametrize("points", [1, 600])
def test_a_query_sees_every_write_acknowledged_before_it(settings: Settings, points: int) -> None:
    async def scenario() -> list[int]:
        async with serving(settings) as (components, storage):
            seen = []
            for _ in range(3):
                sent = batch("rq", points=points)
                await components.queue.put(sent)
                seen.append(await day_count(storage, "rq"))
                metric = await storage.get_metric("rq")
                assert metric is not None
                # To the millisecond, as stored.
                assert metric.last_point_at == round(sent.points[0].timestamp * 1000) / 1000
            return seen

    assert asyncio.run(scenario()) == [points, 2 * points, 3 * points]


@pytest.mark.parametrize("points", [1, 600])  # written at once, and on the timer
def test_the_writer_writes_cells_without_being_asked(settings: Settings, points: int) -> None:
    async def scenario() -> int:
        async with serving(settings) as (components, _):
            # A second storage on the same database, with no writer process to flush.
            onlooker = SqlStorage(settings.database_url)
            try:
                await components.queue.put(batch("bg", points=points))
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    metric = await onlooker.get_metric("bg")
                    if metric is not None and await day_count(onlooker, "bg") == points:
                        break
                    await asyncio.sleep(0.05)
                return await day_count(onlooker, "bg")
            finally:
                await onlooker.close()

    assert asyncio.run(scenario()) == points


def test_cells_a_killed_writer_deferred_are_written_by_the_next(settings: Settings) -> None:
    async def scenario() -> int:
        async with serving(settings) as (components, storage):
            await asyncio.gather(
                *(components.queue.put(batch("kd", points=600)) for _ in range(20))
            )
            pid = storage.writer_pid
            assert pid is not None
            os.kill(pid, signal.SIGKILL)  # within ROLLUP_SECONDS of the acknowledgements
            await asyncio.sleep(0.2)
            return await day_count(storage, "kd")

    assert asyncio.run(scenario()) == 20 * 600


def test_a_lone_small_write_keeps_its_cells_and_grouped_or_big_ones_wait(
    database_url: str,
) -> None:
    from glowing_fiesta.storage.base import WriteItem
    from glowing_fiesta.storage.columns import Columns
    from glowing_fiesta.storage.process import ROLLUP_AT_ONCE, _defer

    def cols(*batches: PointBatch) -> list[Columns]:
        return [Columns.of(WriteItem(b)) for b in batches]

    store = SqlStorage(database_url)
    try:
        one = cols(batch("light"))
        assert not _defer(store, one)  # nothing waits: a lone write keeps its cells
        assert not _defer(store, cols(batch("light", points=ROLLUP_AT_ONCE)))
        assert _defer(store, cols(batch("light", points=ROLLUP_AT_ONCE + 1)))
        two = cols(batch("light"), batch("light"))
        assert _defer(store, two)  # writes queued together: their cells wait
        store.apply_now(two, defer_rollups=True)
        assert store.backlog_points == 2
        assert _defer(store, one)  # something waits: so does the next write
    finally:
        store.dispose()


def test_the_childs_rollups_run_aside_while_writes_go_on(database_url: str) -> None:
    from glowing_fiesta.storage.base import WriteItem
    from glowing_fiesta.storage.columns import Columns
    from glowing_fiesta.storage.process import _defer, _Rollups

    store = SqlStorage(database_url)
    rollups = _Rollups(store)
    try:
        grouped = [
            Columns.of(WriteItem(batch("light"))),
            Columns.of(WriteItem(batch("heavy", points=600))),
        ]
        store.apply_now(grouped, defer_rollups=_defer(store, grouped))
        assert store.backlog_points == 601
        rollups.start()
        assert rollups.running()
        one = [WriteItem(batch("light"))]
        store.apply_now(one, defer_rollups=_defer(store, one))  # goes on meanwhile
        assert rollups.finish()
        assert store.backlog_points == 1  # the write made while it ran waits for the next
        assert rollups.write()
        assert store.backlog_points == 0
        counts = {
            name: asyncio.run(store.count_points(metric.id))
            for name in ("light", "heavy")
            if (metric := asyncio.run(store.get_metric(name))) is not None
        }
        assert counts == {"light": 2, "heavy": 600}
        assert asyncio.run(day_count(store, "light")) == 2
    finally:
        rollups.close()
        store.dispose()


def test_a_rollup_that_fails_on_the_thread_keeps_its_writes(database_url: str) -> None:
    import select
    import sqlite3

    from glowing_fiesta.aggregate import VALUES_TAG
    from glowing_fiesta.storage.base import WriteItem
    from glowing_fiesta.storage.process import _Rollups

    store = SqlStorage(database_url)
    rollups = _Rollups(store)
    try:
        item = batch("broken", MetricType.VALUE, points=600)
        store.apply_now([WriteItem(item)], defer_rollups=True)
        metric = asyncio.run(store.get_metric("broken"))
        assert metric is not None
        day = int(item.points[0].timestamp) // 86400 * 86400
        with sqlite3.connect(database_url.removeprefix("sqlite:///")) as db:
            db.execute(  # a stored cell the merge refuses
                "INSERT INTO rollups VALUES (?, 86400, ?, 1, 1.0, 1.0, 1.0, ?)",
                (metric.id, day, bytes([VALUES_TAG, 1, 2])),
            )
        rollups.start()
        assert rollups.running()
        assert not rollups.finish()
        assert store.backlog_points == 600  # kept, to be tried again
        assert not select.select([rollups.done], [], [], 0)[0]  # the loop will not spin
        assert rollups.due_in() is not None  # tried again after a pause
    finally:
        rollups.close()
        store.dispose()
