"""Pack a metric's raw points into one compressed block, and unpack it (pure).

Layout (version 1): one version byte, then zlib of
`n: uint32 | n x int64 time deltas in milliseconds | n x float64 values`, little-endian,
points sorted by time. Delta-encoded times and repeated values (counters are mostly 1)
compress to a few bytes a point. Times keep millisecond precision.
"""

from __future__ import annotations

import struct
import sys
import zlib
from array import array
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

_VERSION = 1
_HEADER = struct.Struct("<I")
_BIG_ENDIAN = sys.byteorder == "big"


def encode(points: Sequence[tuple[float, float]]) -> bytes:
    """Pack (timestamp seconds, value) pairs; order does not matter."""
    ordered = sorted(points)
    time = np.array([t for t, _ in ordered], dtype=np.float64)
    value = np.array([v for _, v in ordered], dtype=np.float64)
    return encode_runs(time, value, [0], [len(ordered)])[0]


def encode_runs(
    time: NDArray[np.float64], value: NDArray[np.float64], starts: list[int], ends: list[int]
) -> list[bytes]:
    """`encode` of each run [start, end) of points already sorted by (time, value), in bulk:
    the same bytes, with the per-point work done once for all runs."""
    ms = np.round(time * 1000).astype(np.int64)
    deltas = np.diff(ms, prepend=0)
    if len(ms):
        deltas[starts] = ms[starts]  # each block's first time is absolute
    delta_bytes = deltas.astype("<i8").tobytes()
    value_bytes = value.astype("<f8").tobytes()
    prefix = bytes([_VERSION])
    return [
        prefix
        + zlib.compress(
            _HEADER.pack(b - a) + delta_bytes[8 * a : 8 * b] + value_bytes[8 * a : 8 * b], 1
        )
        for a, b in zip(starts, ends, strict=True)
    ]


def decode(data: bytes) -> list[tuple[float, float]]:
    """Unpack a block into (timestamp seconds, value) pairs sorted by time."""
    if not data or data[0] != _VERSION:
        raise ValueError("unknown block format")
    body = zlib.decompress(data[1:])
    (n,) = _HEADER.unpack_from(body)
    times = array("q")
    values = array("d")
    times.frombytes(body[4 : 4 + 8 * n])
    values.frombytes(body[4 + 8 * n : 4 + 16 * n])
    if _BIG_ENDIAN:  # pragma: no cover
        times.byteswap()
        values.byteswap()
    out: list[tuple[float, float]] = []
    ms = 0
    for delta, v in zip(times, values, strict=True):
        ms += delta
        out.append((ms / 1000, v))
    return out
