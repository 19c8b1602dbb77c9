"""The bulk rollup path (numpy) against the one-cell-at-a-time reference (`aggregate`).

Contract: for the same points and the same stored cells, `rollup.merge` gives every cell
the reference writer gives: count, min and max equal, sum equal up to float rounding,
sketches byte for byte, exact values as the same multiset (their order may differ). Also
the numpy helpers it relies on: `sketch.indices` (bins exactly as `Sketch.add`),
`blocks.encode_runs` (bytes exactly as `blocks.encode`) and `Points.last_times`.
"""

from __future__ import annotations

import contextlib
import math
import random
import struct
import sys
import zlib
from collections import defaultdict
from collections.abc import Callable, Sequence

import numpy as np
import pytest
import zstandard
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from glowing_fiesta import rollup
from glowing_fiesta import sketch as sk
from glowing_fiesta.aggregate import SMALL, VALUES_TAG, Cell, fold
from glowing_fiesta.model import Resolution
from glowing_fiesta.storage import blocks

Key = tuple[int, int, int]  # (metric_id, res, bucket)
Stored = tuple[int, float, float, float, bytes]  # (count, sum, min, max, summary)
Write = list[tuple[int, float, float]]  # (metric_id, time, value)

BASE = 1_699_920_000  # a UTC day boundary (and so a minute, quarter-hour and hour one)
assert BASE % Resolution.DAY == 0
METRICS = (3, 7, 11)
SKETCH_VERSION = 1
HAS_ZERO = 4
HAS_POSITIVE = 8
HAS_NEGATIVE = 16

# --- the two paths -------------------------------------------------------------------


def to_ms(t: float) -> float:
    """A time as the writer keeps it, to the millisecond (see `rollup.Pending.of`),
    never rounded into the next second."""
    return min(round(t * 1000), math.floor(t) * 1000 + 999) / 1000


def test_times_are_kept_to_the_millisecond_within_their_second() -> None:
    minute = 1_700_000_040
    sent = [minute + 59.9999, minute + 59.9995, minute + 0.1234, minute + 0.1236, minute - 1e-5]
    kept = rollup.Pending.of([1] * len(sent), sent, [1.0] * len(sent)).time.tolist()
    assert kept == [
        minute + 59.999,
        minute + 59.999,
        minute + 0.123,
        minute + 0.124,
        minute - 0.001,
    ]
    assert [math.floor(t) for t in kept] == [math.floor(t) for t in sent]


def reference_write(stored: dict[Key, Stored], write: Write) -> dict[Key, Stored]:
    """The cells the one-cell-at-a-time writer stores for `write` on top of `stored`:
    fold per metric, merge each fresh cell with its stored one, summarise."""
    per_metric: defaultdict[int, list[tuple[float, float]]] = defaultdict(list)
    for mid, t, v in write:
        per_metric[mid].append((to_ms(t), v))
    out: dict[Key, Stored] = {}
    for mid, pts in per_metric.items():
        for res, cells in fold(pts).items():
            for start, cell in cells.items():
                key = (mid, int(res), start)
                old = stored.get(key)
                if old is not None:
                    cell.merge(Cell.stored(*old))
                out[key] = (cell.count, cell.sum, cell.min, cell.max, cell.summary())
    return out


def merged_rows(
    points: rollup.Points, folded: list[rollup.Folded], stored: dict[Key, Stored]
) -> list[rollup.Row]:
    return [row for cells in rollup.merge(points, folded, stored) for row in cells.rows()]


def bulk_write(stored: dict[Key, Stored], write: Write) -> dict[Key, Stored]:
    """The cells `rollup.merge` gives for `write` on top of `stored`, as storage gets them."""
    points = rollup.Points.of(
        [mid for mid, _, _ in write], [t for _, t, _ in write], [v for _, _, v in write]
    )
    out: dict[Key, Stored] = {}
    for mid, res, start, count, total, low, high, summary in merged_rows(
        points, rollup.fold(points), stored
    ):
        key = (mid, res, start)
        assert key not in out, f"two rows for cell {key}"
        # Plain Python types: database drivers do not all adapt numpy scalars.
        assert all(type(x) is int for x in (mid, res, start, count)), key
        assert all(type(x) is float for x in (total, low, high)), key
        assert type(summary) is bytes, key
        out[key] = (count, total, low, high, summary)
    return out


def apply_writes(
    writes: Sequence[Write], path: Callable[[dict[Key, Stored], Write], dict[Key, Stored]]
) -> dict[Key, Stored]:
    """The stored cells after `writes`, one transaction each, written by `path`."""
    stored: dict[Key, Stored] = {}
    for write in writes:
        stored.update(path(stored, write))
    return stored


