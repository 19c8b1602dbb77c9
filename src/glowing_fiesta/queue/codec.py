"""Serialise a validated batch for a broker, and back (msgpack, compact, versioned)."""

from __future__ import annotations

import msgpack

from glowing_fiesta.model import MetricType, Point, PointBatch

_VERSION = 1
_TYPES = {MetricType.COUNTER: 0, MetricType.VALUE: 1}
_BY_CODE = {code: mtype for mtype, code in _TYPES.items()}


def encode(batch: PointBatch) -> bytes:
    payload = [
        _VERSION,
        batch.batch_id,
        [(metric, _TYPES[mtype], value, ts) for metric, mtype, value, ts in batch.rows()],
    ]
    return bytes(msgpack.packb(payload, use_bin_type=True))


def decode(data: bytes) -> PointBatch:
    """The batch, or ValueError for anything this version did not write."""
    try:
        version, batch_id, rows = msgpack.unpackb(data, raw=False, strict_map_key=True)
        if version != _VERSION:
            raise ValueError(f"unknown entry version {version!r}")
        points = [Point(str(m), _BY_CODE[int(t)], float(v), float(ts)) for m, t, v, ts in rows]
        return PointBatch(str(batch_id), points)
    except (ValueError, TypeError, KeyError, msgpack.UnpackException) as exc:
        raise ValueError(f"undecodable queue entry: {exc}") from exc
