"""A write's rollup cells in bulk: fold its points, merge the stored cells, encode (pure).

The writer's cost is per cell. Built one cell at a time with `Cell` and `Sketch`, merging
one stored hour sketch took 50-130 µs of Python (decode, merge, encode), and a write of
a few thousand points touches hundreds of such cells. Here each step is a numpy
operation over all the cells of the write at once; Python only assembles each cell's
bytes from slices. The result is what `Cell.merge` and `Cell.summary` give for the same
values: sketches byte for byte, exact values as the same multiset
(tests/unit/test_rollup.py holds the two paths to that), so stored cells do not depend
on which path wrote them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import repeat
from operator import itemgetter
from typing import Any

import numpy as np
from numpy.typing import NDArray

from glowing_fiesta import sketch as sk
from glowing_fiesta.aggregate import SMALL, VALUES_TAG, bounded_sums
from glowing_fiesta.model import Resolution

Ints = NDArray[np.int64]
Floats = NDArray[np.float64]
IntsIn = Sequence[int] | Ints
FloatsIn = Sequence[float] | Floats
# A stored cell as the writer reads it: (count, sum, min, max, summary).
Stored = tuple[int, float, float, float, bytes]
# A cell row as storage writes it: (metric_id, res, bucket, count, sum, min, max, summary).
Row = tuple[int, int, int, int, float, float, float, bytes]
# Bins from every source, as columns: (job, sign, bin, count).
Bins = tuple[Ints, Ints, Ints, Ints]

_VALUES_PREFIX = bytes((VALUES_TAG,))
_ONE_BYTE = 0x80  # varints below this are one byte: the body can be copied as uint8


@dataclass(frozen=True, slots=True)
class Pending:
    """A write's points as columns in arrival order, times to the millisecond: what a
    write commits before its cells. Sorting waits for the rollup, which sorts the points
    of all the writes it takes at once anyway; done per write, it was a tenth of the
    writer process's loop under bulk ingest."""

    metric: Ints
    time: Floats
    value: Floats

    @classmethod
    def of(cls, metric: IntsIn, time: FloatsIn, value: FloatsIn) -> Pending:
        m = np.asarray(metric, dtype=np.int64)
        # To the millisecond, as raw blocks keep times: cells rebuilt from the blocks
        # (after a crash) then equal the cells written from the request's points.
        # Rounded, but never into the next second: a point sent at 59.9999 s past a
        # minute belongs to that minute's bucket, not to the next one's.
        t = np.asarray(time, dtype=np.float64)
        t = np.minimum(np.round(t * 1000), np.floor(t) * 1000 + 999) / 1000
        v = np.asarray(value, dtype=np.float64) + 0.0  # -0.0 as 0.0, as Sketch.add does
        return cls(m, t, v)

    def __len__(self) -> int:
        return len(self.metric)


@dataclass(frozen=True, slots=True)
class Points:
    """A write's points as columns sorted by (metric, time, value)."""

    metric: Ints
    time: Floats
    value: Floats

    @classmethod
    def of(cls, metric: IntsIn, time: FloatsIn, value: FloatsIn) -> Points:
        return cls.concat([Pending.of(metric, time, value)])

    @classmethod
    def concat(cls, parts: Sequence[Pending]) -> Points:
        """Several writes' points as one write's, sorted."""
        if len(parts) == 1:
            m, t, v = parts[0].metric, parts[0].time, parts[0].value
        else:
            m = np.concatenate([p.metric for p in parts])
            t = np.concatenate([p.time for p in parts])
            v = np.concatenate([p.value for p in parts])
        order = _point_order(m, t, v)
        return cls(m[order], t[order], v[order])

    def __len__(self) -> int:
        return len(self.metric)

    def runs(self, key: Ints) -> tuple[Ints, Ints]:
        """Start and end offsets of the runs of equal (metric, key)."""
        change = np.flatnonzero((np.diff(self.metric) != 0) | (np.diff(key) != 0)) + 1
        starts = np.concatenate(([0], change)).astype(np.int64)
        ends = np.concatenate((change, [len(self.metric)])).astype(np.int64)
        return starts, ends

    def last_times(self) -> dict[int, float]:
        """Each metric's latest point time."""
        _, ends = self.runs(np.zeros(len(self.metric), dtype=np.int64))
        return dict(zip(self.metric[ends - 1].tolist(), self.time[ends - 1].tolist(), strict=True))


