"""Minute cells stored several to a row (pure): the rows storage writes and reads for them.

A minute cell per row made minute cells most of a write's rows: the bench's data set
(3 points per metric and minute) upserted ~17,000 minute cells per 50,000 points, and
without them the embedded writer took 37% more points/s; a day of minutes was 1,440
rows to step through. So the `rollups` row of (metric, 60, start) holds the minute
cells of the quarter-hour [start, start + 900): its count, sum, min and max are the
quarter-hour's, its summary column the pack below. A quarter-hour, not an hour: every
write that touches a minute rewrites its whole pack, and with live traffic (each write
touching the current minute) an hour's pack of wide sketches would multiply the bytes
written per write by up to 60; a quarter-hour bounds that at 15 and still divides
the bench's rows by ~14.

Pack layout (version 1), little-endian:
`version: u8 | n: u8 | n x u8 cell index (start = pack start + index x 60, ascending) |
n x i64 count | n x f64 sum | n x f64 min | n x f64 max | n x u32 summary length |
the summaries, concatenated`.
"""

from __future__ import annotations

import functools
import math
import struct
from collections.abc import Iterable, Mapping
from itertools import repeat

import numpy as np
from numpy.typing import NDArray

from glowing_fiesta.aggregate import bounded_sum
from glowing_fiesta.model import Resolution
from glowing_fiesta.rollup import Merged, Row, scatter
from glowing_fiesta.rollup import Stored as Cell

# Stored resolution -> the span of one row, in seconds.
PACKED: dict[int, int] = {int(Resolution.MINUTE): 900}

_VERSION = 1
_HEAD = struct.Struct("<BB")


def row_start(res: int, start: int) -> int:
    """The start of the row that holds the cell of `res` starting at `start`."""
    width = PACKED.get(res)
    return start if width is None else start - start % width


def expired_before(res: int, cutoff: float) -> float:
    """The bound on row starts below which a row holds only cells older than `cutoff`:
    a pack goes when all of it has expired (minute cells may outlive the raw window
    by up to a pack's width)."""
    width = PACKED.get(res)
    return cutoff if width is None else math.floor(cutoff) - width + 1