def magnitudes_by_cell(writes: Sequence[Write]) -> dict[Key, float]:
    """Per cell, the sum of |v| of every value in it: the scale of its sum's rounding."""
    scale: defaultdict[Key, float] = defaultdict(float)
    for write in writes:
        for mid, t, v in write:
            minute = int(to_ms(t) // 60) * 60
            for res in Resolution:
                scale[(mid, int(res), minute // res * res)] += abs(v)
    return scale


def exact_values(summary: bytes) -> list[float]:
    assert summary[:1] == bytes((VALUES_TAG,))
    assert (len(summary) - 1) % 8 == 0
    return list(struct.unpack(f"<{(len(summary) - 1) // 8}d", summary[1:]))


def kind(summary: bytes) -> str:
    if summary[:1] == bytes((VALUES_TAG,)):
        return "values"
    assert summary[:1] == bytes((SKETCH_VERSION,)), summary[:2]
    return "sketch"


def assert_same_cells(
    got: dict[Key, Stored], want: dict[Key, Stored], scale: dict[Key, float]
) -> None:
    assert sorted(got) == sorted(want)
    for key, (count, total, low, high, summary) in want.items():
        g_count, g_total, g_low, g_high, g_summary = got[key]
        assert g_count == count, key
        assert g_low == low, key
        assert g_high == high, key
        assert g_total == pytest.approx(total, rel=1e-12, abs=1e-12 * scale[key]), key
        assert kind(g_summary) == kind(summary), key
        if kind(summary) == "values":
            # Same multiset; -0.0 == 0.0 here, as the contract allows.
            assert sorted(exact_values(g_summary)) == sorted(exact_values(summary)), key
            assert len(g_summary) == len(summary), key
        else:
            assert g_summary == summary, key


def has_bins(summary: bytes) -> bool:
    return bool(summary[1] & (HAS_POSITIVE | HAS_NEGATIVE))


def check(earlier: Sequence[Write], write: Write) -> dict[Key, tuple[str | None, str]]:
    """Assert the bulk path agrees with the reference for `write` after `earlier` (stored
    by the reference); return each cell's (stored kind or None, result kind)."""
    stored = apply_writes(earlier, reference_write)
    want = reference_write(stored, write)
    got = bulk_write(stored, write)
    assert_same_cells(got, want, magnitudes_by_cell([*earlier, write]))
    return {k: (kind(stored[k][4]) if k in stored else None, kind(s[4])) for k, s in want.items()}


# --- strategies ----------------------------------------------------------------------


def signed_powers(low: float, high: float) -> st.SearchStrategy[float]:
    """Magnitudes spread evenly over 10**low..10**high, either sign."""
    return st.tuples(st.floats(low, high), st.sampled_from((1.0, -1.0))).map(
        lambda es: es[1] * 10.0 ** es[0]
    )


values = st.one_of(
    st.floats(-1e6, 1e6),  # hypothesis favours 0.0, -0.0, the bounds, subnormals
    st.sampled_from((0.0, -0.0, 1.0, -1.0, 2.5, 1e-9, -1e-9, 1.0000001e-9, 100.0)),
    st.floats(-1e-9, 1e-9),  # counted as zero by sketches
    signed_powers(-12, 12),
    signed_powers(100, 200),  # large, but sums of a few hundred stay finite
)
# A cell's values: arbitrary, or one value repeated (counters are mostly 1).
value_runs = st.one_of(
    st.lists(values, min_size=1, max_size=30),
    st.tuples(st.integers(1, 30), values).map(lambda nv: [nv[1]] * nv[0]),
)


@st.composite
def writes_over(draw: st.DrawFn, span: int) -> Write:
    """Clusters of points: each a metric, a minute within `span` seconds of BASE, and
    values at times within or just past that minute (so cells of 1 to ~60 values)."""
    out: Write = []
    for _ in range(draw(st.integers(1, 5))):
        mid = draw(st.sampled_from(METRICS))
        minute = BASE + 60 * draw(st.integers(0, span // 60 - 1))
        for v in draw(value_runs):
            offset = draw(st.one_of(st.floats(0, 90), st.sampled_from((0.0, 59.999, 60.0))))
            out.append((mid, minute + offset, v))
    return out


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[Write], Write]:
    """Earlier writes (0 to 2, already stored) and a new write over the same metrics and
    time span, minutes to days long."""
    span = draw(st.sampled_from((5 * 60, 4 * 3600, 3 * 86400)))
    earlier = draw(st.lists(writes_over(span), max_size=2))
    return earlier, draw(writes_over(span))


# --- 1. merged cells agree with the reference ------------------------------------------------


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_rows_equal_the_reference_merge(scenario: tuple[list[Write], Write]) -> None:
    earlier, write = scenario
    check(earlier, write)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
@example(([], [(3, BASE + 59.9995427, 0.0)]))  # in the next minute, to the millisecond
def test_cells_stored_by_the_bulk_path_merge_like_the_reference_ones(
    scenario: tuple[list[Write], Write],
) -> None:
    """Stored cells written by `merge` itself (exact values in another order) merge the
    same: a chain of bulk writes ends where the chain of reference writes does."""
    earlier, write = scenario
    by_reference: dict[Key, Stored] = {}
    by_bulk: dict[Key, Stored] = {}
    for w in [*earlier, write]:
        want = reference_write(by_reference, w)
        got = bulk_write(by_bulk, w)
        assert_same_cells(got, want, magnitudes_by_cell([*earlier, write]))
        by_bulk.update(got)
        by_reference.update(want)


def mixed(seed: int, n: int) -> list[float]:
    """n values of every sort: zeros of both signs, tiny, ordinary, huge, repeated."""
    rng = random.Random(seed)
    pool = (0.0, -0.0, 1e-9, -1e-9, 3e-12, 1.0, -1.0, 2.5)
    out = []
    for i in range(n):
        pick = i % 4 if i < 4 else rng.randrange(4)  # every sort, even in small cells
        if pick == 0:
            out.append(rng.choice(pool))
        elif pick == 1:
            out.append(rng.uniform(-1e3, 1e3))
        elif pick == 2:
            out.append(rng.choice((1, -1)) * 10.0 ** rng.uniform(-12, 12))
        else:
            out.append(rng.choice((1, -1)) * 10.0 ** rng.uniform(100, 200))
    return out


def minute_write(mid: int, minute: int, vals: Sequence[float], seed: int) -> Write:
    rng = random.Random(seed)
    return [(mid, minute + rng.uniform(0, 59.99), v) for v in vals]


@pytest.mark.parametrize(
    ("stored_n", "new_n", "stored_kind", "result_kind"),
    [
        pytest.param(0, 5, None, "values", id="new small"),
        pytest.param(0, SMALL, None, "values", id="new small of exactly SMALL"),
        pytest.param(0, SMALL + 1, None, "sketch", id="new sketch of SMALL+1"),
        pytest.param(0, 40, None, "sketch", id="new sketch"),
        pytest.param(6, 7, "values", "values", id="stored small + new small"),
        pytest.param(9, 7, "values", "values", id="stored small + new small = SMALL"),
        pytest.param(10, 7, "values", "sketch", id="stored small + new small over SMALL"),
        pytest.param(SMALL, 1, "values", "sketch", id="stored SMALL + one"),
        pytest.param(5, 30, "values", "sketch", id="stored small + new sketch"),
        pytest.param(30, 3, "sketch", "sketch", id="stored sketch + new small"),
        pytest.param(30, 40, "sketch", "sketch", id="stored sketch + new sketch"),
    ],
)
def test_each_kind_of_cell_merge(
    stored_n: int, new_n: int, stored_kind: str | None, result_kind: str
) -> None:
    minute = BASE + 3600
    earlier = [minute_write(3, minute, mixed(1, stored_n), 2)] if stored_n else []
    # A second metric and a neighbouring minute in the same write, so `merge` builds
    # several cells (and several sketches) at once.
    write = [
        *minute_write(3, minute, mixed(3, new_n), 4),
        *minute_write(7, minute, mixed(5, 25), 6),
        *minute_write(3, minute + 60, mixed(7, 3), 8),
    ]
    kinds = check(earlier, write)
    assert kinds[(3, int(Resolution.MINUTE), minute)] == (stored_kind, result_kind)


# --- 2. a cell spanning more than MAX_BINS bins --------------------------------------


def logspaced(low: float, high: float, n: int, sign: float = 1.0) -> list[float]:
    return [sign * v for v in np.logspace(low, high, n).tolist()]


def bin_centres(first: int, n: int) -> list[float]:
    """One value inside each of the n bins from `first` on."""
    return [sk._GAMMA ** (k - 0.5) for k in range(first, first + n)]


WIDE = [
    *logspaced(-8, 300, 5000),
    *logspaced(-5, 200, 2500, sign=-1.0),
    0.0,
    -0.0,
    1e-10,
]


@pytest.mark.parametrize(
    ("stored_values", "new_values"),
    [
        pytest.param([], WIDE, id="new cell"),
        pytest.param(mixed(11, 10), WIDE, id="stored small + new wide"),
        pytest.param(logspaced(-7.5, 290, 4000), WIDE, id="stored folded + new wide"),
        # The stored sketch is already folded; a few new small magnitudes below its
        # lowest kept bin fold again while merging.
        pytest.param(WIDE, [2e-9, -2e-9, 5e-9, 1.0], id="stored folded + new small"),
        pytest.param(logspaced(-8, 0, 1500), logspaced(0.01, 8, 1500), id="fold only at merge"),
        pytest.param([], bin_centres(-100, sk.MAX_BINS - 1), id="MAX_BINS-1 bins"),
        pytest.param([], bin_centres(-100, sk.MAX_BINS), id="exactly MAX_BINS bins"),
        pytest.param([], bin_centres(-100, sk.MAX_BINS + 1), id="MAX_BINS+1 bins"),
        pytest.param(bin_centres(-100, sk.MAX_BINS), bin_centres(-101, 1), id="one bin over"),
    ],
)
def test_a_cell_over_max_bins_folds_like_the_reference(
    stored_values: list[float], new_values: list[float]
) -> None:
    minute = BASE + 7 * 60
    earlier = [minute_write(3, minute, stored_values, 1)] if stored_values else []
    write = minute_write(3, minute, new_values, 2)
    check(earlier, write)
    # The example is what its name says: the reference sketch holds the expected bins.
    summary = reference_write(apply_writes(earlier, reference_write), write)[
        (3, int(Resolution.MINUTE), minute)
    ][4]
    merged = sk.Sketch.from_bytes(summary)
    everything = [*stored_values, *new_values]
    positive_bins = {sk._index(v) for v in everything if v > sk.ZERO_THRESHOLD}
    negative_bins = {sk._index(-v) for v in everything if v < -sk.ZERO_THRESHOLD}
    assert len(merged._positive) == min(len(positive_bins), sk.MAX_BINS)
    assert len(merged._negative) == min(len(negative_bins), sk.MAX_BINS)


# --- 3. sketch.indices ---------------------------------------------------------------

magnitudes = st.one_of(
    st.floats(min_value=sk.ZERO_THRESHOLD, max_value=sys.float_info.max, exclude_min=True),
    st.floats(-8.99, 308.25).map(lambda e: 10.0**e),
    st.floats(1e-9, 1e3, exclude_min=True),
)


def assert_indices_match(mags: Sequence[float]) -> None:
    got = sk.indices(np.asarray(mags, dtype=np.float64))
    assert got.dtype == np.int64
    want = [sk._index(m) for m in mags]
    mismatches = [(m, k, w) for m, k, w in zip(mags, got.tolist(), want, strict=True) if k != w]
    assert not mismatches, mismatches[:5]


@settings(max_examples=200, deadline=None)
@given(st.lists(magnitudes, min_size=1, max_size=200))
def test_indices_equal_index_of_each_magnitude(mags: list[float]) -> None:
    assert_indices_match(mags)


def near(x: float, ulps: int) -> float:
    for _ in range(abs(ulps)):
        x = math.nextafter(x, math.inf if ulps > 0 else 0.0)
    return x


def edge_values(k: int) -> list[float]:
    """Magnitudes on the edge between bins k and k+1, however computed, and their float
    neighbours."""
    ways: tuple[Callable[[], float], ...] = (
        lambda: math.exp(k / sk._INV_LOG_GAMMA),
        lambda: math.exp(k * math.log(sk._GAMMA)),
        lambda: sk._GAMMA**k,
    )
    edges: list[float] = []
    for way in ways:
        with contextlib.suppress(OverflowError):  # past float max: not a magnitude
            edges.append(way())
    around = [near(e, ulps) for e in edges for ulps in (-2, -1, 0, 1, 2)]
    return [m for m in around if sk.ZERO_THRESHOLD < m < math.inf]


def test_indices_equal_index_on_every_bin_edge() -> None:
    lowest = sk._index(math.nextafter(sk.ZERO_THRESHOLD, 1.0))
    highest = sk._index(sys.float_info.max)
    mags = [m for k in range(lowest - 1, highest + 1) for m in edge_values(k)]
    mags += [math.nextafter(sk.ZERO_THRESHOLD, 1.0), sys.float_info.max, 1.0, sk._GAMMA]
    assert len(mags) > 10 * (highest - lowest)
    assert_indices_match(mags)


@settings(max_examples=200, deadline=None)
@given(st.integers(-2100, 71000), st.integers(-6, 6))
def test_indices_equal_index_near_a_bin_edge(k: int, ulps: int) -> None:
    mags = [m for m in (near(e, ulps) for e in edge_values(k)) if sk.ZERO_THRESHOLD < m < math.inf]
    assume(mags)
    assert_indices_match(mags)


# --- Sketch.from_bins, parse_header (the pieces merge assembles sketches from) ---------

sketch_values = st.lists(
    st.one_of(values, signed_powers(-9, 12)), min_size=SMALL + 1, max_size=80
) | st.builds(mixed, st.integers(0, 10**6), st.integers(SMALL + 1, 3000))


@settings(max_examples=100, deadline=None)
@given(sketch_values)
def test_from_bins_and_parse_header_agree_with_to_bytes(vals: list[float]) -> None:
    sketch = sk.Sketch()
    sketch.add_many(vals)
    data = sketch.to_bytes()
    low, high = min(vals) + 0.0, max(vals) + 0.0
    header = sk.parse_header(data)
    assert header is not None
    h_low, h_high, flags, at = header
    assert (h_low, h_high) == (low, high)
    assert flags == data[1]
    assert at == (18 if struct.pack("<d", low) != struct.pack("<d", high) else 10)
    zero = sum(1 for v in vals if abs(v) <= sk.ZERO_THRESHOLD)
    positive: defaultdict[int, int] = defaultdict(int)
    negative: defaultdict[int, int] = defaultdict(int)
    for v in vals:
        if v > sk.ZERO_THRESHOLD:
            positive[sk._index(v)] += 1
        elif v < -sk.ZERO_THRESHOLD:
            negative[sk._index(-v)] += 1
    rebuilt = sk.Sketch.from_bins(low, high, zero, dict(positive), dict(negative))
    assert rebuilt.count == len(vals)
    assert rebuilt.to_bytes() == data


def test_parse_header_declines_what_it_cannot_read() -> None:
    one = sk.Sketch()
    one.add(2.0)
    data = one.to_bytes()
    assert sk.parse_header(data) == (2.0, 2.0, data[1], 10)
    assert sk.parse_header(sk.Sketch().to_bytes()) is None  # empty
    assert sk.parse_header(bytes((2,)) + data[1:]) is None  # another version
    assert sk.parse_header(data[:1] + bytes((data[1] | 32,)) + data[2:]) is None  # flags
    assert sk.parse_header(data[:9]) is None  # too short


# --- 4. blocks.encode_runs -----------------------------------------------------------

times = st.one_of(
    st.floats(BASE, BASE + 3 * 86400),
    st.integers(0, 3 * 86_400_000).map(lambda ms: BASE + ms / 1000),
    # Half-millisecond times: rounding ties, which both paths must break the same way.
    st.integers(0, 3 * 86_400_000).map(lambda ms: BASE + (ms + 0.5) / 1000),
    st.sampled_from((float(BASE), BASE + 86400.0, BASE + 86399.9995)),
)
block_points = st.lists(st.tuples(times, values), min_size=1, max_size=25)


@settings(max_examples=150, deadline=None)
@given(st.lists(block_points, min_size=1, max_size=6))
def test_encode_runs_equals_encode_of_each_run(runs: list[list[tuple[float, float]]]) -> None:
    ordered = [sorted(run) for run in runs]  # sorted by (time, value), as the writer's
    flat = [p for run in ordered for p in run]
    ends = np.cumsum([len(run) for run in ordered]).tolist()
    starts = [0, *ends[:-1]]
    got = blocks.encode_runs(
        np.asarray([t for t, _ in flat], dtype=np.float64),
        np.asarray([v for _, v in flat], dtype=np.float64),
        starts,
        ends,
    )
    assert got == [blocks.encode(run) for run in runs]
    assert [blocks.decode(b) for b in got] == [blocks.decode(blocks.encode(r)) for r in runs]


@settings(max_examples=100, deadline=None)
@given(block_points)
def test_blocks_round_trip_and_zlib_blocks_of_earlier_versions_still_read(
    run: list[tuple[float, float]],
) -> None:
    # Sorted as sent, then kept to the millisecond.
    ordered = [(round(t * 1000) / 1000, v + 0.0) for t, v in sorted(run)]
    block = blocks.encode(run)
    assert block[0] == 2  # Zstandard
    assert blocks.decode(block) == ordered
    # Version 1, as written until the eleventh session: the same body under zlib.
    ms = [round(t * 1000) for t, _ in ordered]
    body = struct.pack(
        f"<I{len(ms)}q{len(ms)}d",
        len(ms),
        *[b - a for a, b in zip([0, *ms[:-1]], ms, strict=True)],
        *[v for _, v in ordered],
    )
    assert blocks.decode(b"\x01" + zlib.compress(body, 1)) == ordered


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x03" + b"x" * 20,
        b"\x02not zstd",
        b"\x01not zlib",
        b"\x02\x28\xb5\x2f\xfd",
        b"\x02" + zstandard.ZstdCompressor().compress(b"ab"),  # shorter than its header
        b"\x01" + zlib.compress(b""),
    ],
)
def test_unknown_or_corrupt_blocks_are_refused(data: bytes) -> None:
    with pytest.raises(ValueError, match="block"):
        blocks.decode(data)


def test_a_block_whose_header_claims_a_huge_size_is_refused_before_allocating_it() -> None:
    frame = blocks.encode([(1.0, 2.0), (2.0, 3.0)])[1:]
    # The frame header rewritten to claim 1 TiB: magic, a descriptor for a single
    # segment with an 8-byte content size, the size, then the original blocks.
    descriptor = frame[4]
    assert descriptor & 0b0010_0000  # single segment
    size_bytes = {0: 1, 1: 2, 2: 4, 3: 8}[descriptor >> 6]
    forged = (
        frame[:4]
        + bytes([0b1110_0000 | (descriptor & 0b0001_1111)])
        + struct.pack("<Q", 1 << 40)
        + frame[5 + size_bytes :]
    )
    assert zstandard.frame_content_size(forged) == 1 << 40
    with pytest.raises(ValueError, match="corrupt block"):
        blocks.decode(b"\x02" + forged)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(METRICS), times, values), min_size=1, max_size=80))
