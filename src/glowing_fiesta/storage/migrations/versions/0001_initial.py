"""Initial schema: metrics, raw point blocks, rollups, API keys, processed batches.

Revision ID: 0001
Revises:
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_name = sa.String(255).with_variant(
    mysql.VARCHAR(255, charset="utf8mb4", collation="utf8mb4_bin"), "mysql", "mariadb"
)
_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_blob = sa.LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb")


def upgrade() -> None:
    op.create_table(
        "metrics",
        sa.Column("id", _id, primary_key=True, autoincrement=True),
        sa.Column("name", _name, nullable=False),
        sa.Column("type", sa.String(8), nullable=False),
        sa.Column("stat_key", sa.String(32), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("last_point_at", sa.Double(), nullable=True),
        sa.UniqueConstraint("name"),
        sa.UniqueConstraint("stat_key"),
    )
    op.create_table(
        "metric_points",
        sa.Column("id", _id, primary_key=True, autoincrement=True),
        sa.Column("metric_id", sa.BigInteger(), nullable=False),
        sa.Column("t_min", sa.Double(), nullable=False),
        sa.Column("t_max", sa.Double(), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("data", _blob, nullable=False),
    )
    op.create_index("ix_metric_points_metric_tmax", "metric_points", ["metric_id", "t_max"])
    op.create_index("ix_metric_points_tmax", "metric_points", ["t_max"])
    op.create_table(
        "rollups",
        sa.Column("metric_id", sa.BigInteger(), nullable=False, autoincrement=False),
        sa.Column(
            "res",
            sa.Integer(),
            nullable=False,
            autoincrement=False,
        ),
        sa.Column("bucket", sa.BigInteger(), nullable=False, autoincrement=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("sum", sa.Double(), nullable=False),
        sa.Column("min", sa.Double(), nullable=False),
        sa.Column("max", sa.Double(), nullable=False),
        sa.Column("sketch", _blob, nullable=False),
        sa.PrimaryKeyConstraint("metric_id", "res", "bucket"),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "api_keys",
        sa.Column("id", _id, primary_key=True, autoincrement=True),
        sa.Column("name", _name, nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("scopes", sa.String(64), nullable=False),
        sa.Column("rate_limit", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("last_used_at", sa.Double(), nullable=True),
        sa.Column("revoked_at", sa.Double(), nullable=True),
        sa.UniqueConstraint("name"),
        sa.UniqueConstraint("prefix"),
    )
    op.create_table(
        "processed_batches",
        sa.Column("batch_id", sa.String(64), primary_key=True),
        sa.Column("txn", sa.String(32), nullable=False),
        sa.Column("processed_at", sa.Double(), nullable=False),
    )
    op.create_index("ix_processed_batches_at", "processed_batches", ["processed_at"])


def downgrade() -> None:
    op.drop_table("processed_batches")
    op.drop_table("api_keys")
    op.drop_table("rollups")
    op.drop_table("metric_points")
    op.drop_table("metrics")