def encode(
    res: int, start: int, cells: Mapping[int, Cell]
) -> tuple[int, float, float, float, bytes]:
    """The row of the pack at `start` holding `cells` (by cell start): its count, sum, min,
    max and pack bytes."""
    starts = sorted(cells)
    n = len(starts)
    if not 0 < n <= 255:
        raise ValueError(f"a pack holds 1..255 cells, not {n}")
    held = [cells[s] for s in starts]
    counts = [c[0] for c in held]
    sums = [c[1] for c in held]
    mins = [c[2] for c in held]
    maxs = [c[3] for c in held]
    summaries = [c[4] for c in held]
    index = [(s - start) // res for s in starts]
    if index[0] < 0 or index[-1] * res >= PACKED[res]:
        raise ValueError("a cell outside its pack")
    head = struct.pack(
        f"<BB{n}B{n}q{3 * n}d{n}I",
        _VERSION,
        n,
        *index,
        *counts,
        *sums,
        *mins,
        *maxs,
        *map(len, summaries),
    )
    total = bounded_sum(sum(sums))
    return sum(counts), total, min(mins), max(maxs), head + b"".join(summaries)


@functools.cache
def _layout(n: int) -> struct.Struct:
    """The fixed part of an n-cell pack after its head (at most 255 of them)."""
    return struct.Struct(f"<{n}B{n}q{3 * n}d{n}I")


def decode(
    res: int, start: int, data: bytes, *, summaries: bool = True
) -> list[tuple[int, int, float, float, float, bytes | None]]:
    """A pack's cells as (start, count, sum, min, max, summary), by start; summaries are
    None unless asked for. It runs once per pack a query reads (96 for a day of minutes),
    so the per-cell work is left to `zip` and one comprehension."""
    if len(data) < _HEAD.size or data[0] != _VERSION:
        raise ValueError("unknown cell pack format")
    n = data[1]
    layout = _layout(n)
    at = _HEAD.size + layout.size
    if len(data) < at:
        raise ValueError("truncated cell pack")
    fields = layout.unpack_from(data, _HEAD.size)
    starts = [start + i * res for i in fields[:n]]
    counts, sums = fields[n : 2 * n], fields[2 * n : 3 * n]
    mins, maxs = fields[3 * n : 4 * n], fields[4 * n : 5 * n]
    if not summaries:
        return list(zip(starts, counts, sums, mins, maxs, repeat(None, n), strict=True))
    lengths = fields[5 * n :]
    if at + sum(lengths) != len(data):
        raise ValueError("truncated cell pack")
    parts = []
    for length in lengths:
        parts.append(data[at : at + length])
        at += length
    return list(zip(starts, counts, sums, mins, maxs, parts, strict=True))


def unpack_stored(rows: Iterable[Row]) -> Iterable[tuple[tuple[int, int, int], Cell]]:
    """Stored rows as cells by (metric_id, res, start): packs opened, others as they are."""
    for mid, res, start, count, total, low, high, summary in rows:
        if res not in PACKED:
            yield (mid, res, start), (count, total, low, high, summary)
            continue
        for s, c, t, lo, hi, part in decode(res, start, summary):
            assert part is not None  # noqa: S101 - decode was asked for summaries
            yield (mid, res, s), (c, t, lo, hi, part)


def pack(merged: Iterable[Merged], stored: Mapping[tuple[int, int, int], Cell]) -> list[Row]:
    """The rows to write for a write's merged cells: cells of unpacked resolutions as
    they are, then the packs of packed ones, each with the stored cells of that pack the
    write did not touch (`stored` must hold every cell of every pack the write touches)."""
    out: list[Row] = []
    packs: list[Row] = []
    for cells in merged:
        width = PACKED.get(cells.res)
        if width is None:
            out.extend(cells.rows())
        else:
            packs.extend(_packs(cells, width, stored))
    return out + packs


def _packs(cells: Merged, width: int, stored: Mapping[tuple[int, int, int], Cell]) -> list[Row]:
    """`encode` for every pack the cells touch, at once: a big write's minute cells are
    tens of thousands, so their fixed-width fields are scattered into one buffer by
    numpy, and each pack is a slice of it and its cells' summaries. The few packs
    that hold stored cells (at the two ends of a bulk write's span, say) are built again
    by `encode`, the write's cells over the stored ones."""
    if not cells.metric:
        return []
    res, metric, count, summary = cells.res, cells.metric, cells.count, cells.summary
    start = np.asarray(cells.start, dtype=np.int64)
    first = start - start % width
    bounds = _runs(metric, first)
    lasts = [*bounds[1:], len(metric)]
    firsts = np.asarray(bounds, dtype=np.int64)
    n = np.asarray(lasts, dtype=np.int64) - firsts  # cells per pack: at most width // res
    pack_of = np.repeat(np.arange(len(firsts)), n)
    slot = np.arange(len(metric), dtype=np.int64) - firsts[pack_of]
    lengths = np.fromiter(map(len, summary), dtype=np.int64, count=len(summary))
    # The packs' fixed parts in one buffer, scattered by numpy; each pack is then its
    # fixed part and its cells' summaries, which are consecutive in `joined`. (Scattering
    # the summaries into the buffer too took an index per byte: ~5% of a rollup.)
    size = 2 + 37 * n
    offset = np.cumsum(size) - size  # each pack's offset in the buffer
    buf = np.empty(int(size.sum()), dtype=np.uint8)
    buf[offset] = _VERSION
    buf[offset + 1] = n
    cell_n = n[pack_of]
    head = offset[pack_of] + 2  # where each cell's pack's fixed part starts
    buf[head + slot] = (start - first) // res
    scatter(buf, head + cell_n + 8 * slot, np.asarray(count, dtype="<i8"))
    scatter(buf, head + 9 * cell_n + 8 * slot, np.asarray(cells.sum, dtype="<f8"))
    scatter(buf, head + 17 * cell_n + 8 * slot, np.asarray(cells.min, dtype="<f8"))
    scatter(buf, head + 25 * cell_n + 8 * slot, np.asarray(cells.max, dtype="<f8"))
    scatter(buf, head + 33 * cell_n + 4 * slot, lengths.astype("<u4"))
    fixed = buf.tobytes()
    joined = b"".join(summary)
    ends = np.cumsum(lengths)
    cuts = np.concatenate(([0], ends[np.asarray(lasts, dtype=np.int64) - 1])).tolist()
    bounds_fixed = (offset + size).tolist()
    data = [
        fixed[o:e] + joined[a:b]
        for o, e, a, b in zip(offset.tolist(), bounds_fixed, cuts[:-1], cuts[1:], strict=True)
    ]
    starts = first[firsts].tolist()
    # Totals in Python, left to right as `encode` adds them, so both give the same float.
    rows = [
        (
            metric[p],
            res,
            s,
            sum(count[p:q]),
            bounded_sum(sum(cells.sum[p:q])),
            min(cells.min[p:q]),
            max(cells.max[p:q]),
            pack,
        )
        for p, q, s, pack in zip(bounds, lasts, starts, data, strict=True)
    ]
    if not stored:
        return rows
    packs = {(metric[p], s): k for k, (p, s) in enumerate(zip(bounds, starts, strict=True))}
    for k, held in _stored_in(res, width, packs, stored).items():
        p, q = bounds[k], lasts[k]
        for s, c, total, low, high, part in zip(
            cells.start[p:q],
            count[p:q],
            cells.sum[p:q],
            cells.min[p:q],
            cells.max[p:q],
            summary[p:q],
            strict=True,
        ):
            held[s] = (c, total, low, high, part)
        rows[k] = (metric[p], res, starts[k], *encode(res, starts[k], held))
    return rows


def _runs(metric: list[int], first: NDArray[np.int64]) -> list[int]:
    """The index of each pack's first cell, for cells in (metric, start) order."""
    mid = np.asarray(metric, dtype=np.int64)
    change = np.flatnonzero((np.diff(mid) != 0) | (np.diff(first) != 0)) + 1
    return [0, *change.tolist()]


def _stored_in(
    res: int,
    width: int,
    packs: dict[tuple[int, int], int],
    stored: Mapping[tuple[int, int, int], Cell],
) -> dict[int, dict[int, Cell]]:
    """By pack (its position in `packs`, keyed by metric and pack start): the stored
    cells of resolution `res` in those packs, by start (those the write merged too are
    overwritten by the caller)."""
    out: dict[int, dict[int, Cell]] = {}
    for (mid, cell_res, s), cell in stored.items():
        if cell_res != res:
            continue
        k = packs.get((mid, s - s % width))
        if k is not None:
            out.setdefault(k, {})[s] = cell
    return out
