"""Rollup cells: small cells keep exact values, large ones a sketch; merging is exact."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from glowing_fiesta.aggregate import SMALL, Cell, fold
from glowing_fiesta.model import Agg, Resolution

finite = st.floats(-1e6, 1e6, allow_nan=False)


def lower_rank(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[math.floor(q * (len(ordered) - 1))]


@given(st.lists(st.lists(finite, min_size=1, max_size=40), min_size=1, max_size=6))
def test_merged_cells_answer_like_one_cell_of_all_values(parts: list[list[float]]) -> None:
    merged = Cell.of(parts[0])
    for part in parts[1:]:
        # Through storage and back, as the writer does between transactions.
        other = Cell.of(part)
        merged.merge(Cell.stored(other.count, other.sum, other.min, other.max, other.summary()))
    everything = [v for part in parts for v in part]
    assert merged.count == len(everything)
    assert merged.min == min(everything)
    assert merged.max == max(everything)
    assert merged.sum == pytest.approx(math.fsum(everything), abs=1e-6)
    for agg in (Agg.P50, Agg.P90, Agg.P99):
        assert agg.quantile is not None
        want = lower_rank(everything, agg.quantile)
        got = merged.value(agg)
        assert got is not None
        if len(everything) <= SMALL:
            assert got == want  # small cells are exact
        else:
            assert got == pytest.approx(want, rel=0.01, abs=1e-9)


def test_small_cells_store_values_and_big_ones_a_sketch() -> None:
    small = Cell.of([1.0, 2.0, 3.0])
    assert small.values == [1.0, 2.0, 3.0]
    assert len(small.summary()) == 1 + 3 * 8
    big = Cell.of([float(i) for i in range(SMALL + 1)])
    assert big.values is None
    assert big.sketch is not None
    small.merge(big)  # grows past SMALL: becomes a sketch
    # Read the merged cell through a fresh name: mypy keeps `small.values` narrowed to a
    # list from the first assert, not knowing that merge() replaces it.
    merged: Cell = small
    assert merged.values is None
    assert merged.count == SMALL + 4


def test_stored_summary_rejects_corrupt_bytes() -> None:
    with pytest.raises(ValueError, match="corrupt"):
        Cell.stored(1, 1.0, 1.0, 1.0, bytes((0xE0, 1, 2)))


def test_fold_builds_every_resolution_from_the_same_points() -> None:
    rng = random.Random(7)
    points = [(1_700_000_000 + rng.uniform(0, 86400 * 2), rng.uniform(0, 10)) for _ in range(500)]
    cells = fold(points)
    for res in Resolution:
        assert sum(c.count for c in cells[res].values()) == 500
        assert all(start % res == 0 for start in cells[res])