def _point_order(metric: Ints, time: Floats, value: Floats) -> Ints:
    """`np.lexsort((value, time, metric))` for times whole in milliseconds: one sort by
    (metric, millisecond) as an int64 where that fits, when no two points share both
    (a 50,000-point rollup of the bench's data: 11 -> 3 ms)."""
    if len(metric) > 1:
        ms = np.round(time * 1000).astype(np.int64)
        first = int(ms.min())
        bits = (int(ms.max()) - first).bit_length()
        if int(metric.min()) >= 0 and int(metric.max()).bit_length() + bits <= 62:
            key = (metric << bits) | (ms - first)
            order = np.argsort(key, kind="stable")
            ordered = key[order]
            if not (ordered[1:] == ordered[:-1]).any():
                return order
            return np.lexsort((value, key))
    return np.lexsort((value, time, metric))


@dataclass(frozen=True, slots=True)
class Folded:
    """The write's cells of one resolution: keys, aggregates and their runs of points."""

    res: Resolution
    metric: list[int]
    start: list[int]
    begin: list[int]  # offsets into the write's Points
    end: list[int]
    count: list[int]
    sum: list[float]
    min: list[float]
    max: list[float]


def fold(points: Points) -> list[Folded]:
    """The write's cells at every resolution, starts aligned in UTC."""
    out = []
    v = points.value
    # Whole seconds, as integers: a bucket of whole seconds only depends on them, and
    # numpy's float floor_divide was ~1.3 ms per resolution of a 100,000-point rollup.
    seconds = np.floor(points.time).astype(np.int64)
    for res in Resolution:
        bucket = seconds // int(res) * int(res)
        starts, ends = points.runs(bucket)
        with np.errstate(over="ignore", invalid="ignore"):  # bounded in `merge`
            sums = np.add.reduceat(v, starts)
        out.append(
            Folded(
                res=res,
                metric=points.metric[starts].tolist(),
                start=bucket[starts].tolist(),
                begin=starts.tolist(),
                end=ends.tolist(),
                count=(ends - starts).tolist(),
                sum=sums.tolist(),
                min=np.minimum.reduceat(v, starts).tolist(),
                max=np.maximum.reduceat(v, starts).tolist(),
            )
        )
    return out


@dataclass(frozen=True, slots=True)
class Merged:
    """A write's cells of one resolution merged with their stored cells, as columns."""

    res: int
    metric: list[int]
    start: list[int]
    count: list[int]
    sum: list[float]
    min: list[float]
    max: list[float]
    summary: list[bytes]

    def rows(self) -> list[Row]:
        return list(
            zip(
                self.metric,
                repeat(self.res),
                self.start,
                self.count,
                self.sum,
                self.min,
                self.max,
                self.summary,
                strict=False,  # repeat() is endless; the other columns have one length
            )
        )


