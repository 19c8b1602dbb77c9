"""The storage contract (storage/base.py), the same on every engine."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
import uuid
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest
from sqlalchemy import create_engine, delete, func, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from glowing_fiesta.aggregate import VALUES_TAG, Cell
from glowing_fiesta.errors import TypeConflict, ValidationError
from glowing_fiesta.model import Agg, MetricType, Point, PointBatch, Resolution, Scope
from glowing_fiesta.storage.base import WriteItem
from glowing_fiesta.storage.dialects import driver_url
from glowing_fiesta.storage.schema import metadata, metric_points, metrics, rollups
from glowing_fiesta.storage.sql import SqlStorage
from tests.services import MARIADB_URL, PG_URL, server_database

T = TypeVar("T")
DAY = 86400
T0 = 1_700_000_000 // DAY * DAY


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def batch(*points: tuple[str, MetricType, float, float], batch_id: str | None = None) -> PointBatch:
    return PointBatch(batch_id or uuid.uuid4().hex, [Point(*p) for p in points])


C, V = MetricType.COUNTER, MetricType.VALUE


def test_apply_creates_metrics_and_writes_points_and_cells(store: SqlStorage) -> None:
    assert run(
        store.apply(
            [WriteItem(batch(("a", C, 1, T0 + 5), ("a", C, 2, T0 + 65), ("b", V, 7.5, T0 + 5)))]
        )
    ) == [None]
    a = run(store.get_metric("a"))
    assert a is not None
    assert a.type is C
    assert a.last_point_at == T0 + 65
    assert len(a.stat_key) == 32
    assert run(store.read_points(a.id, T0, T0 + DAY)) == [(T0 + 5, 1), (T0 + 65, 2)]
    minute = run(store.read_cells(a.id, Resolution.MINUTE, T0, T0 + DAY, sketches=True))
    assert [row[:3] for row in minute] == [(T0, 1, 1), (T0 + 60, 1, 2)]
    assert all(row[5] for row in minute)  # what percentiles need comes along
    day = run(store.read_cells(a.id, Resolution.DAY, T0, T0 + DAY, sketches=False))
    assert [tuple(row) for row in day] == [(T0, 2, 3, 1, 2, None)]


def test_raw_points_across_blocks_come_back_in_order_within_the_window(
    store: SqlStorage,
) -> None:
    run(store.apply([WriteItem(batch(("r", V, 5.0, T0 + 30), ("r", V, 1.0, T0 + 10)))]))
    run(store.apply([WriteItem(batch(("r", V, 2.0, T0 + 30), ("r", V, 9.0, T0 + 70)))]))
    run(store.apply([WriteItem(batch(("r", V, 4.0, T0 + 9.999), ("r", V, 3.0, T0 + 20.5)))]))
    metric = run(store.get_metric("r"))
    assert metric is not None
    # start inclusive, end exclusive, ties in time ordered by value
    assert run(store.read_points(metric.id, T0 + 10, T0 + 70)) == [
        (T0 + 10, 1.0),
        (T0 + 20.5, 3.0),
        (T0 + 30, 2.0),
        (T0 + 30, 5.0),
    ]
    assert run(store.read_points(metric.id, T0 + 71, T0 + 80)) == []


def test_read_series_reads_the_metric_and_every_span_at_once(store: SqlStorage) -> None:
    run(store.apply([WriteItem(batch(("s", V, 1.0, T0 + 5), ("s", V, 3.0, T0 + 65)))]))
    spans = [(None, T0 + 0.0, T0 + 60.0), (Resolution.MINUTE, T0 + 60.0, T0 + 120.0)]
    metric, reads = run(store.read_series("s", spans, sketches=True))
    assert metric is not None
    assert metric.name == "s"
    assert reads[0] == run(store.read_points(metric.id, T0, T0 + 60)) == [(T0 + 5, 1.0)]
    assert reads[1] == run(
        store.read_cells(metric.id, Resolution.MINUTE, T0 + 60, T0 + 120, sketches=True)
    )
    assert [row[:3] for row in reads[1]] == [(T0 + 60, 1, 3.0)]
    assert run(store.read_series("nothing", spans, sketches=False)) == (None, [])


def test_last_point_at_only_moves_forward(store: SqlStorage) -> None:
    def last(name: str) -> float | None:
        metric = run(store.get_metric(name))
        assert metric is not None
        return metric.last_point_at

    run(store.apply([WriteItem(batch(("p", C, 1, T0 + 100), ("q", V, 1, T0 + 7)))]))
    run(store.apply([WriteItem(batch(("p", C, 1, T0 + 50), ("q", V, 1, T0 + 9)))]))
    assert (last("p"), last("q")) == (T0 + 100, T0 + 9)
    run(store.apply([WriteItem(batch(("p", C, 1, T0 + 200)))]))
    assert (last("p"), last("q")) == (T0 + 200, T0 + 9)


def test_cells_merge_across_transactions(store: SqlStorage) -> None:
    for v in (3.0, 1.0, 5.0):
        run(store.apply([WriteItem(batch(("m", V, v, T0 + 10)))]))
    m = run(store.get_metric("m"))
    assert m is not None
    ((t, count, total, low, high, summary),) = run(
        store.read_cells(m.id, Resolution.HOUR, T0, T0 + 3600, sketches=True)
    )
    cell = Cell.stored(count, total, low, high, summary)
    assert (t, cell.count, cell.sum, cell.min, cell.max) == (T0, 3, 9, 1, 5)
    assert cell.value(Agg.P50) == 3  # small cells keep their values: exact


def test_sums_past_the_largest_double_are_stored_as_the_largest(store: SqlStorage) -> None:
    """Finite values may add up to infinity, which MySQL and MariaDB cannot store: the
    sums keep the largest double of their sign instead, on every engine, and the write
    goes through (a failing rollup would be tried again for ever)."""
    huge = sys.float_info.max
    run(store.apply([WriteItem(batch(("of", C, huge, T0 + 1), ("of", C, huge, T0 + 2)))]))
    run(store.apply([WriteItem(batch(("of", C, huge, T0 + 3)))]))  # merged into stored cells
    run(store.apply([WriteItem(batch(("uf", V, -huge, T0 + 1), ("uf", V, -huge, T0 + 2)))]))
    for name, total in (("of", huge), ("uf", -huge)):
        metric = run(store.get_metric(name))
        assert metric is not None
        for res in Resolution:
            cells = run(store.read_cells(metric.id, res, T0, T0 + DAY, sketches=False))
            assert [row[2] for row in cells] == [total], (name, res)


def test_a_conflicting_batch_is_rejected_whole_and_others_are_written(store: SqlStorage) -> None:
    run(store.apply([WriteItem(batch(("x", C, 1, T0)))]))
    results = run(
        store.apply(
            [
                WriteItem(batch(("y", C, 1, T0), ("x", V, 1, T0))),
                WriteItem(batch(("z", V, 2, T0))),
                WriteItem(batch(("z", C, 2, T0))),  # z was fixed as a value by the batch before
            ]
        )
    )
    assert results[1] is None
    assert isinstance(results[0], TypeConflict)
    assert results[0].details[0].index == 1
    assert isinstance(results[2], TypeConflict)
    assert run(store.get_metric("y")) is None
    z = run(store.get_metric("z"))
    assert z is not None
    assert z.type is V


def test_redelivered_batches_are_applied_once(store: SqlStorage) -> None:
    item = WriteItem(batch(("once", C, 1, T0), batch_id="entry-1"), dedupe=True)
    run(store.apply([item]))
    run(store.apply([item, WriteItem(batch(("once", C, 1, T0)))]))
    m = run(store.get_metric("once"))
    assert m is not None
    assert run(store.count_points(m.id)) == 2


def test_list_metrics_by_prefix_after_name(store: SqlStorage) -> None:
    names = ["a%", "a_b", "ab", "abc", "b", "A"]
    run(store.apply([WriteItem(batch(*[(n, C, 1, T0) for n in names]))]))
    assert [m.name for m in run(store.list_metrics("a", None, 10))] == ["a%", "a_b", "ab", "abc"]
    assert [m.name for m in run(store.list_metrics("a", "a_b", 10))] == ["ab", "abc"]
    assert [m.name for m in run(store.list_metrics("", None, 2))] == ["A", "a%"]
    assert [m.name for m in run(store.list_metrics("a%", None, 10))] == ["a%"]


def test_delete_metric_removes_points_and_cells(store: SqlStorage) -> None:
    run(store.apply([WriteItem(batch(("gone", C, 1, T0), ("kept", C, 1, T0)))]))
    gone = run(store.get_metric("gone"))
    assert gone is not None
    assert run(store.delete_metric("gone")) is True
    assert run(store.delete_metric("gone")) is False
    assert run(store.get_metric("gone")) is None
    assert run(store.read_points(gone.id, 0, T0 * 2)) == []
    assert run(store.read_cells(gone.id, Resolution.MINUTE, 0, T0 * 2, sketches=False)) == []
    assert run(store.get_metric("kept")) is not None


def test_keys_create_lookup_revoke(store: SqlStorage) -> None:
    key = run(
        store.create_key(
            name="ci",
            prefix="gf_AAAAAAAA",
            secret_hash="h" * 64,
            scopes=frozenset({Scope.WRITE}),
            rate_limit=10,
            now=T0,
        )
    )
    assert key.active
    assert run(store.key_by_prefix("gf_AAAAAAAA")) == key
    with pytest.raises(ValidationError):
        run(
            store.create_key(
                name="ci",
                prefix="gf_BBBBBBBB",
                secret_hash="h" * 64,
                scopes=frozenset({Scope.READ}),
                rate_limit=None,
                now=T0,
            )
        )
    run(store.touch_keys({key.id: T0 + 5}))
    assert run(store.revoke_keys("gf_AAAAAAAA", T0 + 9)) == 1
    assert run(store.revoke_keys("ci", T0 + 9)) == 0  # already revoked
    (listed,) = run(store.list_keys())
    assert (listed.last_used_at, listed.revoked_at, listed.active) == (T0 + 5, T0 + 9, False)


def test_retention_deletes_old_blocks_and_cells_in_chunks(store: SqlStorage) -> None:
    for day in range(5):
        run(store.apply([WriteItem(batch(("r", C, 1, T0 + day * DAY)))]))
    cutoff = T0 + 2 * DAY
    cells: dict[Resolution, float] = {
        Resolution.MINUTE: cutoff,
        Resolution.HOUR: 0,
        Resolution.DAY: 0,
    }
    assert run(store.count_expired(cutoff, cells)) == (2, 2)
    assert run(store.delete_points_before(cutoff, 1)) == 1
    assert run(store.delete_points_before(cutoff, 10)) == 1
    assert run(store.delete_points_before(cutoff, 10)) == 0
    assert run(store.delete_cells_before(Resolution.MINUTE, cutoff, 10)) == 2
    m = run(store.get_metric("r"))
    assert m is not None
    assert run(store.count_points(m.id)) == 3
    assert len(run(store.read_cells(m.id, Resolution.DAY, 0, T0 * 2, sketches=False))) == 5


def test_minute_cells_of_one_quarter_hour_written_apart_are_all_kept(store: SqlStorage) -> None:
    """They share a stored row (a pack): each write rewrites it with the others' cells."""
    for minute, v in ((3, 3.0), (0, 1.0), (3, 5.0), (14, 2.0), (15, 4.0)):
        run(store.apply([WriteItem(batch(("q", V, v, T0 + 60 * minute + 1)))]))
    m = run(store.get_metric("q"))
    assert m is not None
    got = run(store.read_cells(m.id, Resolution.MINUTE, T0, T0 + 3600, sketches=False))
    assert [(t - T0, n, total) for t, n, total, *_ in got] == [
        (0, 1, 1.0),
        (180, 2, 8.0),
        (840, 1, 2.0),
        (900, 1, 4.0),
    ]
    got = run(store.read_cells(m.id, Resolution.MINUTE, T0 + 60, T0 + 900, sketches=True))
    assert [(c[0] - T0, Cell.stored(*c[1:]).max) for c in got] == [(180, 5.0), (840, 2.0)]


