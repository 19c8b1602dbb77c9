"""A batch as columns (storage.columns): the same points, and type conflicts named per
point as before."""

from __future__ import annotations

from glowing_fiesta.model import MetricType, Point, PointBatch, PointColumns
from glowing_fiesta.storage.base import WriteItem
from glowing_fiesta.storage.columns import Columns, stacked

C, V = MetricType.COUNTER, MetricType.VALUE
POINTS = [
    Point("signups", C, 1.0, 1_700_000_000.5),
    Point("latency ms", V, 182.5, 1_700_000_001.0),
    Point("signups", C, 3.0, 1_699_999_999.25),
    Point("é ünïcode", V, -0.0, 1_700_000_002.0),
    Point("latency ms", V, 1e300, 1_700_000_003.0),
]


def columns(dedupe: bool = False) -> Columns:
    return Columns.of(WriteItem(PointBatch("b1", POINTS), dedupe=dedupe))


def test_columns_keep_every_point_in_order_with_its_name_type_time_and_value() -> None:
    cols = columns(dedupe=True)
    assert (cols.batch_id, cols.dedupe, len(cols)) == ("b1", True, 5)
    assert list(cols.pairs()) == [("signups", C), ("latency ms", V), ("é ünïcode", V)]
    ids = {"signups": 7, "latency ms": 9, "é ünïcode": 2}
    metric, time, value = stacked([cols], ids)
    assert metric.tolist() == [ids[p.metric] for p in POINTS]
    assert time.tolist() == [p.timestamp for p in POINTS]
    assert value.tolist() == [p.value for p in POINTS]


def test_one_point_s_columns_are_those_of_a_list_of_it() -> None:
    # Single writes build their columns with `one`; the writer stacks them with the
    # columns of batches built with `of`, byte for byte.
    for point in POINTS:
        assert PointColumns.one(point) == PointColumns.of([point])
    singles = [
        Columns.of(WriteItem(PointBatch(f"s{i}", columns=PointColumns.one(p)), dedupe=False))
        for i, p in enumerate(POINTS)
    ]
    ids = {"signups": 7, "latency ms": 9, "é ünïcode": 2}
    metric, time, value = stacked(singles, ids)
    assert metric.tolist() == [ids[p.metric] for p in POINTS]
    assert time.tolist() == [p.timestamp for p in POINTS]
    assert value.tolist() == [p.value for p in POINTS]


def test_batches_stacked_keep_each_point_with_its_own_batch_s_metric() -> None:
    # Each batch numbers its names from 0: the second's "signups" is its name 1.
    first = Columns.of(WriteItem(PointBatch("b1", POINTS[:2])))
    single = Columns.of(WriteItem(PointBatch("b2", [POINTS[3]])))
    second = Columns.of(WriteItem(PointBatch("b3", [POINTS[4], POINTS[2], POINTS[4]])))
    ids = {"signups": 7, "latency ms": 9, "é ünïcode": 2}
    metric, time, value = stacked([first, single, second], ids)
    points = [*POINTS[:2], POINTS[3], POINTS[4], POINTS[2], POINTS[4]]
    assert metric.tolist() == [ids[p.metric] for p in points]
    assert time.tolist() == [p.timestamp for p in points]
    assert value.tolist() == [p.value for p in points]
    time[0] = 0.0  # the rollup may work on them in place


def test_a_conflict_names_every_point_of_a_metric_stored_with_the_other_type() -> None:
    conflict = columns().conflict({"latency ms": C, "signups": C})
    assert conflict is not None
    assert [d.index for d in conflict.details] == [1, 4]
    assert conflict.details[0].field == "metric"
    assert conflict.message == "metric 'latency ms' is a counter, not a value"


def test_no_conflict_when_every_stored_type_matches_or_is_unknown() -> None:
    assert columns().conflict({"signups": C}) is None
    assert columns().conflict({}) is None


def test_an_empty_batch_has_no_points() -> None:
    cols = Columns.of(WriteItem(PointBatch("b2", [])))
    assert len(cols) == 0
    assert [a.tolist() for a in stacked([cols], {})] == [[], [], []]


def test_a_batch_held_as_columns_is_the_batch_of_its_points() -> None:
    held = PointBatch("b3", columns=PointColumns.of(POINTS))
    assert len(held) == 5
    assert held.points == POINTS
    assert held == PointBatch("b3", POINTS)
    assert held != PointBatch("b4", POINTS)
    assert Columns.of(WriteItem(held)) == Columns.of(WriteItem(PointBatch("b3", POINTS)))
    assert "5" in repr(held)