def merge(
    points: Points, folded: Sequence[Folded], stored: Mapping[tuple[int, int, int], Stored]
) -> list[Merged]:
    """The write's cells, each merged with its stored cell, keyed (metric, res, start),
    if there is one; one `Merged` per resolution.

    Most cells of a big write are new and hold a few exact values (the bench's replay:
    ~34,000 minute cells of ~2 points per 100,000 points), so those are built by
    comprehensions over the columns; only cells with a stored cell to merge are visited
    one by one, and sketches are built in bulk.
    """
    value_bytes = points.value.astype("<f8").tobytes()
    value_u8 = np.frombuffer(value_bytes, dtype=np.uint8)
    bin_keys = _BinKeys(points.value)
    out: list[Merged] = []
    finer: _CellBins | None = None  # the bins of the last resolution's cells
    for cells in folded:
        res = int(cells.res)
        count, total, low, high = cells.count, cells.sum, cells.min, cells.max
        summary = _exact_values(value_u8, cells)
        keys = zip(cells.metric, cells.start, strict=True)
        olds = [stored.get((mid, res, start)) for mid, start in keys] if stored else []
        wanted: list[tuple[int, bytes | None]] = []  # (cell, stored summary): a sketch
        merging = [(i, old) for i, old in enumerate(olds) if old is not None]
        if merging:  # Folded's columns are the caller's: merged values go to copies
            count, total, low, high = list(count), list(total), list(low), list(high)
        for i, (old_count, old_sum, old_min, old_max, old_summary) in merging:
            values = old_summary[:1] == _VALUES_PREFIX
            if values and len(old_summary) % 8 != 1:
                raise ValueError("a stored cell holds corrupt exact values")
            a, b = cells.begin[i], cells.end[i]
            count[i] += old_count
            total[i] += old_sum
            low[i], high[i] = min(low[i], old_min), max(high[i], old_max)
            if count[i] <= SMALL and values:
                summary[i] = old_summary + value_bytes[8 * a : 8 * b]
            else:
                wanted.append((i, old_summary))
        for i in np.flatnonzero(np.asarray(cells.count, dtype=np.int64) > SMALL).tolist():
            if not olds or olds[i] is None:
                wanted.append((i, None))
        # One resolution at a time: built for all four at once, the bins (several int64
        # arrays over every value, per resolution) were a transient ~45 MB of a
        # 100,000-point rollup. Only the last resolution's are kept, for the next.
        if res == Resolution.MINUTE:
            # Few minute cells need a sketch (most hold a few exact values): their values
            # are gathered rather than every minute cell's bins built.
            source: _CellBins | None = None
        elif finer is not None and res % int(finer.res) == 0:
            source = finer.coarser(cells)
        else:
            source = _CellBins.of_values(cells, points.value, bin_keys)
        finer = source
        wanted.sort(key=itemgetter(0))  # jobs in cell order: see `_SketchBuilder`
        sketches = _SketchBuilder(points.value, bin_keys, cells, source, wanted).build()
        for (i, _), sketch in zip(wanted, sketches, strict=True):
            summary[i] = sketch
        total = bounded_sums(total)
        out.append(Merged(res, cells.metric, cells.start, count, total, low, high, summary))
    return out


@dataclass(frozen=True, slots=True)
class _CellBins:
    """The bins of a write's own values in every cell of one resolution, merged and
    sorted by (cell, sign, bin), and each cell's count of zeros.

    A coarser resolution's are made from these (`coarser`), not from the values again:
    an hour holds ~6x fewer distinct bins than values in the bench's data, a day fewer
    still. From the values, the hour and day sketches of a 100,000-point rollup took
    13 and 11 ms."""

    res: Resolution
    begin: Ints  # each cell's first point
    cell: Ints
    sign: Ints
    key: Ints
    count: Ints
    zero: Ints

    @classmethod
    def of_values(cls, cells: Folded, values: Floats, keys: _BinKeys) -> _CellBins:
        n = np.asarray(cells.count, dtype=np.int64)
        cell_of = np.repeat(np.arange(len(n), dtype=np.int64), n)  # cells tile the points
        nonzero = np.abs(values) > sk.ZERO_THRESHOLD
        zero = np.bincount(cell_of[~nonzero], minlength=len(n))
        v = values[nonzero]
        bins = _merge(
            [
                (
                    cell_of[nonzero],
                    (v < 0).astype(np.int64),
                    keys.of()[nonzero],
                    np.ones(len(v), dtype=np.int64),
                )
            ]
        )
        return cls(cells.res, np.asarray(cells.begin, dtype=np.int64), *bins, zero)

    def coarser(self, cells: Folded) -> _CellBins:
        """The same for `cells`, of a resolution whose cells each hold whole cells of
        this one (their widths divide, and both align to multiples in UTC)."""
        begin = np.asarray(cells.begin, dtype=np.int64)
        parent = np.searchsorted(begin, self.begin, side="right") - 1
        bins = _merge([(parent[self.cell], self.sign, self.key, self.count)])
        zero = np.bincount(parent, weights=self.zero, minlength=len(begin)).astype(np.int64)
        return _CellBins(cells.res, begin, *bins, zero)


