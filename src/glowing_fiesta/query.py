"""Plan a series query over rollups, read it, merge cells into buckets, finalise, fill.

Planning: the buckets of the query (calendar-aligned in its zone) decide the coarsest
rollup resolution whose UTC-aligned cells tile every bucket boundary. The range
[from, to) is covered by cells of that resolution, with finer cells at ragged edges and
raw points only for the sub-minute slivers at the very edges (or for a whole range in a
zone whose offset is not a whole minute). So no query scans raw points beyond a minute
at each end, whatever its length.
"""

from __future__ import annotations

import base64
import binascii
import math
from bisect import bisect_right
from dataclasses import dataclass
from typing import Any

from glowing_fiesta.aggregate import Cell
from glowing_fiesta.errors import Detail, NotFound, ValidationError
from glowing_fiesta.ingest.validate import trim
from glowing_fiesta.model import Agg, Fill, Interval, Metric, MetricType, Resolution
from glowing_fiesta.storage.base import CellRow, Storage
from glowing_fiesta.timeutil import bucket_starts, tiling_resolution, zone

MAX_BUCKETS = 10_000
MAX_LIST = 1000
_FINER: dict[Resolution, Resolution | None] = {
    Resolution.DAY: Resolution.HOUR,
    Resolution.HOUR: Resolution.QUARTER_HOUR,
    Resolution.QUARTER_HOUR: Resolution.MINUTE,
    Resolution.MINUTE: None,
}


@dataclass(frozen=True, slots=True)
class SeriesQuery:
    metric: str
    start: float
    end: float
    interval: Interval = Interval.HOUR
    agg: Agg | None = None
    tz: str = "UTC"
    fill: Fill | None = None


@dataclass(frozen=True, slots=True)
class Series:
    metric: Metric
    interval: Interval
    agg: Agg
    tz: str
    start: float
    end: float
    points: list[tuple[int, float | None]]


@dataclass(frozen=True, slots=True)
class Span:
    """A piece of the plan: cells of `res` in [start, end), or raw points if res is None."""

    res: Resolution | None
    start: float
    end: float


def plan(start: float, end: float, res: Resolution | None) -> list[Span]:
    """Cover [start, end) with the coarsest cells that fit, finer ones at the edges."""
    if start >= end:
        return []
    if res is None:
        return [Span(None, start, end)]
    lo = math.ceil(start / res) * res
    hi = math.floor(end / res) * res
    finer = _FINER[res]
    if lo >= hi:
        return plan(start, end, finer)
    return [*plan(start, lo, finer), Span(res, lo, hi), *plan(hi, end, finer)]


# Where a plain aggregate sits in a stored row (start, count, sum, min, max, summary).
_FIELD = {Agg.SUM: 2, Agg.MIN: 3, Agg.MAX: 4}


def _finalise(
    starts: list[int], buckets: list[CellRow | Cell | None], agg: Agg, fill: Fill
) -> list[tuple[int, float | None]]:
    """One (start, value) per bucket, filled as asked. It runs once per bucket, so a
    stored row's value is read in place rather than through a Cell, and each plain
    aggregate is one comprehension (a day of minutes: 0.74 -> ~0.25 ms)."""
    empty = 0.0 if fill is Fill.ZERO else None
    field = _FIELD.get(agg)
    # Any: a bucket is a stored row (a tuple) or a Cell, told apart by class inline.
    pairs: zip[tuple[int, Any]] = zip(starts, buckets, strict=True)
    points: list[tuple[int, float | None]]
    if field is not None:
        points = [
            (t, empty if b is None else b.value(agg) if b.__class__ is Cell else b[field])
            for t, b in pairs
        ]
    elif agg is Agg.AVG:
        points = [
            (t, empty if b is None else b.value(agg) if b.__class__ is Cell else b[2] / b[1])
            for t, b in pairs
        ]
    elif agg is Agg.COUNT:
        points = [
            (t, empty if b is None else float(b.count if b.__class__ is Cell else b[1]))
            for t, b in pairs
        ]
    else:  # percentiles: every bucket through a Cell
        points = [
            (
                t,
                empty
                if b is None
                else (b if b.__class__ is Cell else Cell.stored(*b[1:])).value(agg),
            )
            for t, b in pairs
        ]
    if fill is Fill.NONE:
        points = [p for p, b in zip(points, buckets, strict=True) if b is not None]
    return points


