"""Deferred blocks and rollup cells (SqlStorage.apply_now(defer_rollups=True)): a write's
points are committed at once as one row of the journal beside the database, and its raw
blocks and cells later, many writes together, by whoever rolls up. Points and cells end
up the same as if each write had written its own, and a writer that dies with some
unwritten loses none of them: whoever opens the database next writes them."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator

import numpy as np
import pytest
from sqlalchemy import func, select

from glowing_fiesta.aggregate import VALUES_TAG
from glowing_fiesta.model import MetricType, Point, PointBatch, Resolution
from glowing_fiesta.storage import blocks
from glowing_fiesta.storage.base import WriteItem
from glowing_fiesta.storage.schema import metric_points, pending_points, rollup_backlog
from glowing_fiesta.storage.sql import SqlStorage

DAY = 86400
T0 = 1_700_000_000 // DAY * DAY
C, V = MetricType.COUNTER, MetricType.VALUE
Cells = dict[Resolution, list[tuple[object, ...]]]


def writes(name: str, kind: MetricType, seed: int, n: int = 6) -> list[list[WriteItem]]:
    """n writes of 40 points of `name` over two hours, integer values (sums exact in
    any order)."""
    rng = random.Random(seed)
    return [
        [
            WriteItem(
                PointBatch(
                    uuid.uuid4().hex,
                    [
                        Point(name, kind, float(rng.randint(1, 400)), T0 + rng.uniform(0, 7200))
                        for _ in range(40)
                    ],
                )
            )
        ]
        for _ in range(n)
    ]


def cells(store: SqlStorage, name: str) -> Cells:
    """Every cell of `name`, with exact-value summaries as sorted values (the same
    multiset may be stored in another order) and sketches as bytes."""
    metric = asyncio.run(store.get_metric(name))
    assert metric is not None
    out: Cells = {}
    for res in Resolution:
        rows = asyncio.run(store.read_cells(metric.id, res, T0, T0 + DAY, sketches=True))
        out[res] = [(*row[:5], _summary(row[5])) for row in rows]
    return out


def _summary(data: bytes | None) -> object:
    assert data is not None
    if data[0] == VALUES_TAG:
        return sorted(data[1 + 8 * i : 9 + 8 * i] for i in range(len(data) // 8))
    return data


def last_point_at(store: SqlStorage, name: str) -> float | None:
    metric = asyncio.run(store.get_metric(name))
    assert metric is not None
    return metric.last_point_at


def day_counts(store: SqlStorage, name: str) -> list[object]:
    return [row[1] for row in cells(store, name)[Resolution.DAY]]


def points(store: SqlStorage, name: str) -> list[tuple[float, float]]:
    metric = asyncio.run(store.get_metric(name))
    assert metric is not None
    return asyncio.run(store.read_points(metric.id, T0, T0 + DAY))


def backlog_rows(store: SqlStorage) -> int:
    """Writes waiting in the journal: those after its mark in the database (rows up to
    the mark may stay there a while; every reader skips them)."""
    path = store.url.database
    if store.url.get_backend_name() != "sqlite" or not os.path.exists(f"{path}-pending"):
        return 0
    with (
        contextlib.closing(sqlite3.connect(f"{path}-pending")) as journal,
        contextlib.closing(sqlite3.connect(str(path))) as db,
    ):
        (identity,) = journal.execute("SELECT value FROM meta WHERE key = 'identity'").fetchone()
        mark = db.execute(
            "SELECT rolled_up_to FROM journal_marks WHERE journal = ?", (identity,)
        ).fetchone()
        (n,) = journal.execute(
            "SELECT count(*) FROM pending WHERE id > ?", (mark[0] if mark else 0,)
        ).fetchone()
        return int(n)


def block_rows(store: SqlStorage) -> int:
    with store._write_engine.connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(metric_points)) or 0)


@pytest.fixture
def open_store(database_url: str) -> Iterator[Callable[[], SqlStorage]]:
    """Storages on the SQLite database (writers, as the writer process has one), all
    disposed at the end; disposing one earlier is how a test has a writer die."""
    opened: list[SqlStorage] = []

    def make() -> SqlStorage:
        opened.append(SqlStorage(database_url))
        return opened[-1]

    yield make
    for store in opened:
        store.dispose()


def test_deferred_cells_equal_the_cells_written_at_once(store: SqlStorage) -> None:
    for items in writes("now", V, seed=1):
        store.apply_now(items)
    for items in writes("later", V, seed=1):
        store.apply_now(items, defer_rollups=True)
    if store.can_defer_rollups:
        assert store.backlog_points == 240
        assert backlog_rows(store) == 6
        assert cells(store, "later")[Resolution.MINUTE] == []  # not written yet
        assert points(store, "later") == []
        assert last_point_at(store, "later") is None  # raised with the cells
        assert store.roll_up_now() == 240
    # Server engines write every write's blocks and cells with it (a deferred write
    # there would hold its metrics' row locks until the rollup).
    assert store.backlog_points == 0
    assert backlog_rows(store) == 0
    assert cells(store, "later") == cells(store, "now")
    assert len(points(store, "later")) == 240
    assert points(store, "later") == points(store, "now")
    assert last_point_at(store, "later") == last_point_at(store, "now") is not None


def test_deferred_writes_share_blocks(open_store: Callable[[], SqlStorage]) -> None:
    store = open_store()
    for items in writes("few", C, seed=10):
        store.apply_now(items, defer_rollups=True)
    store.roll_up_now()
    assert block_rows(store) == 1  # six writes of one metric and day, one block
    for items in writes("many", C, seed=10):
        store.apply_now(items)
    assert block_rows(store) == 1 + 6


def test_a_dead_writers_cells_are_written_by_the_next_one(
    open_store: Callable[[], SqlStorage],
) -> None:
    dead = open_store()
    for items in writes("twin", C, seed=2):
        dead.apply_now(items)
    for items in writes("crash", C, seed=2):
        dead.apply_now(items, defer_rollups=True)
    assert backlog_rows(dead) == 6
    dead.dispose()  # dies with 240 points' blocks and cells unwritten

    nxt = open_store()
    assert nxt.recover_now() == 240
    assert backlog_rows(nxt) == 0
    assert nxt.recover_now() == 0
    assert cells(nxt, "crash") == cells(nxt, "twin")
    assert points(nxt, "crash") == points(nxt, "twin")
    assert last_point_at(nxt, "crash") == last_point_at(nxt, "twin")


def test_opening_the_database_writes_a_left_backlog(open_store: Callable[[], SqlStorage]) -> None:
    dead = open_store()
    for items in writes("left", V, seed=3, n=2):
        dead.apply_now(items, defer_rollups=True)
    dead.dispose()
    store = open_store()
    asyncio.run(store.open())
    assert backlog_rows(store) == 0
    assert day_counts(store, "left") == [80]


def test_cells_taken_over_by_another_writer_are_not_written_twice(
    open_store: Callable[[], SqlStorage],
) -> None:
    live, other = open_store(), open_store()
    for items in writes("shared", C, seed=4, n=3):
        live.apply_now(items, defer_rollups=True)
    assert other.recover_now() == 120  # e.g. a second writer starting meanwhile
    for items in writes("shared", C, seed=5, n=1):
        live.apply_now(items, defer_rollups=True)
    assert live.roll_up_now() == 40  # only the write that is still its own
    assert day_counts(live, "shared") == [160]
    assert len(points(live, "shared")) == 160


def test_deleting_a_metric_with_cells_waiting_leaves_no_cells_behind(
    open_store: Callable[[], SqlStorage],
) -> None:
    store = open_store()
    for items in writes("gone", C, seed=6, n=2):
        store.apply_now(items, defer_rollups=True)
    assert asyncio.run(store.delete_metric("gone"))
    assert store.roll_up_now() == 0
    # A new metric of that name (which may get the same id) starts from nothing.
    for items in writes("gone", C, seed=7, n=1):
        store.apply_now(items, defer_rollups=True)
    store.roll_up_now()
    assert day_counts(store, "gone") == [40]


def test_a_failed_rollup_keeps_its_backlog(
    open_store: Callable[[], SqlStorage], database_url: str
) -> None:
    store = open_store()
    path = database_url.removeprefix("sqlite:///")
    for items in writes("kept", V, seed=8, n=2):
        store.apply_now(items, defer_rollups=True)
    metric = asyncio.run(store.get_metric("kept"))
    assert metric is not None
    with sqlite3.connect(path) as db:  # a stored cell the merge refuses
        db.execute(
            "INSERT INTO rollups VALUES (?, 86400, ?, 1, 1.0, 1.0, 1.0, ?)",
            (metric.id, T0, bytes([VALUES_TAG, 1, 2])),
        )
    with pytest.raises(ValueError, match="corrupt"):
        store.roll_up_now()
    assert store.backlog_points == 80
    assert backlog_rows(store) == 2
    with sqlite3.connect(path) as db:
        db.execute("DELETE FROM rollups WHERE res = 86400")
    assert store.roll_up_now() == 80
    assert day_counts(store, "kept") == [80]


def test_points_no_rollup_can_write_are_set_aside_and_the_rest_rolled_up(
    open_store: Callable[[], SqlStorage], database_url: str
) -> None:
    """A stored cell the merge refuses fails every rollup its metric's points are in:
    beside other metrics' points, those points are kept aside in the journal, the rest
    are rolled up, and the journal does not grow for ever. Put back once the cell is
    mended, they count as they would have."""
    store = open_store()
    path = database_url.removeprefix("sqlite:///")
    kept_writes, fine_writes = writes("kept", V, seed=8, n=2), writes("fine", C, seed=9, n=2)
    for kept, fine in zip(kept_writes, fine_writes, strict=True):
        store.apply_now(kept + fine, defer_rollups=True)
    metric = asyncio.run(store.get_metric("kept"))
    assert metric is not None
    corrupt = bytes([VALUES_TAG, 1, 2])
    with sqlite3.connect(path) as db:  # a stored cell the merge refuses
        db.execute(
            "INSERT INTO rollups VALUES (?, 86400, ?, 1, 1.0, 1.0, 1.0, ?)",
            (metric.id, T0, corrupt),
        )
    assert store.roll_up_now() == 80
    assert day_counts(store, "fine") == [80]
    assert day_counts(store, "kept") == [1]  # the corrupt cell alone, untouched
    assert backlog_rows(store) == 0
    with contextlib.closing(sqlite3.connect(f"{path}-pending")) as journal:
        aside = journal.execute("SELECT metric_id, n, error FROM set_aside").fetchall()
    assert [(mid, n) for mid, n, _ in aside] == [(metric.id, 40), (metric.id, 40)]
    assert all("ValueError" in error for _, _, error in aside)
    assert store.roll_up_now() == 0  # nothing left to try again
    # Mended, and put back as docs/operations.md says: counted once, as sent.
    with sqlite3.connect(path) as db:
        db.execute("DELETE FROM rollups WHERE sketch = ?", (corrupt,))
    with contextlib.closing(sqlite3.connect(f"{path}-pending")) as journal, journal:
        journal.execute("INSERT INTO pending (n, at, data) SELECT n, at, data FROM set_aside")
        journal.execute("DELETE FROM set_aside")
    assert store.roll_up_now() == 80
    assert day_counts(store, "kept") == [80]
    assert day_counts(store, "fine") == [80]


def test_an_unreadable_journal_write_is_set_aside_and_the_rest_rolled_up(
    open_store: Callable[[], SqlStorage], database_url: str
) -> None:
    store = open_store()
    path = database_url.removeprefix("sqlite:///")
    (first,) = writes("fine", C, seed=9, n=1)
    store.apply_now(first, defer_rollups=True)
    with contextlib.closing(sqlite3.connect(f"{path}-pending")) as journal, journal:
        journal.execute("INSERT INTO pending (n, at, data) VALUES (3, 0, x'0badbad0')")
    (second,) = writes("fine", C, seed=10, n=1)
    store.apply_now(second, defer_rollups=True)
    assert store.roll_up_now() == 80
    assert day_counts(store, "fine") == [80]
    with contextlib.closing(sqlite3.connect(f"{path}-pending")) as journal:
        aside = journal.execute("SELECT metric_id, data, error FROM set_aside").fetchall()
    assert aside == [(-1, bytes.fromhex("0badbad0"), "ValueError: unknown pending points format")]


def test_retention_leaves_pending_writes_to_their_writer(
    open_store: Callable[[], SqlStorage],
) -> None:
    """Expired points still pending are not blocks yet: retention leaves them to the
    writer and deletes their blocks on its next pass; their cells outlive them."""
    store = open_store()
    for items in writes("aged", V, seed=9, n=2):
        store.apply_now(items, defer_rollups=True)
    pending = backlog_rows(store)
    assert asyncio.run(store.delete_points_before(T0 + DAY, 1000)) == 0
    assert backlog_rows(store) == pending
    assert store.roll_up_now() == (80 if store.can_defer_rollups else 0)
    assert asyncio.run(store.delete_points_before(T0 + DAY, 1000)) > 0
    assert points(store, "aged") == []
    assert day_counts(store, "aged") == [80]


def leave_as_a_0002_writer(database_url: str, metric_id: int) -> None:
    """The metric's cells gone and its blocks named in `rollup_backlog`: what a writer of
    migration 0002 left when it stopped with cells waiting."""
    with sqlite3.connect(database_url.removeprefix("sqlite:///")) as db:
        db.execute("DELETE FROM rollups WHERE metric_id = ?", (metric_id,))
        first, last = db.execute(
            "SELECT min(id), max(id) FROM metric_points WHERE metric_id = ?", (metric_id,)
        ).fetchone()
        db.execute("INSERT INTO rollup_backlog VALUES (?, ?)", (first, last))


def test_retention_writes_the_cells_of_blocks_a_0002_writer_left_first(
    open_store: Callable[[], SqlStorage], database_url: str
) -> None:
    """That writer's backlog names blocks whose cells are not written: deleting those
    blocks must not take the cells with them, nor leave a range naming deleted ids."""
    store = open_store()
    for items in writes("old", V, seed=16, n=2):
        store.apply_now(items)
    metric = asyncio.run(store.get_metric("old"))
    assert metric is not None
    leave_as_a_0002_writer(database_url, metric.id)
    assert asyncio.run(store.delete_points_before(T0 + DAY, 1000)) > 0
    assert points(store, "old") == []
    assert day_counts(store, "old") == [80]
    with store._write_engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(rollup_backlog)) == 0


def test_cells_left_by_a_writer_of_migration_0002_are_written(
    open_store: Callable[[], SqlStorage], database_url: str
) -> None:
    """That writer committed blocks and a range of their ids, and wrote the cells later;
    a database it left with ranges waiting gets those cells once opened."""
    store = open_store()
    for items in writes("old", V, seed=11, n=2):
        store.apply_now(items)
    for items in writes("twin", V, seed=11, n=2):
        store.apply_now(items)
    metric = asyncio.run(store.get_metric("old"))
    assert metric is not None
    leave_as_a_0002_writer(database_url, metric.id)
    assert day_counts(store, "old") == []
    assert store.recover_now() == 80
    assert cells(store, "old") == cells(store, "twin")
    with store._write_engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(rollup_backlog)) == 0


def test_a_rollup_takes_the_oldest_whole_writes_up_to_its_limit(
    open_store: Callable[[], SqlStorage],
) -> None:
    store = open_store()
    for items in writes("some", C, seed=12, n=3):
        store.apply_now(items, defer_rollups=True)
    assert store.roll_up_now(50) == 40  # a second write would pass 50
    assert backlog_rows(store) == 2
    assert store.roll_up_now(10) == 40  # at least one write, whatever the limit
    assert store.backlog_points == 40
    assert store.roll_up_now(1000) == 40
    assert store.roll_up_now(1000) == 0
    assert day_counts(store, "some") == [120]
    assert len(points(store, "some")) == 120


def test_rollups_running_at_once_write_every_point_once(
    open_store: Callable[[], SqlStorage],
) -> None:
    """The rollup process, a writer flushing for a query and `serve` deleting another
    metric may all roll up at once, while writes go on."""
    writer, twin = open_store(), open_store()
    rollers = [open_store() for _ in range(2)]
    done = threading.Event()
    errors: list[BaseException] = []

    def roll(store: SqlStorage) -> None:
        try:
            while not done.is_set():
                store.roll_up_now(100)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=roll, args=(r,)) for r in rollers]
    for t in threads:
        t.start()
    try:
        for items in writes("busy", V, seed=13, n=30):
            writer.apply_now(items, defer_rollups=True)
    finally:
        done.set()
        for t in threads:
            t.join()
    assert errors == []
    for items in writes("twin", V, seed=13, n=30):
        twin.apply_now(items)
    writer.roll_up_now()
    assert backlog_rows(writer) == 0
    assert cells(writer, "busy") == cells(writer, "twin")
    assert points(writer, "busy") == points(writer, "twin")


def test_writes_behind_the_mark_are_not_rolled_up_again(
    open_store: Callable[[], SqlStorage],
) -> None:
    """Rows rolled up leave the journal some time after the mark moved past them (a
    crash in between leaves them there for good); nobody writes their cells again."""
    store = open_store()
    for items in writes("once", C, seed=19, n=3):
        store.apply_now(items, defer_rollups=True)
    assert store.roll_up_now() == 120
    path = store.url.database
    with contextlib.closing(sqlite3.connect(f"{path}-pending")) as journal:
        assert journal.execute("SELECT count(*) FROM pending").fetchone() == (3,)
    other = open_store()
    assert other.recover_now() == 0
    assert other.roll_up_now() == 0
    assert day_counts(store, "once") == [120]
    with contextlib.closing(sqlite3.connect(f"{path}-pending")) as journal:
        assert journal.execute("SELECT count(*) FROM pending").fetchone() == (0,)


def test_writes_from_before_the_clock_was_set_back_are_due_at_once(
    open_store: Callable[[], SqlStorage],
) -> None:
    """A write waits at most `seconds` for its rollup, however the wall clock moves:
    set back an hour, the journal's oldest write seems to come from the future."""
    store = open_store()
    store.apply_now(writes("clock", C, seed=22, n=1)[0], defer_rollups=True)
    assert store.rollup_due(1, 0.0)
    assert not store.rollup_due(10_000, 60.0)  # 40 points, just written
    with contextlib.closing(sqlite3.connect(f"{store.url.database}-pending")) as journal:
        journal.execute("UPDATE pending SET at = at + 3600")
        journal.commit()
    assert store.rollup_due(10_000, 60.0)


