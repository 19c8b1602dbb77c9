"""Pack a metric's raw points into one compressed block, and a write's points into one
pending record, and unpack them (pure).

Block layout (version 2): one version byte, then a Zstandard frame (level 1) of
`n: uint32 | n x int64 time deltas in milliseconds | n x float64 values`, little-endian,
points sorted by time. Delta-encoded times and repeated values (counters are mostly 1)
compress to a few bytes a point. Times keep millisecond precision. Version 1, written
until the eleventh session and still read, is the same body compressed by zlib (level
1): zstd compresses blocks in about a third of zlib's time (zlib was ~10% of the
rollup process in the bench's ingest), for 20% more bytes (2.94 → 3.52 a point in the
bench, against InfluxDB's 8.7; see performance.md).

Pending layout (version 2): one version byte, then
`n: uint32 | n x int64 metric ids | n x float64 times | n x float64 values`,
little-endian, uncompressed: it lives only until the write's blocks are written
(`SqlStorage.apply_now`), and zlib of a 2,000-point write cost ~0.3 µs a point, more
than the rest of its commit.
"""

from __future__ import annotations

import struct
import threading
import zlib
from collections.abc import Sequence

import numpy as np
import zstandard
from numpy.typing import NDArray

_VERSION = 2
_ZLIB_VERSION = 1
_PENDING_VERSION = 2
_HEADER = struct.Struct("<I")
_ZSTD_LEVEL = 1
# A Zstandard block holds at most 128 KiB of content and takes at least 4 bytes (an RLE
# block), so no frame expands more than 32,768-fold. The decompressor allocates the
# size a frame's header claims before it reads a byte of the body: a corrupt header
# claiming a terabyte would be a MemoryError, not a corrupt block.
_ZSTD_MAX_EXPANSION = 1 << 15


class _Codecs(threading.local):
    """A compressor and a decompressor per thread: zstandard's are not to be shared
    between threads at once, and blocks are read on several."""

    def __init__(self) -> None:
        self.compress = zstandard.ZstdCompressor(level=_ZSTD_LEVEL).compress
        self.decompress = zstandard.ZstdDecompressor().decompress


_codecs = _Codecs()


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
    compress = _codecs.compress
    return [
        prefix
        + compress(_HEADER.pack(b - a) + delta_bytes[8 * a : 8 * b] + value_bytes[8 * a : 8 * b])
        for a, b in zip(starts, ends, strict=True)
    ]


def decode(data: bytes) -> list[tuple[float, float]]:
    """Unpack a block into (timestamp seconds, value) pairs sorted by time."""
    time, value = decode_columns(data)
    return list(zip(time.tolist(), value.tolist(), strict=True))


def decode_columns(data: bytes) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Unpack a block into its times (seconds) and values, sorted by time."""
    if not data or data[0] not in (_VERSION, _ZLIB_VERSION):
        raise ValueError("unknown block format")
    try:
        if data[0] == _VERSION:
            frame = data[1:]
            if zstandard.frame_content_size(frame) > _ZSTD_MAX_EXPANSION * len(frame):
                raise ValueError("corrupt block: its size is more than its frame can hold")
            body = _codecs.decompress(frame)
        else:
            body = zlib.decompress(data[1:])
    except (zstandard.ZstdError, zlib.error) as exc:
        raise ValueError("corrupt block") from exc
    if len(body) < _HEADER.size:
        raise ValueError("truncated block")
    (n,) = _HEADER.unpack_from(body)
    if len(body) != _HEADER.size + 16 * n:
        raise ValueError("truncated block")
    ms = np.cumsum(np.frombuffer(body, "<i8", n, _HEADER.size), dtype=np.int64)
    value = np.frombuffer(body, "<f8", n, _HEADER.size + 8 * n).astype(np.float64)
    return ms / 1000, value


def encode_pending(
    metric: NDArray[np.int64], time: NDArray[np.float64], value: NDArray[np.float64]
) -> bytes:
    """Pack a write's points (columns of equal length, any metrics) as they are."""
    return b"".join(
        (
            bytes([_PENDING_VERSION]),
            _HEADER.pack(len(metric)),
            metric.astype("<i8").tobytes(),
            time.astype("<f8").tobytes(),
            value.astype("<f8").tobytes(),
        )
    )


def decode_pending(
    data: bytes,
) -> tuple[NDArray[np.int64], NDArray[np.float64], NDArray[np.float64]]:
    """Unpack `encode_pending`'s columns: metric ids, times, values."""
    if not data or data[0] != _PENDING_VERSION or len(data) < 1 + _HEADER.size:
        raise ValueError("unknown pending points format")
    (n,) = _HEADER.unpack_from(data, 1)
    if len(data) != 1 + _HEADER.size + 24 * n:
        raise ValueError("truncated pending points")
    at = 1 + _HEADER.size
    metric = np.frombuffer(data, "<i8", n, at).astype(np.int64)
    time = np.frombuffer(data, "<f8", n, at + 8 * n).astype(np.float64)
    value = np.frombuffer(data, "<f8", n, at + 16 * n).astype(np.float64)
    return metric, time, value
