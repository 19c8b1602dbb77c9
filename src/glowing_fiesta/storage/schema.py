"""The tables, as SQLAlchemy Core metadata. Schema changes happen only through migrations.

Raw points are stored in blocks (one row per metric, UTC day and write) holding packed
arrays, because one row per point measured below the ingest goal on every engine.
Rollups hold one row per metric, resolution and cell with what every aggregate needs,
except minute cells: one row per metric and quarter-hour packs its minute cells
(storage/cellpacks.py).
Times are Unix seconds as doubles: one representation on every engine.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Double,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
)
from sqlalchemy.dialects import mysql

metadata = MetaData()

# Metric names and key names are case-sensitive; MySQL's default collations are not.
_CaseSensitiveName = String(255).with_variant(
    mysql.VARCHAR(255, charset="utf8mb4", collation="utf8mb4_bin"), "mysql", "mariadb"
)
# Surrogate ids are BIGINT on server engines; SQLite only makes INTEGER PRIMARY KEY a rowid.
_Id = BigInteger().with_variant(Integer(), "sqlite")
_Blob = LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb")

metrics = Table(
    "metrics",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("name", _CaseSensitiveName, nullable=False, unique=True),
    Column("type", String(8), nullable=False),
    Column("stat_key", String(32), nullable=False, unique=True),
    Column("created_at", Double, nullable=False),
    Column("last_point_at", Double, nullable=True),
)

metric_points = Table(
    "metric_points",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("metric_id", BigInteger, nullable=False),
    Column("t_min", Double, nullable=False),
    Column("t_max", Double, nullable=False),
    Column("n", Integer, nullable=False),
    Column("data", _Blob, nullable=False),
    Index("ix_metric_points_metric_tmax", "metric_id", "t_max"),
    Index("ix_metric_points_tmax", "t_max"),
)

rollups = Table(
    "rollups",
    metadata,
    Column("metric_id", BigInteger, primary_key=True, autoincrement=False),
    Column(
        "res",
        Integer(),
        primary_key=True,
        autoincrement=False,
    ),
    Column("bucket", BigInteger, primary_key=True, autoincrement=False),
    Column("count", BigInteger, nullable=False),
    Column("sum", Double, nullable=False),
    Column("min", Double, nullable=False),
    Column("max", Double, nullable=False),
    Column("sketch", _Blob, nullable=False),
    # SQLite: store rows in primary-key order instead of behind a rowid, so a range of
    # cells is one ordered scan and an upsert touches one B-tree, not two.
    sqlite_with_rowid=False,
)

# Superseded by the journal (migration 0005); only recovery reads it, so that a
# database left with writes pending loses none on upgrade. The embedded writer of
# migrations 0003-0004 committed a write's points as one row here and wrote their
# blocks and cells, many writes together, a little later, deleting the rows in the
# same transaction.
pending_points = Table(
    "pending_points",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("n", Integer, nullable=False),
    Column("data", _Blob, nullable=False),
    # Ids are never reused, even after the table empties (SQLite reuses a plain rowid):
    # a writer tells its own rows still pending from rows recovered by someone else by id.
    sqlite_autoincrement=True,
)

# How far the writes of each journal (storage/journal.py, the SQLite file beside the
# database that superseded `pending_points`) are rolled up: the last journal id whose
# blocks and cells are written, set in the transaction that writes them.
journal_marks = Table(
    "journal_marks",
    metadata,
    Column("journal", String(32), primary_key=True),
    Column("rolled_up_to", BigInteger, nullable=False),
)

# Superseded by `pending_points` (migration 0003): ranges of block ids whose cells were
# still to be written, left by a writer of migration 0002 that stopped with cells
# waiting. Only recovery reads it, so that such a database loses no cells on upgrade.
rollup_backlog = Table(
    "rollup_backlog",
    metadata,
    Column("first_block", BigInteger, primary_key=True, autoincrement=False),
    Column("last_block", BigInteger, nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("name", _CaseSensitiveName, nullable=False, unique=True),
    Column("prefix", String(16), nullable=False, unique=True),
    Column("secret_hash", String(64), nullable=False),
    Column("scopes", String(64), nullable=False),
    Column("rate_limit", Integer, nullable=True),
    Column("created_at", Double, nullable=False),
    Column("last_used_at", Double, nullable=True),
    Column("revoked_at", Double, nullable=True),
)

# Queue entries already written: claimed first thing in the transaction that writes their
# points, so that a redelivered entry (a worker died before its ack, or two workers race
# for it) is written once: the loser's claim waits on the winner's row, then finds it
# taken. `txn` tells the claiming transaction which claims are its own.
processed_batches = Table(
    "processed_batches",
    metadata,
    Column("batch_id", String(64), primary_key=True),
    Column("txn", String(32), nullable=False),
    Column("processed_at", Double, nullable=False),
    Index("ix_processed_batches_at", "processed_at"),
)