def test_encode_runs_of_a_write_per_metric_and_day(write: Write) -> None:
    """As the writer calls it: one block per metric and UTC day of a write's Points."""
    points = rollup.Points.of(
        [m for m, _, _ in write], [t for _, t, _ in write], [v for *_, v in write]
    )
    day = np.floor_divide(points.time, 86400).astype(np.int64)
    starts, ends = (run.tolist() for run in points.runs(day))
    got = blocks.encode_runs(points.time, points.value, starts, ends)
    by_run: defaultdict[tuple[int, int], list[tuple[float, float]]] = defaultdict(list)
    for m, t, v in write:
        ms = to_ms(t)  # the writer keeps times to the millisecond
        by_run[(m, int(ms // 86400))].append((ms, v + 0.0))
    mids, ts = points.metric.tolist(), points.time.tolist()
    assert len(got) == len(by_run)
    for a, b, blob in zip(starts, ends, got, strict=True):
        assert blob == blocks.encode(by_run[(mids[a], int(ts[a] // 86400))])
        assert int(ts[b - 1] // 86400) == int(ts[a] // 86400)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(METRICS), times, values), max_size=80))
def test_pending_points_round_trip_exactly(write: Write) -> None:
    """A deferred write's points come back bit for bit, so the blocks and cells written
    from them later equal the ones its own commit would have written."""
    points = rollup.Pending.of(
        [m for m, _, _ in write], [t for _, t, _ in write], [v for *_, v in write]
    )
    back = rollup.Pending(*blocks.decode_pending(blocks.encode_pending(*_columns(points))))
    for got, want in zip(_columns(back), _columns(points), strict=True):
        assert got.dtype == want.dtype
        assert got.tobytes() == want.tobytes()


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.lists(st.tuples(st.sampled_from(METRICS), times, values), min_size=1, max_size=30),
        min_size=1,
        max_size=5,
    )
)
def test_writes_kept_in_arrival_order_are_rolled_up_as_one_sorted_write(
    writes: list[Write],
) -> None:
    """Deferred writes keep their points unsorted; the rollup that takes them sorts
    them together, exactly as if they had come as one write."""
    parts = [
        rollup.Pending.of([m for m, _, _ in w], [t for _, t, _ in w], [v for *_, v in w])
        for w in writes
    ]
    together = rollup.Points.concat(parts)
    every = [p for w in writes for p in w]
    want = rollup.Points.of(
        [m for m, _, _ in every], [t for _, t, _ in every], [v for *_, v in every]
    )
    for got, expected in zip(_columns(together), _columns(want), strict=True):
        assert got.tobytes() == expected.tobytes()
    order = np.lexsort((together.value, together.time, together.metric))
    assert (order == np.arange(len(order))).all()


def _columns(
    points: rollup.Points | rollup.Pending,
) -> tuple[rollup.Ints, rollup.Floats, rollup.Floats]:
    return points.metric, points.time, points.value


@pytest.mark.parametrize(
    "data",
    [b"", b"\x01\x00\x00\x00\x00", b"\x02\x01\x00", b"\x02\x01\x00\x00\x00" + bytes(23)],
    ids=["empty", "a block, not pending points", "short header", "truncated"],
)
def test_corrupt_pending_points_are_refused(data: bytes) -> None:
    with pytest.raises(ValueError, match="pending points"):
        blocks.decode_pending(data)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 3000),
            st.integers(0, 1),
            st.one_of(st.integers(-2100, 71000), st.integers(-(2**62), 2**62)),
            # Mostly ones (a write's own values), sometimes more (a stored sketch's bins).
            st.one_of(st.just(1), st.integers(1, 10**6)),
        ),
        min_size=1,
        max_size=60,
    ),
    st.integers(1, 3),
)
def test_bins_are_summed_and_sorted_by_job_sign_and_bin(
    bins: list[tuple[int, int, int, int]], sources: int
) -> None:
    """Keys far out of a sketch's range (a corrupt stored sketch) included."""
    expected: dict[tuple[int, int, int], int] = {}
    for job, sign, key, count in bins:
        expected[job, sign, key] = expected.get((job, sign, key), 0) + count
    columns = [np.asarray(column, dtype=np.int64) for column in zip(*bins, strict=True)]
    # Split across sources as `_SketchBuilder` passes them.
    cut = len(bins) // sources
    split = [
        tuple(column[i * cut : None if i == sources - 1 else (i + 1) * cut] for column in columns)
        for i in range(sources)
    ]
    merged = rollup._merge(split)  # type: ignore[arg-type]
    got = list(zip(*(column.tolist() for column in merged), strict=True))
    assert got == sorted((*k, c) for k, c in expected.items())


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from((1, 2, 2**40)),
            st.one_of(times, st.sampled_from((0.0, 1e12))),  # 1e12 s: too wide a key
            st.sampled_from((-1.0, 0.0, 2.5, 7.0)),  # ties in (metric, time) are common
        ),
        max_size=40,
    )
)
def test_points_sort_by_metric_time_and_value(write: Write) -> None:
    points = rollup.Points.of(
        [m for m, _, _ in write], [t for _, t, _ in write], [v for *_, v in write]
    )
    got = list(
        zip(points.metric.tolist(), points.time.tolist(), points.value.tolist(), strict=True)
    )
    assert got == sorted(got)
    assert sorted(got) == sorted((m, to_ms(t), v) for m, t, v in write)