def test_minute_cells_go_a_quarter_hour_at_a_time(store: SqlStorage) -> None:
    """Minute cells are stored a quarter-hour to a row: retention deletes a row once its
    last minute is past the cutoff, so a minute cell may outlive it by up to 14 minutes."""
    for minute in (0, 14, 15):
        run(store.apply([WriteItem(batch(("p", C, 1, T0 + 60 * minute)))]))
    m = run(store.get_metric("p"))
    assert m is not None

    def minutes() -> list[int]:
        cells = run(store.read_cells(m.id, Resolution.MINUTE, 0, T0 * 2, sketches=False))
        return [(t - T0) // 60 for t, *_ in cells]

    assert run(store.delete_cells_before(Resolution.MINUTE, T0 + 899, 10)) == 0
    assert run(store.count_expired(0, {Resolution.MINUTE: T0 + 900})) == (0, 1)
    assert run(store.delete_cells_before(Resolution.MINUTE, T0 + 900, 10)) == 1
    assert minutes() == [15]


def test_models_and_migrations_agree(engine_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    engine = create_engine(driver_url(engine_url), poolclass=NullPool)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    engine.dispose()
    assert diff == []


def test_revoke_by_prefix_never_revokes_a_key_named_like_that_prefix(store: SqlStorage) -> None:
    for name, prefix in (("gf_CCCCCCCC", "gf_DDDDDDDD"), ("other", "gf_CCCCCCCC")):
        run(
            store.create_key(
                name=name,
                prefix=prefix,
                secret_hash="h" * 64,
                scopes=frozenset({Scope.READ}),
                rate_limit=None,
                now=T0,
            )
        )
    assert run(store.revoke_keys("gf_CCCCCCCC", T0)) == 1
    revoked = {k.name for k in run(store.list_keys()) if not k.active}
    assert revoked == {"other"}
    assert run(store.revoke_keys("gf_CCCCCCCC", T0)) == 0  # that key is revoked already


def test_old_batch_claims_are_forgotten_in_chunks(store: SqlStorage) -> None:
    for i in range(3):
        item = WriteItem(batch(("claims", C, 1, T0), batch_id=f"entry-{i}"), dedupe=True)
        run(store.apply([item]))
    future = 2 * T0  # every claim is older than this
    assert run(store.delete_claims_before(future, 2)) == 2
    assert run(store.delete_claims_before(future, 2)) == 1
    assert run(store.delete_claims_before(future, 2)) == 0
    # Forgotten claims no longer guard: the same entry would now be written again.
    run(store.apply([WriteItem(batch(("claims", C, 1, T0), batch_id="entry-0"), dedupe=True)]))
    m = run(store.get_metric("claims"))
    assert m is not None
    assert run(store.count_points(m.id)) == 4


def test_ensure_metrics_creates_once_and_keeps_existing_types(store: SqlStorage) -> None:
    run(store.apply([WriteItem(batch(("old", C, 1, T0)))]))
    made = run(store.ensure_metrics({"old": C, "new": V}))
    assert {n: m.type for n, m in made.items()} == {"old": C, "new": V}
    again = run(store.ensure_metrics({"new": C}))
    assert again["new"] == made["new"]  # same row, same stat key, type kept
    assert run(store.ensure_metrics({})) == {}


def test_ensure_metrics_creates_none_when_one_has_the_other_type(store: SqlStorage) -> None:
    """All or none: a write refused for one metric's type leaves no other behind."""
    run(store.apply([WriteItem(batch(("old", C, 1, T0)))]))
    found = run(store.ensure_metrics({"old": V, "a": V, "z": C}))
    assert {n: m.type for n, m in found.items()} == {"old": C}
    assert run(store.get_metrics(["a", "z"])) == {}
    assert set(run(store.ensure_metrics({"a": V, "z": C}))) == {"a", "z"}  # still usable


def test_reads_that_fail_midway_do_not_hide_later_writes(store: SqlStorage) -> None:
    """A read that raises with its result half read must not leave its connection, pooled
    again, on an old snapshot (SQLite: an unfinished statement pins one)."""
    from sqlalchemy import select

    for i in range(20):
        run(store.apply([WriteItem(batch(("a", C, 1, T0 + 60 * i)))]))

    def fails_midway(conn: Any) -> None:
        result = conn.execute(select(metric_points))
        result.fetchone()
        raise RuntimeError("the caller's code failed with rows still to come")

    for _ in range(8):
        with pytest.raises(RuntimeError):
            run(store._read(fails_midway))
    run(store.apply([WriteItem(batch(("b", C, 1, T0)))]))
    for _ in range(8):  # whichever pooled connection answers, it sees the new write
        assert run(store.get_metric("b")) is not None


def test_a_metric_deleted_by_another_process_comes_back_new(
    store: SqlStorage, engine_url: str
) -> None:
    """The writer remembers metrics between writes; a deletion by another connection
    must not leave it writing to the old id or checking against the old type."""
    assert store.apply_now([WriteItem(batch(("gone", C, 1, T0 + 5)))]) == [None]
    other = SqlStorage(engine_url)
    try:
        assert run(other.delete_metric("gone"))
    finally:
        run(other.close())
    assert store.apply_now([WriteItem(batch(("gone", V, 2.5, T0 + 6)))]) == [None]
    metric = run(store.get_metric("gone"))
    assert metric is not None
    assert metric.type is V
    assert run(store.count_points(metric.id)) == 1


@pytest.mark.parametrize("admin_url", [PG_URL, MARIADB_URL], ids=["postgresql", "mariadb"])
def test_a_write_racing_a_delete_makes_the_metric_anew_and_leaves_no_orphan(
    admin_url: str,
) -> None:
    """A DELETE (its transaction still open) holds the metric when a write that already
    read the metric comes to lock it. The write must not store its points under the
    deleted id, where no query finds them and no DELETE or retention removes them.
    (Server engines only: on SQLite writers take turns on the whole database.)"""
    with server_database(admin_url) as url:
        store = SqlStorage(url)
        deleter = create_engine(driver_url(url), poolclass=NullPool)
        holding = threading.Event()

        def delete_slowly() -> None:
            with deleter.begin() as conn:
                mid = conn.scalar(
                    select(metrics.c.id).where(metrics.c.name == "race").with_for_update()
                )
                conn.execute(delete(metric_points).where(metric_points.c.metric_id == mid))
                conn.execute(delete(rollups).where(rollups.c.metric_id == mid))
                conn.execute(delete(metrics).where(metrics.c.id == mid))
                holding.set()
                time.sleep(0.5)  # the write below reads the metric, then waits for it

        try:
            assert store.apply_now([WriteItem(batch(("race", C, 1, T0 + 5)))]) == [None]
            thread = threading.Thread(target=delete_slowly)
            thread.start()
            assert holding.wait(10)
            assert store.apply_now([WriteItem(batch(("race", C, 2, T0 + 6)))]) == [None]
            thread.join()
            metric = run(store.get_metric("race"))
            assert metric is not None
            assert run(store.read_points(metric.id, T0, T0 + DAY)) == [(T0 + 6, 2)]
            with deleter.connect() as conn:
                known = select(metrics.c.id)
                for table in (metric_points, rollups):
                    orphans = select(func.count()).where(table.c.metric_id.not_in(known))
                    assert conn.scalar(orphans) == 0, table.name
        finally:
            run(store.close())
            deleter.dispose()


@pytest.mark.parametrize("admin_url", [PG_URL, MARIADB_URL], ids=["postgresql", "mariadb"])
def test_a_delete_waits_for_a_write_that_holds_the_metric_and_takes_its_points(
    admin_url: str,
) -> None:
    """The other order: a write holds the metric's row (`_apply` locks it before adding
    points) when the DELETE starts. The DELETE must wait for it, then delete its points
    too; deleting the points it could see first, it would leave the new ones under an
    id no metric has."""
    with server_database(admin_url) as url:
        store = SqlStorage(url)
        writer = create_engine(driver_url(url), poolclass=NullPool)
        try:
            assert store.apply_now([WriteItem(batch(("held", C, 1, T0 + 5)))]) == [None]
            metric = run(store.get_metric("held"))
            assert metric is not None
            with writer.begin() as conn:  # the write, mid-transaction
                conn.execute(
                    select(metrics.c.id).where(metrics.c.id == metric.id).with_for_update()
                )
                deleting = threading.Thread(target=lambda: run(store.delete_metric("held")))
                deleting.start()
                time.sleep(0.3)  # the DELETE runs meanwhile, as far as it can
                copy = select(
                    metric_points.c.metric_id,
                    metric_points.c.t_min,
                    metric_points.c.t_max,
                    metric_points.c.n,
                    metric_points.c.data,
                ).where(metric_points.c.metric_id == metric.id)
                conn.execute(
                    metric_points.insert().from_select(
                        ["metric_id", "t_min", "t_max", "n", "data"], copy
                    )
                )
            deleting.join(10)
            assert run(store.get_metric("held")) is None
            with writer.connect() as conn:
                left = select(func.count()).where(metric_points.c.metric_id == metric.id)
                assert conn.scalar(left) == 0
        finally:
            run(store.close())
            writer.dispose()


@pytest.mark.parametrize("admin_url", [PG_URL, MARIADB_URL], ids=["postgresql", "mariadb"])
def test_a_failed_statement_s_error_does_not_show_its_parameters(admin_url: str) -> None:
    """Errors reach logs and the CLI's output: a key's hash must not ride along."""
    with server_database(admin_url) as url:
        store = SqlStorage(url)
        secret = "5ecre7" * 10
        try:
            with pytest.raises(DBAPIError) as failed:  # the name is over its column's 255
                run(
                    store.create_key(
                        name="n" * 300,
                        prefix="gf_abcdefgh",
                        secret_hash=secret,
                        scopes=frozenset({Scope.WRITE}),
                        rate_limit=None,
                        now=T0,
                    )
                )
            assert secret not in str(failed.value)
            assert "hidden" in str(failed.value)
        finally:
            run(store.close())


def test_a_metric_deleted_by_the_writer_s_own_storage_comes_back_new(store: SqlStorage) -> None:
    assert store.apply_now([WriteItem(batch(("again", C, 1, T0 + 5)))]) == [None]
    assert run(store.delete_metric("again"))
    assert store.apply_now([WriteItem(batch(("again", V, 2.5, T0 + 6)))]) == [None]
    metric = run(store.get_metric("again"))
    assert metric is not None
    assert metric.type is V


def test_a_write_that_failed_leaves_no_metric_behind(store: SqlStorage) -> None:
    assert store.apply_now([WriteItem(batch(("old", V, 1, T0 + 5)))]) == [None]
    old = run(store.get_metric("old"))
    assert old is not None
    with store._write_engine.begin() as conn:  # a stored cell the merge refuses
        conn.execute(
            update(rollups)
            .where(rollups.c.metric_id == old.id, rollups.c.res == int(Resolution.DAY))
            .values(sketch=bytes([VALUES_TAG, 1, 2]))
        )
    with pytest.raises(ValueError, match="corrupt"):
        store.apply_now([WriteItem(batch(("new", C, 1, T0 + 5), ("old", V, 2, T0 + 6)))])
    assert run(store.get_metric("new")) is None
    # Had the failed write's new metric been remembered, this would be a type conflict.
    assert store.apply_now([WriteItem(batch(("new", V, 3, T0 + 7)))]) == [None]
    new = run(store.get_metric("new"))
    assert new is not None
    assert new.type is V