def test_a_new_journal_is_not_taken_for_one_already_rolled_up(
    open_store: Callable[[], SqlStorage],
) -> None:
    """A journal made anew (its file deleted) numbers its writes from 1 again: below the
    old journal's mark, yet not rolled up."""
    old = open_store()
    for items in writes("again", C, seed=20, n=3):
        old.apply_now(items, defer_rollups=True)
    assert old.roll_up_now() == 120
    old.dispose()
    path = old.url.database
    for suffix in ("-pending", "-pending-wal", "-pending-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(f"{path}{suffix}")
    new = open_store()
    for items in writes("again", C, seed=21, n=2):
        new.apply_now(items, defer_rollups=True)
    assert backlog_rows(new) == 2
    assert new.roll_up_now() == 80
    assert day_counts(new, "again") == [200]


def test_writes_an_earlier_version_left_pending_are_written(
    open_store: Callable[[], SqlStorage], database_url: str
) -> None:
    """Writers of migrations 0003-0004 kept waiting writes in `pending_points`."""
    store = open_store()
    for items in writes("old", V, seed=22, n=2):
        store.apply_now(items)
    for items in writes("twin", V, seed=22, n=2):
        store.apply_now(items)
    metric = asyncio.run(store.get_metric("old"))
    assert metric is not None
    stored = points(store, "old")
    with sqlite3.connect(database_url.removeprefix("sqlite:///")) as db:
        db.execute("DELETE FROM rollups WHERE metric_id = ?", (metric.id,))
        db.execute("DELETE FROM metric_points WHERE metric_id = ?", (metric.id,))
        data = blocks.encode_pending(
            np.full(len(stored), metric.id, dtype=np.int64),
            np.array([t for t, _ in stored]),
            np.array([v for _, v in stored]),
        )
        db.execute("INSERT INTO pending_points (n, data) VALUES (?, ?)", (len(stored), data))
    assert store.recover_now() == 80
    assert cells(store, "old") == cells(store, "twin")
    with store._write_engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(pending_points)) == 0


def test_a_journal_behind_its_mark_numbers_new_writes_after_it(
    open_store: Callable[[], SqlStorage],
) -> None:
    """A journal restored from a backup older than the database's, or whose last commits
    a power loss took, would give new writes ids at or below the mark, skipped as rolled
    up; it goes on from the mark instead."""
    old = open_store()
    for items in writes("back", C, seed=23, n=3):
        old.apply_now(items, defer_rollups=True)
    assert old.roll_up_now() == 120
    old.dispose()
    path = old.url.database
    with contextlib.closing(sqlite3.connect(f"{path}-pending")) as journal:
        journal.execute("DELETE FROM pending")  # as it was before those three writes
        journal.execute("UPDATE sqlite_sequence SET seq = 0 WHERE name = 'pending'")
        journal.commit()
    new = open_store()
    for items in writes("back", C, seed=24, n=2):
        new.apply_now(items, defer_rollups=True)
    assert backlog_rows(new) == 2
    assert new.roll_up_now() == 80
    assert day_counts(new, "back") == [200]