def test_a_truncated_block_is_refused() -> None:
    block = blocks.encode([(BASE, 1.0), (BASE + 1, 2.0)])
    body = zstandard.ZstdDecompressor().decompress(block[1:])
    with pytest.raises(ValueError, match="truncated block"):
        blocks.decode(block[:1] + zstandard.ZstdCompressor().compress(body[:-8]))
    with pytest.raises(ValueError, match="truncated block"):
        blocks.decode(b"\x01" + zlib.compress(body[:-8]))


# --- 5. corrupt stored summaries -----------------------------------------------------


def sketch_cell(vals: Sequence[float]) -> Stored:
    cell = Cell.of(list(vals))
    assert cell.sketch is not None
    return (cell.count, cell.sum, cell.min, cell.max, cell.summary())


def rows_over(stored: dict[Key, Stored], mids: Sequence[int] = (3,)) -> list[rollup.Row]:
    """`merge` for a write of one point per metric in the minute at BASE."""
    points = rollup.Points.of(list(mids), [BASE + 1.0] * len(mids), [1.5] * len(mids))
    return merged_rows(points, rollup.fold(points), stored)


def minute_key(mid: int) -> Key:
    return (mid, int(Resolution.MINUTE), BASE)


def split(data: bytes) -> tuple[bytes, list[int]]:
    """A sketch's bytes as (header, its varints)."""
    header = sk.parse_header(data)
    assert header is not None
    return data[: header[3]], sk._read_varints(data, header[3])


