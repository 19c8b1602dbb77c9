"""Journal marks: how far the writes in the journal file beside a SQLite database are
rolled up (see storage/journal.py).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "journal_marks",
        sa.Column("journal", sa.String(32), primary_key=True),
        sa.Column("rolled_up_to", sa.BigInteger(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("journal_marks")