def _exact_values(values: NDArray[np.uint8], cells: Folded) -> list[bytes]:
    """Each cell's summary as exact values (the tag, then its values' bytes) if it holds
    at most SMALL, else b"". One slice each, of the values' bytes with a tag inserted
    before each cell's: a slice and a concatenation per cell were ~10% of a rollup's
    cells, most of which are minute cells of a few values."""
    begin = np.asarray(cells.begin, dtype=np.int64)
    tagged = np.insert(values, 8 * begin, VALUES_TAG).tobytes()
    first = (8 * begin + np.arange(len(begin), dtype=np.int64)).tolist()
    return [
        tagged[a : a + 8 * c + 1] if c <= SMALL else b""
        for a, c in zip(first, cells.count, strict=True)
    ]


class _SketchBuilder:
    """Sketch bytes for many cells ("jobs") at once, each from the write's values in
    the cell and, optionally, a stored summary (exact values or a sketch) to merge.
    The write's part comes from `source` (the bins of every cell, in cell order: jobs
    must then be made in cell order too), else from the cells' values."""

    def __init__(
        self,
        values: Floats,
        keys: _BinKeys,
        cells: Folded,
        source: _CellBins | None,
        jobs: Sequence[tuple[int, bytes | None]],
    ) -> None:
        """`jobs`: (cell, stored summary or None) for each sketch to build, in cell order."""
        self._values = values
        self._keys = keys
        self._cells = cells
        self._source = source
        self._cell = [cell for cell, _ in jobs]
        self._stored = [stored for _, stored in jobs]

    def _own(self) -> tuple[Bins, list[float], list[float], list[int]]:
        """The jobs' own bins, and their min, max and count of zeros."""
        cells, jobs = self._cells, len(self._cell)
        low = [cells.min[i] for i in self._cell]
        high = [cells.max[i] for i in self._cell]
        if self._source is not None:
            src = self._source
            which = np.asarray(self._cell, dtype=np.int64)
            job_of_cell = np.full(len(src.zero), -1, dtype=np.int64)
            job_of_cell[which] = np.arange(jobs, dtype=np.int64)
            job = job_of_cell[src.cell]
            keep = job >= 0
            bins = (job[keep], src.sign[keep], src.key[keep], src.count[keep])
            return bins, low, high, src.zero[which].tolist()
        begin = np.asarray([cells.begin[i] for i in self._cell], dtype=np.int64)
        lengths = np.asarray([cells.end[i] for i in self._cell], dtype=np.int64) - begin
        # The jobs' values gathered job after job, so each job's run is contiguous.
        firsts = np.cumsum(lengths) - lengths
        gather = np.arange(int(lengths.sum()), dtype=np.int64) + np.repeat(begin - firsts, lengths)
        values = self._values[gather]
        job_of = np.repeat(np.arange(jobs, dtype=np.int64), lengths)
        zero = np.bincount(job_of[np.abs(values) <= sk.ZERO_THRESHOLD], minlength=jobs).tolist()
        return _merge([_bins_of_values(values, job_of, self._keys.of()[gather])]), low, high, zero

    def build(self) -> list[bytes]:
        jobs = len(self._cell)
        if not jobs:
            return []
        own, low, high, zero = self._own()
        sources = [own]

        value_jobs: list[int] = []
        value_blobs: list[bytes] = []
        sketch_jobs: list[tuple[int, int]] = []  # (job, flags)
        sketch_blobs: list[bytes] = []
        for job, blob in enumerate(self._stored):
            if blob is None:
                continue
            if blob[:1] == _VALUES_PREFIX:
                value_jobs.append(job)
                value_blobs.append(blob[1:])
                continue
            header = sk.parse_header(blob)
            if header is None:
                raise ValueError("a stored cell holds an unreadable summary")
            old_low, old_high, flags, at = header
            low[job] = min(low[job], old_low)
            high[job] = max(high[job], old_high)
            sketch_jobs.append((job, flags))
            sketch_blobs.append(blob[at:])
        if value_blobs:
            stored_values = np.frombuffer(b"".join(value_blobs), dtype="<f8") + 0.0
            lengths = np.fromiter((len(b) // 8 for b in value_blobs), np.int64, len(value_blobs))
            owner = np.repeat(np.asarray(value_jobs, dtype=np.int64), lengths)
            firsts = np.cumsum(lengths) - lengths
            for job, lo, hi, zeros in zip(
                value_jobs,
                np.minimum.reduceat(stored_values, firsts).tolist(),
                np.maximum.reduceat(stored_values, firsts).tolist(),
                np.add.reduceat(np.abs(stored_values) <= sk.ZERO_THRESHOLD, firsts).tolist(),
                strict=True,
            ):
                low[job] = min(low[job], lo)
                high[job] = max(high[job], hi)
                zero[job] += zeros
            sources.append(_bins_of_values(stored_values, owner))
        if sketch_blobs:
            sources.append(_bins_of_sketches(sketch_jobs, sketch_blobs, zero))
        # Alone, the write's own bins are merged and sorted already.
        return _encode(own if len(sources) == 1 else _merge(sources), low, high, zero)


def _bins_of_values(values: Floats, job_of: Ints, keys: Ints | None = None) -> Bins:
    """A bin of count 1 per value outside the zero bucket; `keys`: each value's bin, if
    known (`_BinKeys`)."""
    nonzero = np.abs(values) > sk.ZERO_THRESHOLD
    v = values[nonzero]
    return (
        job_of[nonzero],
        (v < 0).astype(np.int64),
        sk.indices(np.abs(v)) if keys is None else keys[nonzero],
        np.ones(len(v), dtype=np.int64),
    )


class _BinKeys:
    """The sketch bin of each of a write's values, computed once, when the first sketch
    needs them, for every resolution: a value's bin depends on the value alone, and the
    logarithms were a tenth of a big rollup."""

    def __init__(self, values: Floats) -> None:
        self._values = values
        self._keys: Ints | None = None

    def of(self) -> Ints:
        """Every value's bin; 0 for values in the zero bucket, which have none."""
        if self._keys is None:
            magnitude = np.abs(self._values)
            nonzero = magnitude > sk.ZERO_THRESHOLD
            self._keys = np.zeros(len(magnitude), dtype=np.int64)
            self._keys[nonzero] = sk.indices(magnitude[nonzero])
        return self._keys


def _varints(data: bytes) -> tuple[Ints, Ints]:
    """Every LEB128 varint in `data` (whole varints only), and for each byte offset the
    number of varints that end before it."""
    raw = np.frombuffer(data, dtype=np.uint8)
    last = raw < _ONE_BYTE
    ended_before = np.concatenate(([0], np.cumsum(last)))
    if last.all():
        return raw.astype(np.int64), ended_before
    if not last[-1]:
        raise ValueError("a stored sketch is truncated")
    ends = np.flatnonzero(last)
    starts = np.concatenate(([0], ends[:-1] + 1))
    widths = ends - starts + 1
    if widths.max() > 10:
        raise ValueError("a stored sketch holds an over-long varint")
    shift = 7 * (np.arange(len(raw), dtype=np.int64) - np.repeat(starts, widths))
    digits = (raw & 0x7F).astype(np.int64) << shift
    return np.add.reduceat(digits, starts), ended_before


def _bins_of_sketches(jobs: list[tuple[int, int]], blobs: list[bytes], zero: list[int]) -> Bins:
    """The bins of stored sketches (adding their zero counts to `zero`)."""
    numbers, ended_before = _varints(b"".join(blobs))
    store_job: list[int] = []
    store_sign: list[int] = []
    store_first: list[int] = []
    store_bins: list[int] = []
    store_at: list[int] = []
    offset = 0
    for (job, flags), blob in zip(jobs, blobs, strict=True):
        at = int(ended_before[offset])
        offset += len(blob)
        end = int(ended_before[offset])
        if sk.has_zero(flags):
            if at >= end:
                raise ValueError("a stored sketch is truncated")
            zero[job] += int(numbers[at])
            at += 1
        for sign in sk.store_signs(flags):
            if at + 2 > end:
                raise ValueError("a stored sketch is truncated")
            size, zigzag = int(numbers[at]), int(numbers[at + 1])
            if not 1 <= size <= sk.MAX_BINS:
                raise ValueError("a stored sketch holds an invalid bin count")
            store_job.append(job)
            store_sign.append(sign)
            store_first.append((zigzag >> 1) ^ -(zigzag & 1))
            store_bins.append(size)
            store_at.append(at + 2)
            at += 2 * size + 1
        if at != end:
            raise ValueError("a stored sketch does not match its layout")
    nbins = np.asarray(store_bins, dtype=np.int64)
    k = np.arange(int(nbins.sum()), dtype=np.int64) - np.repeat(np.cumsum(nbins) - nbins, nbins)
    body = np.repeat(np.asarray(store_at, dtype=np.int64), nbins) + 2 * k
    counts = numbers[body]
    gaps = np.where(k > 0, numbers[np.maximum(body - 1, 0)], 0)
    if counts.min(initial=1) < 1 or gaps[k > 0].min(initial=1) < 1:
        raise ValueError("a stored sketch holds an empty or out-of-order bin")
    running = np.cumsum(gaps)
    keys = (
        np.repeat(np.asarray(store_first, dtype=np.int64), nbins)
        + running
        - np.repeat(running[np.cumsum(nbins) - nbins], nbins)
    )
    return (
        np.repeat(np.asarray(store_job, dtype=np.int64), nbins),
        np.repeat(np.asarray(store_sign, dtype=np.int64), nbins),
        keys,
        counts,
    )


def _merge(sources: list[Bins]) -> Bins:
    """One (job, sign, bin) row per bin, counts summed, sorted by job, sign, bin."""
    if len(sources) == 1:
        job, sign, key, count = sources[0]
    else:
        job, sign, key, count = (np.concatenate(c) for c in zip(*sources, strict=True))
    n = len(job)
    if not n:  # every value is a zero: sketches of zero counts alone
        return job, sign, key, count
    low = int(key.min())
    bits = (int(key.max()) - low).bit_length()
    if int(job.min()) < 0 or int(job.max()).bit_length() + bits + 1 > 62:
        return _merge_wide(job, sign, key, count)  # only a corrupt stored key gets here
    # (job, sign, bin) as one int64, so one sort and one comparison do for the three:
    # ~4x faster than a lexsort on the ~100,000 bins of a rollup.
    packed = (job << (bits + 1)) | (sign << bits) | (key - low)
    if int(count.max()) == 1:
        # Every bin counts one value (no stored sketch to merge, the usual case): the
        # packed keys alone, sorted, say it all, and a bin's count is its run's length.
        # Sorting values rather than an order saves the gathers, and half the sort.
        packed = np.sort(packed)
        starts = _run_starts(packed)
        counts = np.diff(starts, append=n)
    else:
        # Unstable: rows with equal keys are summed, so their order does not matter.
        order = np.argsort(packed)
        packed = packed[order]
        starts = _run_starts(packed)
        counts = np.add.reduceat(count[order], starts)
    first = packed[starts]
    return first >> (bits + 1), (first >> bits) & 1, (first & ((1 << bits) - 1)) + low, counts


def _run_starts(ordered: Ints) -> Ints:
    """Where each run of equal values starts in `ordered`."""
    return np.concatenate(([0], np.flatnonzero(np.diff(ordered)) + 1)).astype(np.int64)


def _merge_wide(job: Ints, sign: Ints, key: Ints, count: Ints) -> Bins:
    """`_merge` for bins whose (job, sign, bin) do not fit one int64."""
    order = np.lexsort((key, sign, job))
    job, sign, key, count = job[order], sign[order], key[order], count[order]
    new = np.flatnonzero((np.diff(job) != 0) | (np.diff(sign) != 0) | (np.diff(key) != 0)) + 1
    starts = np.concatenate(([0], new)).astype(np.int64)
    return job[starts], sign[starts], key[starts], np.add.reduceat(count, starts)


def _encode(bins: Bins, low: list[float], high: list[float], zero: list[int]) -> list[bytes]:
    """Each job's sketch bytes (`Sketch.to_bytes`'s layout), built for all jobs at once: a
    job's bytes are its header and its stores' varints, each a slice of one buffer made
    by numpy. Built one job at a time, ~3.4 us a job was ~8% of a rollup."""
    jobs = len(low)
    stores = _Stores.of(bins)
    # A job's stores are consecutive: its bytes run from its first store to its last.
    span_start = [0] * jobs
    span_end = [0] * jobs
    for j, a, b in zip(stores.job.tolist(), stores.start, stores.end, strict=True):
        if not span_end[j]:
            span_start[j] = a
        span_end[j] = b
    heads, head_at, head_len = _heads(low, high, zero, stores)
    result = [
        heads[h : h + length] + stores.data[a:b]
        for h, length, a, b in zip(head_at, head_len, span_start, span_end, strict=True)
    ]
    for j in np.unique(stores.job[stores.nbins > sk.MAX_BINS]).tolist():
        result[j] = _folded(bins, j, low[j], high[j], zero[j])
    return result


@dataclass(frozen=True, slots=True)
class _Stores:
    """The bin stores of many sketches: runs of one (job, sign) among the bins, each
    written as varints: its bin count, zigzag first bin, then the first bin's count and,
    per further bin, the gap to it and its count. `data` holds them back to back, and
    store i is `data[start[i]:end[i]]`."""

    job: Ints
    sign: Ints
    nbins: Ints
    data: bytes
    start: list[int]
    end: list[int]

    @classmethod
    def of(cls, bins: Bins) -> _Stores:
        job, sign, key, count = bins
        n = len(job)
        change = np.flatnonzero((np.diff(job) != 0) | (np.diff(sign) != 0)) + 1
        firsts = np.concatenate(([0], change)).astype(np.int64) if n else np.zeros(0, np.int64)
        nbins = np.diff(np.concatenate((firsts, [n]))).astype(np.int64)
        first = key[firsts]
        sizes = 2 * nbins + 1  # numbers per store
        at = np.cumsum(sizes) - sizes
        numbers = np.empty(int(sizes.sum()), dtype=np.int64)
        numbers[at] = nbins
        numbers[at + 1] = (first << 1) ^ (first >> 63)
        interleaved = np.empty(2 * n, dtype=np.int64)
        interleaved[0::2] = np.diff(key, prepend=0)
        interleaved[1::2] = count
        keep = np.ones(2 * n, dtype=bool)
        keep[2 * firsts] = False  # a store's first bin is in its header, not a gap
        body = np.ones(len(numbers), dtype=bool)
        body[at] = body[at + 1] = False
        numbers[body] = interleaved[keep]
        data, offsets = _varints_of(numbers)
        return cls(
            job[firsts],
            sign[firsts],
            nbins,
            data.tobytes(),
            offsets[at].tolist(),
            offsets[at + sizes].tolist(),
        )


def _heads(
    low: list[float], high: list[float], zero: list[int], stores: _Stores
) -> tuple[bytes, list[int], list[int]]:
    """Each job's header (version, flags, min, max if it differs, zero count if any),
    back to back, with where each starts and its length."""
    jobs = len(low)
    low_a = np.asarray(low, dtype="<f8")
    high_a = np.asarray(high, dtype="<f8")
    zero_a = np.asarray(zero, dtype=np.int64)
    has_max = low_a.view(np.int64) != high_a.view(np.int64)  # as their bytes differ
    has_zero = zero_a > 0
    signs = np.zeros((jobs, 2), dtype=bool)
    signs[stores.job, stores.sign] = True
    flags = (
        sk.FLAG_MIN
        | np.where(has_max, sk.FLAG_MAX, 0)
        | np.where(has_zero, sk.FLAG_ZERO, 0)
        | np.where(signs[:, 0], sk.FLAG_POSITIVE, 0)
        | np.where(signs[:, 1], sk.FLAG_NEGATIVE, 0)
    )
    zeros, zero_at = _varints_of(zero_a[has_zero])
    zero_len = np.zeros(jobs, dtype=np.int64)
    zero_len[has_zero] = np.diff(zero_at)
    head_len = 10 + 8 * has_max + zero_len
    head_at = np.cumsum(head_len) - head_len
    head = np.empty(int(head_len.sum()), dtype=np.uint8)
    head[head_at] = sk.VERSION
    head[head_at + 1] = flags
    scatter(head, head_at + 2, low_a)
    scatter(head, head_at[has_max] + 10, high_a[has_max])
    zero_dest = (head_at + 10 + 8 * has_max)[has_zero]
    head[np.repeat(zero_dest - zero_at[:-1], np.diff(zero_at)) + np.arange(len(zeros))] = zeros
    return head.tobytes(), head_at.tolist(), head_len.tolist()


def _varints_of(numbers: Ints) -> tuple[NDArray[np.uint8], Ints]:
    """LEB128 varints of non-negative `numbers`, back to back, and where each starts
    (then the end). Most are one byte (bin counts and gaps): only the longer ones are
    visited for their further bytes."""
    length = np.ones(len(numbers), dtype=np.int64)
    longer = [np.flatnonzero(numbers >= _ONE_BYTE)]
    while len(longer[-1]):
        length[longer[-1]] += 1
        rest = longer[-1]
        longer.append(rest[(numbers[rest] >> (7 * (len(longer) + 1))) > 0])
    ends = np.cumsum(length)
    starts = ends - length
    out = np.empty(int(ends[-1]) if len(ends) else 0, dtype=np.uint8)
    out[starts] = (numbers & 0x7F) | np.where(length > 1, 0x80, 0)
    for byte, which in enumerate(longer[:-1], start=1):
        digit = (numbers[which] >> (7 * byte)) & 0x7F
        out[starts[which] + byte] = digit | np.where(length[which] > byte + 1, 0x80, 0)
    return out, np.concatenate((starts, ends[-1:] if len(ends) else [0])).astype(np.int64)


def scatter(buf: NDArray[np.uint8], at: Ints, values: NDArray[Any]) -> None:
    """Each value's bytes (as its dtype lays them out) into `buf` from its position in
    `at`: fixed-width fields of many records written at once."""
    width = values.dtype.itemsize
    buf[at[:, None] + np.arange(width)] = values.view(np.uint8).reshape(-1, width)


def _folded(bins: Bins, job: int, low: float, high: float, zero: int) -> bytes:
    """A cell whose store outgrew MAX_BINS: let Sketch fold it (rare: a dynamic range
    of 8e8 within one cell)."""
    mine = bins[0] == job
    stores: list[dict[int, int]] = [{}, {}]
    for s, k, c in zip(
        bins[1][mine].tolist(), bins[2][mine].tolist(), bins[3][mine].tolist(), strict=True
    ):
        stores[s][k] = c
    return sk.Sketch.from_bins(low, high, zero, stores[0], stores[1]).to_bytes()
