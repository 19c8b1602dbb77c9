"""Rollup backlog: raw point blocks committed whose rollup cells are not written yet.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rollup_backlog",
        sa.Column("first_block", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("last_block", sa.BigInteger(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("rollup_backlog")
