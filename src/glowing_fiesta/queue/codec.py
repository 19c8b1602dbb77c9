"""Serialise a validated batch for a broker, and back (msgpack, compact, versioned).

Version 2 carries the batch as columns (`PointColumns`: names and types once each, then
per point a name's position, a time and a value as little-endian arrays): encoding and
decoding do no work per point, where version 1's row per point cost `serve` ~0.1 ms of
a 1,000-point batch each way. Version 1 entries (written before) are still read.
"""

from __future__ import annotations

import sys
from array import array
from math import isfinite

import msgpack

from glowing_fiesta.model import MetricType, Point, PointBatch, PointColumns

_VERSION = 2
_ROWS_VERSION = 1
_TYPES = {MetricType.COUNTER: 0, MetricType.VALUE: 1}
_BY_CODE = {code: mtype for mtype, code in _TYPES.items()}


def encode(batch: PointBatch) -> bytes:
    c = batch.columns
    payload = [
        _VERSION,
        batch.batch_id,
        c.names,
        [_TYPES[k] for k in c.kinds],
        _little(c.index, "i"),
        _little(c.time, "d"),
        _little(c.value, "d"),
    ]
    return bytes(msgpack.packb(payload, use_bin_type=True))


def decode(data: bytes) -> PointBatch:
    """The batch, or ValueError for anything this version did not write."""
    try:
        version, batch_id, *body = msgpack.unpackb(data, raw=False, strict_map_key=True)
        if version == _ROWS_VERSION:
            (rows,) = body
            points = [Point(str(m), _type(t), float(v), float(ts)) for m, t, v, ts in rows]
            if not all(isfinite(p.value) and isfinite(p.timestamp) for p in points):
                raise ValueError("a point is not a finite number")
            return PointBatch(str(batch_id), points)
        if version != _VERSION:
            raise ValueError(f"unknown entry version {version!r}")
        return PointBatch(str(batch_id), columns=_columns(*body))
    # Whatever a malformed entry raises: the caller drops it as poison, and anything
    # else would stop the entries read with it (OverflowError: int(float("inf"))).
    except (ValueError, TypeError, KeyError, OverflowError, msgpack.UnpackException) as exc:
        raise ValueError(f"undecodable queue entry: {exc}") from exc


def _type(code: object) -> MetricType:
    if type(code) is not int:
        raise TypeError(f"a type code is not an int: {code!r}")
    return _BY_CODE[code]


def _columns(
    names: list[str], kinds: list[int], index: bytes, time: bytes, value: bytes
) -> PointColumns:
    if not isinstance(names, list) or not isinstance(kinds, list):
        raise TypeError("the names and types are not lists")
    if not all(isinstance(n, str) for n in names) or len(set(names)) != len(names):
        raise ValueError("the names are not distinct strings")
    if len(kinds) != len(names):
        raise ValueError("the names and types do not match")
    if not all(isinstance(b, bytes) for b in (index, time, value)):
        raise TypeError("the columns are not bytes")
    n = len(index) // 4
    if len(index) != 4 * n or len(time) != 8 * n or len(value) != 8 * n:
        raise ValueError("the columns differ in length")
    positions = array("i", _little(index, "i"))
    if n and not 0 <= min(positions) <= max(positions) < len(names):
        raise ValueError("a point names no metric of the batch")
    times, values = array("d", _little(time, "d")), array("d", _little(value, "d"))
    if not all(map(isfinite, times)) or not all(map(isfinite, values)):
        raise ValueError("a point is not a finite number")
    return PointColumns(
        names, [_type(k) for k in kinds], positions.tobytes(), times.tobytes(), values.tobytes()
    )


def _little(data: bytes, code: str) -> bytes:
    """Native-endian array bytes as little-endian, or back (the same swap)."""
    if sys.byteorder == "little":
        return data
    swapped = array(code, data)  # pragma: no cover - no big-endian host to test on
    swapped.byteswap()  # pragma: no cover
    return swapped.tobytes()  # pragma: no cover