def join(head: bytes, numbers: list[int]) -> bytes:
    out = bytearray(head)
    sk._put_varints(out, numbers)
    return bytes(out)


SKETCHES = {
    "zero, positive, negative": mixed(21, 60),
    "positive only": logspaced(-3, 3, 50),
    "negative only": logspaced(-3, 3, 50, sign=-1.0),
    # Counts and gaps of 128 and more: multi-byte varints in the body.
    "multi-byte varints": [1.0] * 300 + [1e6] * 200 + [-7.0] * 130,
    "one value repeated": [4.25] * 40,
}


@pytest.mark.parametrize("name", SKETCHES)
@pytest.mark.parametrize("where", ["alone", "first of two", "last of two"])
def test_a_truncated_stored_sketch_is_a_value_error(name: str, where: str) -> None:
    count, total, low, high, data = sketch_cell(SKETCHES[name])
    good = sketch_cell(mixed(22, 40))
    at = split(data)[0]
    # Cut anywhere but right after the header; that one is
    # test_a_stored_sketch_cut_after_its_header_is_a_value_error.
    for n in (n for n in range(len(data)) if n != len(at)):
        cell = (count, total, low, high, data[:n])
        if where == "alone":
            stored, mids = {minute_key(3): cell}, [3]
        elif where == "first of two":
            stored, mids = {minute_key(3): cell, minute_key(7): good}, [3, 7]
        else:
            stored, mids = {minute_key(3): good, minute_key(7): cell}, [3, 7]
        with pytest.raises(ValueError):  # noqa: PT011 - any ValueError; messages vary
            rows_over(stored, mids)


