"""The query engine against brute force over the same raw points, on a real SQLite file."""

from __future__ import annotations

import asyncio
import math
import uuid
from bisect import bisect_right
from collections.abc import Iterator
from datetime import datetime
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from glowing_fiesta.model import Agg, Fill, Interval, MetricType, Point, PointBatch
from glowing_fiesta.query import QueryService, SeriesQuery
from glowing_fiesta.storage.base import WriteItem
from glowing_fiesta.storage.sql import SqlStorage
from glowing_fiesta.timeutil import bucket_starts, zone

ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "Asia/Kathmandu"]
T0 = int(datetime(2024, 3, 25, tzinfo=ZoneInfo("UTC")).timestamp())  # spans Berlin's DST
SPAN = 14 * 86400


@pytest.fixture
def storage(database_url: str) -> Iterator[SqlStorage]:
    s = SqlStorage(database_url)
    yield s
    asyncio.run(s.close())


def write(
    storage: SqlStorage, name: str, mtype: MetricType, pts: list[tuple[float, float]]
) -> None:
    batch = PointBatch(uuid.uuid4().hex, [Point(name, mtype, v, t) for t, v in pts])
    assert asyncio.run(storage.apply([WriteItem(batch)])) == [None]


def brute(
    pts: list[tuple[float, float]], q: SeriesQuery, agg: Agg
) -> list[tuple[int, float | None]]:
    starts = bucket_starts(q.interval, zone(q.tz), q.start, q.end, 100_000)
    values: list[list[float]] = [[] for _ in starts]
    for t, v in pts:
        if q.start <= t < q.end:
            values[bisect_right(starts, t) - 1].append(v)
    out: list[tuple[int, float | None]] = []
    for s, vs in zip(starts, values, strict=True):
        if not vs:
            out.append((s, None))
        elif agg is Agg.SUM:
            out.append((s, math.fsum(vs)))
        elif agg is Agg.AVG:
            out.append((s, math.fsum(vs) / len(vs)))
        elif agg is Agg.MIN:
            out.append((s, min(vs)))
        elif agg is Agg.MAX:
            out.append((s, max(vs)))
        elif agg is Agg.COUNT:
            out.append((s, float(len(vs))))
        else:
            assert agg.quantile is not None
            ordered = sorted(vs)
            out.append((s, ordered[int(agg.quantile * (len(ordered) - 1))]))
    return out


def close(got: float | None, want: float | None, agg: Agg) -> bool:
    if got is None or want is None:
        return got is want
    rel = 0.01 if agg.quantile is not None else 1e-9
    return math.isclose(got, want, rel_tol=rel, abs_tol=1e-9)


point_lists = st.lists(
    st.tuples(
        st.floats(T0, T0 + SPAN, allow_nan=False).map(lambda t: round(t, 3)),
        st.one_of(st.floats(-1e6, 1e6, allow_nan=False), st.integers(-5, 50).map(float)),
    ),
    min_size=1,
    max_size=300,
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    pts=point_lists,
    interval=st.sampled_from(list(Interval)),
    tz=st.sampled_from(ZONES),
    aggs=st.lists(st.sampled_from(list(Agg)), min_size=1, max_size=4, unique=True),
    cut=st.tuples(st.floats(0, 0.5), st.floats(0.5, 1.0)),
    split=st.integers(1, 5),
)
def test_rollup_answers_equal_brute_force(
    storage: SqlStorage,
    pts: list[tuple[float, float]],
    interval: Interval,
    tz: str,
    aggs: list[Agg],
    cut: tuple[float, float],
    split: int,
) -> None:
    name = f"m-{uuid.uuid4().hex}"
    # Several writes, so cells are merged across transactions as in real life.
    for i in range(split):
        chunk = pts[i::split]
        if chunk:
            write(storage, name, MetricType.VALUE, chunk)
    start = T0 + cut[0] * SPAN
    end = T0 + cut[1] * SPAN + 1
    if interval is Interval.MINUTE:
        end = min(end, start + 5 * 86400)
    service = QueryService(storage)
    for agg in aggs:
        q = SeriesQuery(name, start, end, interval, agg, tz, Fill.NULL)
        got = asyncio.run(service.series(q)).points
        want = brute(pts, q, agg)
        assert [t for t, _ in got] == [t for t, _ in want]
        for (t, g), (_, w) in zip(got, want, strict=True):
            assert close(g, w, agg), (agg, t, g, w)


def test_long_hourly_query_reads_only_rollups(storage: SqlStorage) -> None:
    """90 days of hours over ~100,000 points: the storage is never asked for raw points."""
    start = T0 - 90 * 86400
    pts = [(start + i * 77.76, float(i % 10)) for i in range(100_000)]
    for i in range(0, len(pts), 10_000):
        write(storage, "busy", MetricType.COUNTER, pts[i : i + 10_000])
    before = storage.stats()
    series = asyncio.run(
        QueryService(storage).series(
            SeriesQuery("busy", start, start + 90 * 86400, Interval.HOUR, Agg.SUM)
        )
    )
    after = storage.stats()
    assert after.raw_reads == before.raw_reads
    assert after.cell_reads - before.cell_reads <= 3
    assert len(series.points) == 90 * 24
    assert sum(v or 0 for _, v in series.points) == sum(v for _, v in pts)


