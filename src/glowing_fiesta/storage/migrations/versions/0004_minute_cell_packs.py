"""Minute cells stored a quarter-hour to a row (see storage/cellpacks.py).

The `rollups` rows of resolution 60 become packs: one row per metric and quarter-hour
holding its minute cells. Rewritten metric by metric, so memory stays bounded by one
metric's minute cells.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

from glowing_fiesta import rollup
from glowing_fiesta.storage import cellpacks

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_MINUTE = 60
_rollups = sa.table(
    "rollups",
    sa.column("metric_id", sa.BigInteger()),
    sa.column("res", sa.Integer()),
    sa.column("bucket", sa.BigInteger()),
    sa.column("count", sa.BigInteger()),
    sa.column("sum", sa.Double()),
    sa.column("min", sa.Double()),
    sa.column("max", sa.Double()),
    sa.column("sketch", sa.LargeBinary()),
)
_COLUMNS = ("metric_id", "res", "bucket", "count", "sum", "min", "max", "sketch")


def _rewrite(convert: Callable[[int, Sequence[Any]], list[rollup.Row]]) -> None:
    """Replace each metric's minute rows with `convert(metric_id, rows)`."""
    conn = op.get_bind()
    c = _rollups.c
    mids = conn.scalars(sa.select(c.metric_id).where(c.res == _MINUTE).distinct()).all()
    for mid in mids:
        rows = conn.execute(
            sa.select(c.bucket, c.count, c.sum, c.min, c.max, c.sketch)
            .where(c.metric_id == mid, c.res == _MINUTE)
            .order_by(c.bucket)
        ).all()
        new = [dict(zip(_COLUMNS, row, strict=True)) for row in convert(mid, rows)]
        conn.execute(sa.delete(_rollups).where(c.metric_id == mid, c.res == _MINUTE))
        if new:
            conn.execute(sa.insert(_rollups), new)


def _packed(mid: int, rows: Sequence[Any]) -> list[rollup.Row]:
    # Every stored cell is one of the "write's" (rows come ordered by bucket), so no
    # stored cell is left to add to their packs.
    cells = rollup.Merged(
        _MINUTE,
        [mid] * len(rows),
        [int(row[0]) for row in rows],
        [int(row[1]) for row in rows],
        [float(row[2]) for row in rows],
        [float(row[3]) for row in rows],
        [float(row[4]) for row in rows],
        [bytes(row[5]) for row in rows],
    )
    return cellpacks.pack([cells], {})


def _unpacked(mid: int, rows: Sequence[Any]) -> list[rollup.Row]:
    packs = [
        (mid, _MINUTE, int(b), int(n), float(s), float(lo), float(hi), bytes(sk))
        for b, n, s, lo, hi, sk in rows
    ]
    return [(*key, *cell) for key, cell in cellpacks.unpack_stored(packs)]


def upgrade() -> None:
    _rewrite(_packed)


def downgrade() -> None:
    _rewrite(_unpacked)
