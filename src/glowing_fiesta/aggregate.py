"""Rollup cells: fold points into cells, merge cells, finalise a cell to an aggregate (pure).

A cell summarises the points of one metric in one time span: count, sum, min, max and a
mergeable quantile sketch. Merging two cells gives exactly the cell of the union of their
points (the sketch within its relative accuracy), which is what lets a day's p99 be
computed from minute cells without averaging percentiles.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from glowing_fiesta.model import Agg, Resolution
from glowing_fiesta.sketch import Sketch


@dataclass(slots=True)
class Cell:
    count: int
    sum: float
    min: float
    max: float
    sketch: Sketch | None = None

    @classmethod
    def of(cls, values: Sequence[float]) -> Cell:
        """The cell of a non-empty list of values, sketch included."""
        sketch = Sketch()
        sketch.add_many(values)
        return cls(len(values), sum(values), min(values), max(values), sketch)

    def merge(self, other: Cell) -> None:
        """Fold `other` into this cell. Sketches merge when both sides carry one."""
        self.count += other.count
        self.sum += other.sum
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)
        if other.sketch is not None:
            if self.sketch is None:
                self.sketch = Sketch()
            self.sketch.merge(other.sketch)

    def value(self, agg: Agg) -> float | None:
        """The aggregate of this cell; percentiles need the sketch."""
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
        if q is None or self.sketch is None:  # pragma: no cover - callers load sketches
            raise ValueError(f"aggregate {agg} needs the cell's sketch")
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