# A sketch whose layout is wrong though its bytes are whole, built from a valid one of
# zeros (first varint), a positive then a negative store (nbins, zigzag first, body).
def _flags(change: Callable[[int], int]) -> Callable[[bytes], bytes]:
    return lambda d: d[:1] + bytes((change(d[1]),)) + d[2:]


def _numbers(change: Callable[[list[int]], list[int]]) -> Callable[[bytes], bytes]:
    def apply(data: bytes) -> bytes:
        head, numbers = split(data)
        return join(head, change(numbers))

    return apply


def _set(i: int, value: int) -> Callable[[list[int]], list[int]]:
    return lambda ns: [value if j == i else n for j, n in enumerate(ns)]


LAYOUTS: dict[str, Callable[[bytes], bytes]] = {
    "trailing zero byte": lambda d: d + b"\x00",
    "trailing varint": lambda d: d + b"\x85\x01",
    "negative store flag cleared": _flags(lambda f: f & ~HAS_NEGATIVE),
    "positive store flag cleared": _flags(lambda f: f & ~HAS_POSITIVE),
    "zero flag cleared": _flags(lambda f: f & ~HAS_ZERO),
    "no min flag": _flags(lambda f: f & ~1),
    "unknown flag": _flags(lambda f: f | 64),
    "another version": lambda d: bytes((2,)) + d[1:],
    "positive bin count 0": _numbers(_set(1, 0)),
    "positive bin count over MAX_BINS": _numbers(_set(1, sk.MAX_BINS + 1)),
    "positive bin count one too many": _numbers(lambda ns: _set(1, ns[1] + 1)(ns)),
    "empty bin": _numbers(_set(3, 0)),
    "bins out of order": _numbers(_set(4, 0)),
    "over-long varint": lambda d: d + b"\x80" * 11 + b"\x01",
    "nothing": lambda d: b"",
    "header only, no flags": lambda d: d[:10],
}


