"""Quarter-hour packs of minute cells (storage/cellpacks.py): what goes in comes out."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from glowing_fiesta.rollup import Merged, Row, Stored
from glowing_fiesta.storage import cellpacks

M = 60
Q = cellpacks.PACKED[M]
T = 1_700_000_100 - 1_700_000_100 % Q  # a pack start

cell = st.tuples(
    st.integers(1, 2**62),
    st.floats(allow_nan=False),
    st.floats(allow_nan=False),
    st.floats(allow_nan=False),
    st.binary(max_size=64),
)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.integers(0, Q // M - 1), cell, min_size=1))
def test_a_pack_gives_back_its_cells_in_order(cells: dict[int, Stored]) -> None:
    by_start = {T + i * M: c for i, c in cells.items()}
    count, _, low, high, data = cellpacks.encode(M, T, by_start)
    assert count == sum(c[0] for c in cells.values())
    assert low == min(c[2] for c in cells.values())
    assert high == max(c[3] for c in cells.values())
    got = cellpacks.decode(M, T, data)
    assert [(s, *rest) for s, *rest in got] == [(s, *by_start[s]) for s in sorted(by_start)]
    assert [g[5] for g in cellpacks.decode(M, T, data, summaries=False)] == [None] * len(got)


def test_cells_outside_the_pack_and_empty_packs_are_refused() -> None:
    one = (1, 1.0, 1.0, 1.0, b"")
    with pytest.raises(ValueError, match="outside"):
        cellpacks.encode(M, T, {T + Q: one})
    with pytest.raises(ValueError, match="outside"):
        cellpacks.encode(M, T, {T - M: one})
    with pytest.raises(ValueError, match=r"1\.\.255"):
        cellpacks.encode(M, T, {})


@pytest.mark.parametrize("cut", [0, 1, 2, 5, 20])
def test_a_damaged_pack_is_refused_not_misread(cut: int) -> None:
    *_, data = cellpacks.encode(
        M, T, {T: (3, 6.0, 1.0, 3.0, b"abc"), T + M: (1, 1.0, 1.0, 1.0, b"")}
    )
    with pytest.raises(ValueError, match="cell pack"):
        cellpacks.decode(M, T, data[: len(data) - cut] if cut else b"")
    with pytest.raises(ValueError, match="unknown cell pack format"):
        cellpacks.decode(M, T, b"\x09" + data[1:])


def merged(res: int, rows: list[tuple[int, int, Stored]]) -> Merged:
    """Cells of one resolution as `rollup.merge` gives them: (metric, start, cell) rows in
    (metric, start) order."""
    return Merged(
        res,
        [mid for mid, _, _ in rows],
        [start for _, start, _ in rows],
        [c[0] for _, _, c in rows],
        [c[1] for _, _, c in rows],
        [c[2] for _, _, c in rows],
        [c[3] for _, _, c in rows],
        [c[4] for _, _, c in rows],
    )


def test_a_write_keeps_the_stored_cells_of_the_packs_it_touches() -> None:
    """Rows for a write into minute 2 of a pack that holds minutes 0 and 2: the pack is
    rewritten with minute 0 as stored and minute 2 as merged; other resolutions pass."""
    stored = {
        (7, M, T): (1, 5.0, 5.0, 5.0, b"a"),
        (7, M, T + 2 * M): (1, 1.0, 1.0, 1.0, b"b"),
        (7, M, T + Q): (1, 9.0, 9.0, 9.0, b"c"),  # another pack, untouched by the write
    }
    minute: Stored = (2, 3.0, 1.0, 2.0, b"bb")
    hour = (7, 3600, T - T % 3600, 2, 3.0, 1.0, 2.0, b"h")
    out = cellpacks.pack(
        [merged(M, [(7, T + 2 * M, minute)]), merged(3600, [(7, hour[2], hour[3:])])], stored
    )
    assert out[0] == hour
    assert len(out) == 2
    mid, res, start, count, total, low, high, data = out[1]
    assert (mid, res, start, count, total, low, high) == (7, M, T, 3, 8.0, 1.0, 5.0)
    assert cellpacks.decode(M, T, data) == [(T, 1, 5.0, 5.0, 5.0, b"a"), (T + 2 * M, *minute)]
    assert dict(cellpacks.unpack_stored(out)) == {
        (7, 3600, hour[2]): hour[3:],
        (7, M, T): stored[(7, M, T)],
        (7, M, T + 2 * M): minute,
    }


def packed_one_by_one(
    write: list[tuple[int, int, Stored]], stored: dict[tuple[int, int, int], Stored]
) -> list[Row]:
    """The reference for `pack`: each pack the write touches built by `encode`, with the
    pack's stored cells that the write leaves alone."""
    packs: dict[tuple[int, int], dict[int, Stored]] = {}
    for mid, start, c in write:
        packs.setdefault((mid, start - start % Q), {})[start] = c
    for (mid, res, start), c in stored.items():
        touched = packs.get((mid, start - start % Q))
        if res == M and touched is not None and start not in touched:
            touched[start] = c
    return [
        (mid, M, first, *cellpacks.encode(M, first, cells)) for (mid, first), cells in packs.items()
    ]


# Finite, and small enough that no pack's total overflows: NaN would not equal itself.
finite = st.floats(-1e300, 1e300)
minute_cells = st.dictionaries(
    st.tuples(st.integers(1, 4), st.integers(-3 * Q // M, 3 * Q // M)),
    st.tuples(st.integers(1, 2**40), finite, finite, finite, st.binary(max_size=64)),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(minute_cells, minute_cells)
def test_packs_built_at_once_equal_packs_built_one_by_one(
    write: dict[tuple[int, int], Stored], stored: dict[tuple[int, int], Stored]
) -> None:
    """Byte for byte, whatever the write's cells and the stored ones (some the write
    merged, some in the packs it touches, some in others), over several metrics and packs."""
    rows = [(mid, T + i * M, c) for (mid, i), c in sorted(write.items())]
    on_disk = {(mid, M, T + i * M): c for (mid, i), c in stored.items()}
    out = cellpacks.pack([merged(M, rows)], on_disk)
    assert out == packed_one_by_one(rows, on_disk)
    for row in out:  # plain Python types: database drivers do not all adapt numpy scalars
        assert [type(x) for x in row] == [int, int, int, int, float, float, float, bytes]


def test_a_pack_expires_when_its_last_minute_does() -> None:
    assert cellpacks.row_start(M, T + 5 * M) == T
    assert cellpacks.row_start(3600, T + 5 * M) == T + 5 * M  # not packed
    assert cellpacks.expired_before(3600, T + 0.5) == T + 0.5
    bound = cellpacks.expired_before(M, T + Q + 0.5)  # the pack at T has ended
    assert T < bound <= T + 1
    assert cellpacks.expired_before(M, T + Q - 1) <= T  # its last minute has not: kept
