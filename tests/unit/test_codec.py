"""The broker's entries (queue/codec): a batch comes back as it went in, entries of the
earlier version are still read, and a malformed entry is a ValueError, not a crash."""

from __future__ import annotations

from array import array

import msgpack
import pytest

from glowing_fiesta.model import MetricType, Point, PointBatch, PointColumns
from glowing_fiesta.queue import codec

C, V = MetricType.COUNTER, MetricType.VALUE
# Three metrics, one of them twice: name positions 0, 1, 0, 2.
POINTS = [
    Point("orders", C, 2.0, 1_700_000_100.0),
    Point("queue depth", V, 17.5, 1_700_000_101.5),
    Point("orders", C, 1.0, 1_700_000_099.75),
    Point("ñame", V, -3.0, 1_700_000_102.0),
]


def test_a_batch_comes_back_the_same_from_points_or_columns() -> None:
    as_points = PointBatch("b1", POINTS)
    as_columns = PointBatch("b1", columns=PointColumns.of(POINTS))
    assert codec.encode(as_columns) == codec.encode(as_points)
    back = codec.decode(codec.encode(as_columns))
    assert back == as_points
    assert back.columns == as_columns.columns


def test_an_entry_of_the_row_version_is_still_read() -> None:
    rows = [(p.metric, 0 if p.type is C else 1, p.value, p.timestamp) for p in POINTS]
    entry = msgpack.packb([1, "old", rows], use_bin_type=True)
    assert codec.decode(entry) == PointBatch("old", POINTS)


def _entry(**change: object) -> bytes:
    c = PointColumns.of(POINTS)
    fields: dict[str, object] = {
        "version": 2,
        "id": "b2",
        "names": c.names,
        "kinds": [0 if k is C else 1 for k in c.kinds],
        "index": c.index,
        "time": c.time,
        "value": c.value,
    }
    fields.update(change)
    return bytes(msgpack.packb(list(fields.values()), use_bin_type=True))


@pytest.mark.parametrize(
    "change",
    [
        {"version": 3},
        {"names": ["orders"]},  # fewer names than types
        {"names": ["orders", 7, "x"]},
        {"kinds": [0, 1, 5]},
        {"index": array("i", [0, 1, 0, 3]).tobytes()},  # no fourth metric
        {"index": array("i", [0, 1, 0, -1]).tobytes()},
        {"time": b"\0" * 8},
        {"value": "not bytes"},
        {"index": b"\0\0\0"},
        {"kinds": [0, float("inf"), 1]},  # int() of it is an OverflowError
        {"kinds": [0, "1", 1]},
        {"names": "abc"},
        {"names": ["orders", "orders", "x"]},
        {"value": array("d", [1.0, float("nan"), 2.0, 3.0]).tobytes()},
        {"time": array("d", [1.7e9, float("inf"), 1.7e9, 1.7e9]).tobytes()},
        # Decodable, but no transaction could write them (found by a bug hunt: one such
        # entry failed the writer's every try, with the entries read beside it).
        {"names": ["orders", "q" * 256, "x"]},  # over the 255 characters of a name
        {"names": ["orders", " padded ", "x"]},
        {"names": ["orders", "", "x"]},
        {"names": ["orders", "tab\there", "x"]},
        {"id": "i" * 65},  # over the de-duplication column's 64
        {"id": ""},
        {"id": 7},
        {"time": array("d", [1.7e9, 1e300, 1.7e9, 1.7e9]).tobytes()},  # past year 9999
        {"time": array("d", [1.7e9, -1e12, 1.7e9, 1.7e9]).tobytes()},  # before year 1
    ],
)
def test_a_malformed_entry_is_a_value_error(change: dict[str, object]) -> None:
    assert codec.decode(_entry()) == PointBatch("b2", POINTS)  # the untouched entry reads
    with pytest.raises(ValueError, match="undecodable queue entry"):
        codec.decode(_entry(**change))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x93",
        msgpack.packb([2, "x"]),
        msgpack.packb("x"),
        msgpack.packb([1, "old", [("a", float("inf"), 1.0, 1.7e9)]]),
        msgpack.packb([1, "old", [("a", 0, float("nan"), 1.7e9)]]),
        msgpack.packb([1, "old", [("a" * 300, 0, 1.0, 1.7e9)]]),
        msgpack.packb([1, "old", [("a", 0, 1.0, 1e300)]]),
        msgpack.packb([1, "o" * 65, [("a", 0, 1.0, 1.7e9)]]),
    ],
)
def test_what_is_not_an_entry_is_a_value_error(data: bytes) -> None:
    with pytest.raises(ValueError, match="undecodable queue entry"):
        codec.decode(data)