@pytest.mark.parametrize("corrupt", LAYOUTS.values(), ids=list(LAYOUTS))
@pytest.mark.parametrize("where", ["alone", "first of two", "last of two"])
def test_a_stored_sketch_of_the_wrong_layout_is_a_value_error(
    corrupt: Callable[[bytes], bytes], where: str
) -> None:
    count, total, low, high, data = sketch_cell(SKETCHES["zero, positive, negative"])
    flags = data[1]
    assert flags & HAS_ZERO
    assert flags & HAS_POSITIVE
    assert flags & HAS_NEGATIVE
    bad = corrupt(data)
    assert bad != data
    with pytest.raises(ValueError):  # noqa: PT011 - the reference refuses these too
        Cell.stored(count, total, low, high, bad)
    cell = (count, total, low, high, bad)
    good = sketch_cell(mixed(22, 40))
    stored = {
        "alone": {minute_key(3): cell},
        "first of two": {minute_key(3): cell, minute_key(7): good},
        "last of two": {minute_key(3): good, minute_key(7): cell},
    }[where]
    with pytest.raises(ValueError):  # noqa: PT011
        rows_over(stored, [3] if where == "alone" else [3, 7])


@settings(max_examples=200, deadline=None)
@given(sketch_values, st.data())
def test_a_stored_sketch_with_a_changed_byte_is_read_like_the_reference_or_refused(
    vals: list[float], data: st.DataObject
) -> None:
    """Any one byte changed: `merge` raises ValueError (never another exception), and when
    the changed bytes are a valid sketch to the reference it merges them like it."""
    count, total, low, high, blob = sketch_cell(vals)
    i = data.draw(st.integers(0, len(blob) - 1))
    bad = blob[:i] + bytes((data.draw(st.integers(0, 255)),)) + blob[i + 1 :]
    stored = {minute_key(3): (count, total, low, high, bad)}
    try:
        got = rows_over(stored)
    except ValueError:
        got = None
    try:
        old = Cell.stored(count, total, low, high, bad)
    except ValueError:
        return  # the reference refuses it; refusing or reading it are both fine here
    if old.sketch is None:
        # The change turned the tag into the exact-values tag and the rest parsed as
        # values: a different summary, not a damaged sketch (found by hypothesis).
        assert bad[0] == VALUES_TAG
        return
    if old.sketch.count == 0 or (not old.sketch._positive and not old.sketch._negative):
        return  # an empty or all-zero sketch: see the tests below
    assert got is not None, "merge refused a stored sketch the reference reads"
    write: Write = [(3, BASE + 1.0, 1.5)]
    want = reference_write(stored, write)
    assert_same_cells(
        {(m, r, s): (c, t, lo, hi, b) for m, r, s, c, t, lo, hi, b in got},
        want,
        dict.fromkeys(want, math.fsum(map(abs, vals)) + 1.5),
    )


