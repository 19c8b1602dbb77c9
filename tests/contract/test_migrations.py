"""Migration 0004 on every engine: minute cells written one to a row (as before it) come
back the same from their quarter-hour packs, and its downgrade restores the rows. Also the
SQLite file the migrations create: its page size and WAL mode, and an existing file left
as it is."""

from __future__ import annotations

import asyncio
import sqlite3
import struct
from pathlib import Path

from sqlalchemy import create_engine, insert, select
from sqlalchemy.pool import NullPool

from glowing_fiesta.aggregate import VALUES_TAG
from glowing_fiesta.model import MetricType, Point, PointBatch, Resolution
from glowing_fiesta.storage import migrate
from glowing_fiesta.storage.base import WriteItem
from glowing_fiesta.storage.dialects import PAGE_SIZE, driver_url
from glowing_fiesta.storage.schema import rollups
from glowing_fiesta.storage.sql import SqlStorage

T0 = 1_700_000_000 - 1_700_000_000 % 86400  # a UTC midnight
MINUTE = int(Resolution.MINUTE)


def _values(*vals: float) -> bytes:
    return bytes((VALUES_TAG,)) + struct.pack(f"<{len(vals)}d", *vals)


def _minute_rows(mid: int) -> list[tuple[int, int, int, int, float, float, float, bytes]]:
    """One-cell-a-row minute cells as a writer before 0004 stored them: two quarter-hours
    apart, one cell with a sketch-sized summary."""
    starts = [T0, T0 + 60, T0 + 840, T0 + 900, T0 + 7200 + 180]
    out = []
    for k, s in enumerate(starts):
        vals = [float(k), float(k) + 0.5]
        out.append((mid, MINUTE, s, 2, sum(vals), min(vals), max(vals), _values(*vals)))
    out.append((mid, MINUTE, T0 + 7200 + 240, 1, 7.0, 7.0, 7.0, b"\x01" + bytes(range(40))))
    return out


def _stored_minute_rows(url: str) -> list[tuple[object, ...]]:
    engine = create_engine(driver_url(url), poolclass=NullPool)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                select(rollups).where(rollups.c.res == MINUTE).order_by(rollups.c.bucket)
            ).all()
    finally:
        engine.dispose()
    return [(*r[:7], bytes(r[7])) for r in rows]


def test_minute_cells_survive_the_move_to_packs_and_back(engine_url: str) -> None:
    store = SqlStorage(engine_url)
    try:
        # A metric to own the cells, created the usual way.
        batch = PointBatch("b1", [Point("legacy", MetricType.VALUE, 1.0, T0 + 86400 * 2)])
        store.apply_now([WriteItem(batch)])
        metric = asyncio.run(store.get_metric("legacy"))
        assert metric is not None
    finally:
        asyncio.run(store.close())

    migrate.downgrade(engine_url, "0003")
    old = _minute_rows(metric.id)
    engine = create_engine(driver_url(engine_url), poolclass=NullPool)
    try:
        with engine.begin() as conn:
            conn.execute(rollups.delete().where(rollups.c.res == MINUTE))
            conn.execute(
                insert(rollups), [dict(zip(rollups.c.keys(), r, strict=True)) for r in old]
            )
    finally:
        engine.dispose()

    migrate.upgrade(engine_url)
    packs = _stored_minute_rows(engine_url)
    # Two quarter-hours: [T0, T0 + 900) holds three cells, then one of its own, then two.
    assert [(p[2], p[3]) for p in packs] == [(T0, 6), (T0 + 900, 2), (T0 + 7200, 3)]
    store = SqlStorage(engine_url)
    try:
        cells = asyncio.run(
            store.read_cells(metric.id, Resolution.MINUTE, T0, T0 + 86400, sketches=True)
        )
        # A read from inside a pack leaves out its cells outside the span, at both ends.
        tail = asyncio.run(
            store.read_cells(metric.id, Resolution.MINUTE, T0 + 61, T0 + 7381, sketches=False)
        )
    finally:
        asyncio.run(store.close())
    assert [(s, *rest) for s, *rest in cells] == [r[2:] for r in old]
    assert tail == [(*r[2:7], None) for r in old[2:5]]

    migrate.downgrade(engine_url, "0003")
    assert _stored_minute_rows(engine_url) == old
    migrate.upgrade(engine_url)


def _pragma(path: Path, name: str) -> object:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(f"PRAGMA {name}").fetchone()[0]
    finally:
        conn.close()


def test_a_new_sqlite_database_is_made_with_its_page_size_and_wal(tmp_path: Path) -> None:
    path = tmp_path / "new" / "gf.db"
    migrate.upgrade(f"sqlite:///{path}")
    assert _pragma(path, "page_size") == PAGE_SIZE
    assert _pragma(path, "journal_mode") == "wal"
    assert migrate.is_current(f"sqlite:///{path}")


def test_an_existing_sqlite_database_keeps_its_page_size_and_data(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA page_size=4096")
    conn.execute("CREATE TABLE kept (x INTEGER)")
    conn.execute("INSERT INTO kept VALUES (42)")
    conn.commit()
    conn.close()
    assert PAGE_SIZE != 4096
    migrate.upgrade(f"sqlite:///{path}")
    assert _pragma(path, "page_size") == 4096
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("SELECT x FROM kept").fetchall() == [(42,)]
    finally:
        conn.close()
    assert migrate.is_current(f"sqlite:///{path}")
