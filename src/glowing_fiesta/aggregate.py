"""Rollup cells: fold points into cells, merge cells, finalise a cell to an aggregate (pure).

A cell summarises the points of one metric in one time span: count, sum, min, max and
what percentiles need. Merging two cells gives exactly the cell of the union of their
points, which is what lets a day's p99 be computed from minute cells without averaging
percentiles.

What percentiles need is, for a small cell (at most `SMALL` values), the values
themselves: exact, and about ten times cheaper to build, merge and store than a sketch
(most minute cells hold a handful of points). A cell that grows past `SMALL` values
turns into a mergeable relative-error sketch (`sketch.Sketch`). Either way percentiles
use the same lower-rank definition: the element of rank floor(q * (n - 1)).
"""

from __future__ import annotations

import math
import struct
import sys
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from glowing_fiesta.model import Agg, Resolution
from glowing_fiesta.sketch import Sketch

SMALL = 16
# First byte of a stored list of exact values; sketches start with their version (1).
VALUES_TAG = 0xE0
_LARGEST = sys.float_info.max


def bounded_sum(total: float) -> float:
    """A cell's sum as stored: a sum past the largest double (finite values can add up
    to infinity) is kept as the largest double of its sign. MySQL and MariaDB cannot
    store an infinity at all: a rollup holding one would fail, and be tried again, for
    ever."""
    if -_LARGEST <= total <= _LARGEST:
        return total
    return math.copysign(_LARGEST, total)


def bounded_sums(totals: list[float]) -> list[float]:
    """`bounded_sum` of each, the same list when none needs it (nearly always: one
    pass in C finds out)."""
    if math.isfinite(sum(totals)):
        return totals
    return [bounded_sum(t) for t in totals]


@dataclass(slots=True)
class Cell:
    count: int
    sum: float
    min: float
    max: float
    sketch: Sketch | None = None
    values: list[float] | None = None

    @classmethod
    def of(cls, values: Sequence[float]) -> Cell:
        """The cell of a non-empty list of values, with what percentiles need."""
        cell = cls(len(values), bounded_sum(sum(values)), min(values), max(values))
        if len(values) <= SMALL:
            cell.values = list(values)
        else:
            cell.sketch = Sketch()
            cell.sketch.add_many(values)
        return cell

    @classmethod
    def stored(
        cls, count: int, total: float, low: float, high: float, summary: bytes | None
    ) -> Cell:
        """A cell as read from storage; `summary` None when percentiles were not asked."""
        cell = cls(count, total, low, high)
        if summary is None:
            return cell
        if summary[:1] == bytes((VALUES_TAG,)):
            n = (len(summary) - 1) // 8
            if len(summary) != 1 + 8 * n:
                raise ValueError("corrupt stored values")
            cell.values = list(struct.unpack_from(f"<{n}d", summary, 1))
        else:
            cell.sketch = Sketch.from_bytes(summary)
        return cell

    def summary(self) -> bytes:
        """What is stored beside count/sum/min/max for percentiles."""
        if self.values is not None:
            return bytes((VALUES_TAG,)) + struct.pack(f"<{len(self.values)}d", *self.values)
        return (self.sketch or Sketch()).to_bytes()

    def merge(self, other: Cell) -> None:
        """Fold `other` into this cell. Percentile data merges when both sides carry it.
        The sum is bounded as a stored cell's is: a query's bucket merged from cells, or
        from raw points at the range's edges, answers what one stored cell would."""
        self.count += other.count
        self.sum = bounded_sum(self.sum + other.sum)
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)
        if other.values is not None:
            if self.values is not None:
                self.values.extend(other.values)
                if len(self.values) > SMALL:
                    self._to_sketch()
            elif self.sketch is not None:
                self.sketch.add_many(other.values)
        elif other.sketch is not None:
            if self.values is not None:
                self._to_sketch()
            if self.sketch is not None:
                self.sketch.merge(other.sketch)

    def _to_sketch(self) -> None:
        sketch = Sketch()
        sketch.add_many(self.values or [])
        self.sketch, self.values = sketch, None

    def value(self, agg: Agg) -> float | None:
        """The aggregate of this cell; percentiles need the cell's values or sketch."""
        if agg is Agg.SUM:
            return self.sum
        if agg is Agg.COUNT:
            return float(self.count)
        if agg is Agg.AVG:
            return self.sum / self.count if self.count else None
        if agg is Agg.MIN:
            return self.min
        if agg is Agg.MAX:
            return self.max
        q = agg.quantile
        if q is not None and self.values is not None:
            ordered = sorted(self.values)
            return ordered[math.floor(q * (len(ordered) - 1))] if ordered else None
        if q is None or self.sketch is None:  # pragma: no cover - callers load summaries
            raise ValueError(f"aggregate {agg} needs the cell's values or sketch")
        return self.sketch.quantile(q)


def fold(points: Iterable[tuple[float, float]]) -> dict[Resolution, dict[int, Cell]]:
    """Cells of every resolution for one metric's points, keyed by cell start (UTC)."""
    by_minute: defaultdict[int, list[float]] = defaultdict(list)
    for t, v in points:
        by_minute[int(t // 60) * 60].append(v)
    minute_cells = {start: Cell.of(values) for start, values in by_minute.items()}
    out: dict[Resolution, dict[int, Cell]] = {Resolution.MINUTE: minute_cells}
    for res in (Resolution.QUARTER_HOUR, Resolution.HOUR, Resolution.DAY):
        coarse: dict[int, list[float]] = defaultdict(list)
        for start, values in by_minute.items():
            coarse[start // res * res].extend(values)
        out[res] = {start: Cell.of(values) for start, values in coarse.items()}
    return out
