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

from glowing_fiesta.model import Resolution
from glowing_fiesta.rollup import Row
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
    return sum(counts), sum(sums), min(mins), max(maxs), head + b"".join(summaries)


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


def pack(rows: Iterable[Row], stored: Mapping[tuple[int, int, int], Cell]) -> list[Row]:
    """The rows to write for a write's merged cell rows: cells of packed resolutions
    gathered into their packs, with the stored cells of those packs the write did not
    touch (`stored` must hold every cell of every pack the write touches)."""
    out: list[Row] = []
    packs: dict[tuple[int, int, int], dict[int, Cell]] = {}
    for row in rows:
        mid, res, start = row[0], row[1], row[2]
        width = PACKED.get(res)
        if width is None:
            out.append(row)
            continue
        key = (mid, res, start - start % width)
        cells = packs.get(key)
        if cells is None:
            packs[key] = cells = {}
        cells[start] = (row[3], row[4], row[5], row[6], row[7])
    for (mid, res, first), cells in packs.items():
        for s in range(first, first + PACKED[res], res):
            if s not in cells and (old := stored.get((mid, res, s))) is not None:
                cells[s] = old
        out.append((mid, res, first, *encode(res, first, cells)))
    return out