def test_unaligned_edges_read_only_sub_minute_slivers(storage: SqlStorage) -> None:
    write(storage, "edges", MetricType.COUNTER, [(T0 + i, 1.0) for i in range(7200)])
    before = storage.stats()
    series = asyncio.run(
        QueryService(storage).series(
            SeriesQuery("edges", T0 + 30.5, T0 + 7000.25, Interval.HOUR, Agg.COUNT)
        )
    )
    assert storage.stats().raw_reads - before.raw_reads == 2
    assert [v for _, v in series.points] == [3600 - 31, 7001 - 3600]


def test_dst_days_are_23_and_25_hours(storage: SqlStorage) -> None:
    """One point per UTC hour: local days across DST changes hold 23 and 25 of them."""
    berlin = ZoneInfo("Europe/Berlin")
    spring = int(datetime(2024, 3, 30, tzinfo=berlin).timestamp())
    autumn = int(datetime(2024, 10, 26, tzinfo=berlin).timestamp())
    for base in (spring, autumn):
        write(
            storage,
            "hourly",
            MetricType.COUNTER,
            [(base + h * 3600 + 10, 1.0) for h in range(24 * 3)],
        )
    service = QueryService(storage)
    for base, day_lengths in ((spring, [24, 23, 24]), (autumn, [24, 25, 24])):
        series = asyncio.run(
            service.series(
                SeriesQuery(
                    "hourly", base, base + 72 * 3600 - 1, Interval.DAY, Agg.SUM, "Europe/Berlin"
                )
            )
        )
        starts = [t for t, _ in series.points][:3]
        assert [datetime.fromtimestamp(t, berlin).hour for t in starts] == [0, 0, 0]
        assert [b - a for a, b in pairwise(starts)] == [d * 3600 for d in day_lengths[:2]]
        assert [v for _, v in series.points][:2] == day_lengths[:2]


@pytest.mark.parametrize(("tz", "offset_minutes"), [("Asia/Kolkata", 330), ("Asia/Kathmandu", 345)])
def test_days_in_fractional_offset_zones_start_at_local_midnight(
    storage: SqlStorage, tz: str, offset_minutes: int
) -> None:
    day = int(datetime(2024, 6, 10, tzinfo=ZoneInfo("UTC")).timestamp())
    local_midnight = day - offset_minutes * 60
    write(
        storage,
        "frac",
        MetricType.COUNTER,
        [
            (local_midnight - 1, 1.0),
            (local_midnight, 10.0),
            (local_midnight + 86399, 100.0),
            (local_midnight + 86400, 1000.0),
        ],
    )
    series = asyncio.run(
        QueryService(storage).series(
            SeriesQuery(
                "frac",
                local_midnight - 86400,
                local_midnight + 2 * 86400,
                Interval.DAY,
                Agg.SUM,
                tz,
            )
        )
    )
    assert series.points == [
        (local_midnight - 86400, 1.0),
        (local_midnight, 110.0),
        (local_midnight + 86400, 1000.0),
    ]


def test_months_and_weeks(storage: SqlStorage) -> None:
    utc = ZoneInfo("UTC")

    def ts(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> int:
        return int(datetime(year, month, day, hour, minute, second, tzinfo=utc).timestamp())

    write(
        storage,
        "cal",
        MetricType.COUNTER,
        [
            (ts(2024, 1, 31, 23, 59, 59), 1.0),
            (ts(2024, 2, 1), 2.0),
            (ts(2024, 2, 29, 12), 4.0),
            (ts(2024, 3, 1), 8.0),
            (ts(2024, 12, 29, 23), 16.0),
            (ts(2024, 12, 30), 32.0),
            (ts(2025, 1, 5, 23, 59), 64.0),
            (ts(2025, 1, 6), 128.0),
        ],
    )
    service = QueryService(storage)
    months = asyncio.run(
        service.series(
            SeriesQuery("cal", ts(2024, 1, 15), ts(2024, 3, 15), Interval.MONTH, Agg.SUM)
        )
    )
    assert months.points == [(ts(2024, 1, 1), 1.0), (ts(2024, 2, 1), 6.0), (ts(2024, 3, 1), 8.0)]
    weeks = asyncio.run(
        service.series(
            SeriesQuery("cal", ts(2024, 12, 23), ts(2025, 1, 13), Interval.WEEK, Agg.SUM)
        )
    )
    # ISO weeks: Monday 2024-12-30 starts week 1 of 2025.
    assert weeks.points == [
        (ts(2024, 12, 23), 16.0),
        (ts(2024, 12, 30), 96.0),
        (ts(2025, 1, 6), 128.0),
    ]


def test_fill_modes_and_defaults(storage: SqlStorage) -> None:
    write(storage, "c", MetricType.COUNTER, [(T0 + 10, 2.0)])
    write(storage, "v", MetricType.VALUE, [(T0 + 10, 2.0)])
    service = QueryService(storage)

    def run(name: str, fill: Fill | None) -> list[float | None]:
        q = SeriesQuery(name, T0, T0 + 180, Interval.MINUTE, None, "UTC", fill)
        return [v for _, v in asyncio.run(service.series(q)).points]

    assert run("c", None) == [2.0, 0.0, 0.0]
    assert run("v", None) == [2.0, None, None]
    assert run("v", Fill.ZERO) == [2.0, 0.0, 0.0]
    assert run("c", Fill.NONE) == [2.0]