# --- all-zero cells and corrupt stored cells ---------------------------------------


def test_a_new_cell_of_only_zeros_becomes_a_sketch() -> None:
    check([], minute_write(3, BASE, [0.0] * (SMALL + 1), 1))


def test_a_new_cell_of_only_zeros_beside_one_with_bins() -> None:
    write = [*minute_write(3, BASE, [0.0, -0.0, 1e-10] * 6, 1), (7, BASE + 1.0, 2.0)]
    kinds = check([minute_write(7, BASE, mixed(2, 30), 3)], write)
    assert kinds[minute_key(3)] == (None, "sketch")


def test_a_stored_sketch_of_only_zeros_merges() -> None:
    check([minute_write(3, BASE, [0.0] * (SMALL + 4), 1)], minute_write(3, BASE, [5.0], 2))


def test_a_stored_sketch_of_only_zeros_merges_beside_one_with_bins() -> None:
    # The same stored cell is fine when another stored sketch in the write has bins.
    earlier = [
        [*minute_write(3, BASE, [0.0] * (SMALL + 4), 1), *minute_write(7, BASE, mixed(2, 30), 3)]
    ]
    kinds = check(earlier, [*minute_write(3, BASE, [0.0, 5.0], 2), (7, BASE + 1.0, 2.0)])
    assert kinds[minute_key(3)] == ("sketch", "sketch")


def test_a_stored_sketch_cut_after_its_header_is_a_value_error() -> None:
    count, total, low, high, data = sketch_cell(SKETCHES["zero, positive, negative"])
    cut = data[: len(split(data)[0])]
    with pytest.raises(ValueError):  # noqa: PT011
        rows_over({minute_key(3): (count, total, low, high, cut)})


STRAY = bytes((VALUES_TAG,)) + struct.pack("<3d", 1.0, 2.0, 3.0) + b"\x01\x02\x03"


@pytest.mark.parametrize(
    "stored",
    [
        pytest.param(
            {minute_key(3): (3, 6.0, 1.0, 3.0, STRAY)},
            id="stays small",
        ),
        pytest.param(
            {minute_key(3): (18, 6.0, 1.0, 3.0, STRAY + bytes(8 * 15))},
            id="becomes a sketch",
        ),
        pytest.param(
            {
                minute_key(3): (18, 6.0, 1.0, 3.0, STRAY + bytes(8 * 15)),
                minute_key(7): (18, 6.0, 0.0, 3.0, STRAY[:25] + bytes(5 + 8 * 15)),
            },
            id="two that add up",
        ),
    ],
)
def test_corrupt_stored_exact_values_are_a_value_error(stored: dict[Key, Stored]) -> None:
    for count, total, low, high, summary in stored.values():
        with pytest.raises(ValueError, match="corrupt"):
            Cell.stored(count, total, low, high, summary)
    with pytest.raises(ValueError):  # noqa: PT011
        rows_over(stored, sorted({k[0] for k in stored}))


# --- 6. Points ----------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(st.integers(-5, 2**40), st.floats(0, 4e9), values), min_size=1, max_size=60)
)
def test_points_sort_and_last_times(write: Write) -> None:
    points = rollup.Points.of(
        [m for m, _, _ in write], [t for _, t, _ in write], [v for *_, v in write]
    )
    assert len(points) == len(write)
    rows_ = list(
        zip(points.metric.tolist(), points.time.tolist(), points.value.tolist(), strict=True)
    )
    # Times to the millisecond, as raw blocks keep them.
    assert rows_ == sorted((m, to_ms(t), v + 0.0) for m, t, v in write)
    assert all(math.copysign(1.0, v) > 0 for _, _, v in rows_ if v == 0)  # -0.0 as 0.0
    last: dict[int, float] = {}
    for m, t, _ in write:
        last[m] = max(to_ms(t), last.get(m, -math.inf))
    got = points.last_times()
    assert got == last
    assert all(type(m) is int and type(t) is float for m, t in got.items())