def _place(
    starts: list[int], spans: list[Span], reads: list[list[Any]]
) -> list[CellRow | Cell | None]:
    """Each read row or raw sliver into the bucket that contains its start."""
    # A bucket holds the one stored row that fell in it (the common case: cells as
    # wide as buckets), or a Cell once a second one has to be merged in. Rows arrive
    # in time order, so a moving index finds their bucket. This loop runs once per
    # cell (1,440 for a day of minutes): it is kept flat on purpose.
    buckets: list[CellRow | Cell | None] = [None] * len(starts)
    i = 0
    last = len(starts) - 1
    for span, found in zip(spans, reads, strict=True):
        if span.res is None:
            # Sub-minute slivers at the edges: a few raw points, made into cells.
            raw: dict[int, list[float]] = {}
            for t, v in found:
                raw.setdefault(bisect_right(starts, t) - 1, []).append(v)
            for k, values in raw.items():
                edge = Cell.of(values)
                current = buckets[k]
                if current is None:
                    buckets[k] = edge
                else:
                    if not isinstance(current, Cell):
                        current = buckets[k] = Cell.stored(*current[1:])
                    current.merge(edge)
            continue
        if found:
            # Cells as wide as buckets, one per bucket with none missing (a busy
            # metric's day of minutes): the rows are the buckets, placed in C.
            k = bisect_right(starts, found[0][0]) - 1
            n = len(found)
            if (
                starts[k : k + n] == [row[0] for row in found]
                and buckets[k : k + n].count(None) == n
            ):
                buckets[k : k + n] = found
                i = max(i, k + n - 1)
                continue
        for row in found:
            t = row[0]
            while i < last and starts[i + 1] <= t:
                i += 1
            current = buckets[i]
            if current is None:
                buckets[i] = row
                continue
            if not isinstance(current, Cell):
                current = buckets[i] = Cell.stored(*current[1:])
            current.merge(Cell.stored(*row[1:]))
    return buckets


def default_agg(mtype: MetricType) -> Agg:
    return Agg.SUM if mtype is MetricType.COUNTER else Agg.AVG


def default_fill(mtype: MetricType) -> Fill:
    return Fill.ZERO if mtype is MetricType.COUNTER else Fill.NULL


def metric_name(raw: str) -> str:
    """The name a query means (trimmed as a write's is), or a 422 on `metric` when
    nothing is left: no metric can have that name."""
    name = trim(raw)
    if not name:
        raise ValidationError(
            "metric is required (a name that is not only white space)",
            [Detail("is required (a name that is not only white space)", field="metric")],
        )
    return name


class QueryService:
    def __init__(self, storage: Storage, max_buckets: int = MAX_BUCKETS) -> None:
        self.storage = storage
        self.max_buckets = max_buckets

    async def series(self, q: SeriesQuery) -> Series:
        name = metric_name(q.metric)
        if q.start >= q.end:
            raise ValidationError(
                "'from' must be earlier than 'to'",
                [Detail("must be earlier than 'to'", field="from")],
            )
        try:
            tz = zone(q.tz)
        except ValueError as exc:
            raise ValidationError(str(exc), [Detail(str(exc), field="tz")]) from None
        try:
            starts = bucket_starts(q.interval, tz, q.start, q.end, self.max_buckets)
            inner = starts[1:]
            res = tiling_resolution(q.interval, tz, inner) if inner else Resolution.DAY
        except ValueError:
            # `from` and `to` are within years 1-9999 UTC (parse_time), but a bucket
            # around them may not be, in the zone's calendar: 9999-12-31 in a zone east
            # of UTC, or the month holding 9999-12-01 (its end is in year 10000).
            field = "from" if q.start < 0 else "to"
            msg = (
                f"the {q.interval.value} buckets of this range in {q.tz} reach beyond the "
                "years 0001 to 9999"
            )
            raise ValidationError(msg, [Detail(msg, field=field)]) from None
        if len(starts) > self.max_buckets:
            msg = (
                f"the query would return more than {self.max_buckets:,} buckets; "
                "shorten the range or choose a coarser interval"
            )
            raise ValidationError(msg, [Detail(msg, field="interval")])
        spans = plan(q.start, q.end, res)
        # Default aggregates (sum, avg) never need percentile data, so what to read is
        # known before the metric's type is, and one round trip reads everything.
        need_sketch = q.agg is not None and q.agg.quantile is not None
        metric, reads = await self.storage.read_series(
            name, [(s.res, s.start, s.end) for s in spans], sketches=need_sketch
        )
        if metric is None:
            raise NotFound(f"no metric named {name!r}")
        agg = q.agg or default_agg(metric.type)
        fill = q.fill or default_fill(metric.type)

        buckets = _place(starts, spans, reads)
        return Series(
            metric,
            q.interval,
            agg,
            q.tz,
            q.start,
            q.end,
            _finalise(starts, buckets, agg, fill),
        )

    async def list_metrics(
        self, prefix: str, limit: int, cursor: str | None
    ) -> tuple[list[Metric], str | None]:
        if not 1 <= limit <= MAX_LIST:
            raise ValidationError(
                f"limit must be between 1 and {MAX_LIST}",
                [Detail(f"must be between 1 and {MAX_LIST}", field="limit")],
            )
        after = decode_cursor(cursor) if cursor else None
        found = await self.storage.list_metrics(prefix, after, limit + 1)
        page = found[:limit]
        next_cursor = encode_cursor(page[-1].name) if len(found) > limit else None
        return page, next_cursor

    async def delete(self, name: str) -> None:
        name = metric_name(name)
        if not await self.storage.delete_metric(name):
            raise NotFound(f"no metric named {name!r}")


def encode_cursor(name: str) -> str:
    return base64.urlsafe_b64encode(name.encode("utf-8")).decode("ascii").rstrip("=")


def decode_cursor(cursor: str) -> str:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        raw = base64.b64decode(padded.encode("ascii"), altchars=b"-_", validate=True)
        return raw.decode("utf-8")
    except (ValueError, UnicodeError, binascii.Error):
        raise ValidationError(
            "cursor is not one this service gave out", [Detail("is not valid", field="cursor")]
        ) from None
