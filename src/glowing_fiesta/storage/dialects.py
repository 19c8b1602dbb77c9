"""Everything that differs between SQLite, PostgreSQL and MySQL/MariaDB, in one place.

The rest of the storage package speaks SQLAlchemy Core; this module turns the plain
URLs users write into driver URLs, tunes each engine on connect and builds the few
statements whose syntax differs (upserts, insert-or-ignore).
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import (
    Connection,
    Insert,
    Select,
    Table,
    Text,
    bindparam,
    case,
    cast,
    event,
    func,
    select,
    update,
)
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import DBAPIError

_DRIVERS = {
    "sqlite": "sqlite+pysqlite",
    "postgresql": "postgresql+psycopg",
    "postgres": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mariadb": "mysql+pymysql",
}


def driver_url(url: str) -> URL:
    """The SQLAlchemy URL, with our driver, for a plain `scheme://...` URL."""
    parsed = make_url(url)
    backend = parsed.drivername.split("+", 1)[0]
    if backend not in _DRIVERS:
        raise ValueError(f"unsupported database URL scheme {backend!r}")
    out = parsed.set(drivername=_DRIVERS[backend])
    if backend in {"mysql", "mariadb"}:
        out = out.update_query_dict({"charset": "utf8mb4"})
    return out


def engine_options(url: URL, *, writer: bool) -> dict[str, Any]:
    # A statement's parameters stay out of its errors' messages, which reach logs and
    # the CLI's output: they hold a new key's hash, and users' data.
    if url.get_backend_name() == "sqlite":
        return {
            "connect_args": {"check_same_thread": False, "timeout": 30},
            "pool_size": 1 if writer else 4,
            "max_overflow": 0 if writer else 8,
            "hide_parameters": True,
        }
    options: dict[str, Any] = {
        "hide_parameters": True,
        "pool_pre_ping": True,
        "pool_size": 1 if writer else 5,
        "max_overflow": 0 if writer else 10,
        "pool_recycle": 3600,
    }
    if writer:
        # Each statement sees what committed before it. The writer reads rollup cells
        # after taking the metric's row lock; under MySQL's default REPEATABLE READ
        # that read would come from an older snapshot and lose another worker's update.
        options["isolation_level"] = "READ COMMITTED"
    options["connect_args"] = {"connect_timeout": 5}  # fail fast: /ready and 503s need it
    return options


# Deadlock victims and serialisation failures: the transaction was rolled back whole.
_RETRY_SQLSTATES = {"40P01", "40001"}
_RETRY_MYSQL_CODES = {1213, 1205}


def is_retryable(exc: DBAPIError) -> bool:
    """True when the engine rolled the transaction back and running it again is safe."""
    orig = exc.orig
    if getattr(orig, "sqlstate", None) in _RETRY_SQLSTATES:
        return True
    args: tuple[Any, ...] = getattr(orig, "args", ())
    return bool(args) and args[0] in _RETRY_MYSQL_CODES


def configure(engine: Engine, *, writer: bool, sqlite_synchronous: str) -> None:
    """Per-connection settings. SQLite: WAL, durability level, big cache, busy timeout,
    and BEGIN IMMEDIATE for the writer so that two processes never deadlock upgrading
    a read lock to a write lock."""
    if engine.dialect.name != "sqlite":
        return

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's `begin` event emit BEGIN itself (pysqlite's own implicit
        # transactions would begin too late and as DEFERRED).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA synchronous={sqlite_synchronous}")
        cur.execute(f"PRAGMA cache_size=-{WRITER_CACHE_KIB if writer else READER_CACHE_KIB}")
        cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA temp_store=MEMORY")
        # Shrink the WAL file back after it was started over, so disk use stays bounded.
        cur.execute(f"PRAGMA journal_size_limit={WAL_LIMIT_BYTES}")
        if writer:
            # No checkpoint inside a commit: the one commit that crossed the threshold
            # paid for copying pages back and two fsyncs (tens of ms of p99 for every
            # request waiting on it). `checkpoint()` runs them beside the writer instead.
            cur.execute("PRAGMA wal_autocheckpoint=0")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        immediate = writer and not conn.get_execution_options().get(_READ_ONLY, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


_READ_ONLY = "gf_read_only"


def read_only(conn: Connection) -> Connection:
    """`conn` (a writer's) with transactions that take no write lock until they write
    (SQLite: a deferred BEGIN); a no-op elsewhere."""
    return conn.execution_options(**{_READ_ONLY: True})


def sync_wal(engine: Engine) -> None:
    """Flush to the disk what SQLite wrote to the WAL so far (SQLite: the WAL file's
    fsync; elsewhere nothing to do).

    Under `synchronous=NORMAL` a commit reaches the disk only at the next checkpoint.
    Before the journal's rolled-up writes are deleted (in another file, whose deletion
    may reach the disk first), the rollup that covers them must be there: a power loss
    in between would otherwise lose writes acknowledged long before it.
    """
    path = engine.url.database
    if engine.dialect.name != "sqlite" or not path or path == ":memory:":
        return
    try:
        fd = os.open(f"{path}-wal", os.O_RDONLY)
    except FileNotFoundError:  # checkpointed and removed: everything is in the file
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def journal_path(url: URL) -> str | None:
    """Where the journal (storage/journal.py) of a SQLite database file lives; None for
    other engines and in-memory databases, which write every write's cells with it."""
    path = url.database
    if url.get_backend_name() != "sqlite" or not path or path == ":memory:":
        return None
    if url.query.get("mode") == "memory" or path.startswith("file::memory:"):
        return None
    return f"{path}-pending"


BUSY_TIMEOUT_MS = 30_000
# Page caches. A writing connection's fills to its size during the bench's ingest, and
# its commits touch the newest pages, which stay cached either way: 32 MiB instead of 64
# took 20 MB off the writer's peak with ingest unchanged (three alternating runs each:
# 417, 439, 431 against 425, 422, 442 thousand points/s), and 16 instead of 32 took 15 MB
# off the rollup process's (536 and 539 against 520-535 thousand points/s; 8 MiB: ~4%
# slower).
WRITER_CACHE_KIB = 16 * 1024
READER_CACHE_KIB = 64 * 1024
# The page size of a new database. Rollup rows (a minute pack of sketches is often
# over the ~1 KB a 4 KiB page keeps inline) spill into overflow pages less: the bench's
# ingest, twelve alternating runs, 8 KiB ahead in ten (median ~+4%), its database 2-6%
# smaller; queries and single writes unchanged. 16 KiB was no faster than 8.
PAGE_SIZE = 8192
# A WAL longer than this (~64 MiB) is started over by the writer: see `bound_wal`.
WAL_LIMIT_BYTES = 64 * 1024 * 1024


def create_sqlite(path: str) -> None:
    """A new SQLite file's page size and WAL mode, set before the first table fixes its
    page size; an existing file is left as it is."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        if conn.execute("PRAGMA page_count").fetchone()[0] == 0:
            conn.execute(f"PRAGMA page_size={PAGE_SIZE}")
            conn.execute("PRAGMA journal_mode=WAL")


def data_version_sql(engine: Engine) -> str | None:
    """A statement whose answer changes when another connection commits, if the engine
    has one (SQLite's `PRAGMA data_version`; a connection's own commits leave it)."""
    return "PRAGMA data_version" if engine.dialect.name == "sqlite" else None


def has_row_locks(engine: Engine) -> bool:
    """Whether SELECT ... FOR UPDATE means anything: not on SQLite, whose write
    transaction already excludes every other writer (and which ignores FOR UPDATE)."""
    return engine.dialect.name != "sqlite"


def checkpoint_sql(engine: Engine) -> str | None:
    """The statement that moves committed WAL pages into the database, if the engine has one.

    PASSIVE never blocks the writer; it copies what no reader still needs.
    """
    return "PRAGMA wal_checkpoint(PASSIVE)" if engine.dialect.name == "sqlite" else None


def bound_wal(engine: Engine) -> None:
    """After a write transaction, on the writer: start a long WAL over (SQLite).

    The PASSIVE checkpoints beside the writer copy pages back but cannot shorten the
    WAL: SQLite starts it over only when a checkpoint has caught up with the last commit,
    and a writer committing back to back (bulk ingest) never leaves that gap. Measured:
    the WAL grew to 4 GB over a 3,000,000-point ingest, and commits and reads slowed with
    it. Only the writer can make the gap, between its own transactions: RESTART, once no
    reader needs the old WAL, makes the next commit start from the top. It is tried
    without waiting: while a reader still needs the old WAL (a long query, retention's
    scan) or `serve`'s PASSIVE checkpoint runs, it gives up at once and the next commit
    tries again. With the usual busy timeout it waited for them, holding every write
    behind it: 841 ms once, behind retention's scan of the rollups, during single writes.
    The file size is a stat; `journal_size_limit` shrinks the file after the restart.
    """
    path = engine.url.database
    if engine.dialect.name != "sqlite" or not path or path == ":memory:":
        return
    try:
        size = os.stat(f"{path}-wal").st_size
    except FileNotFoundError:
        return
    if size > WAL_LIMIT_BYTES:
        with engine.connect() as conn:
            dbapi = conn.connection.dbapi_connection
            assert dbapi is not None  # noqa: S101 - a checked-out connection has one
            dbapi.execute("PRAGMA busy_timeout=0")
            try:
                dbapi.execute("PRAGMA wal_checkpoint(RESTART)").fetchall()
            finally:
                dbapi.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")


def upsert(engine: Engine, table: Table, keys: list[str], update: list[str]) -> Insert:
    """INSERT that replaces `update` columns with the new row's values on a key clash."""
    name = engine.dialect.name
    if name == "mysql":
        my = mysql.insert(table)
        return my.on_duplicate_key_update({c: my.inserted[c] for c in update})
    ins = (postgresql.insert if name == "postgresql" else sqlite.insert)(table)
    return ins.on_conflict_do_update(index_elements=keys, set_={c: ins.excluded[c] for c in update})


def insert_ignore(engine: Engine, table: Table) -> Insert:
    """INSERT that silently skips rows whose unique key already exists."""
    name = engine.dialect.name
    if name == "mysql":
        return mysql.insert(table).prefix_with("IGNORE")
    if name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    return sqlite.insert(table).on_conflict_do_nothing()


ExecuteMany = Callable[[Connection, list[tuple[Any, ...]]], None]


def execute_many(
    engine: Engine, table: Table, columns: list[str], *, upsert_on: list[str] | None = None
) -> ExecuteMany:
    """A function inserting many rows (tuples of `columns`, in that order) into `table`,
    replacing the other columns of a row whose `upsert_on` key exists, if given; the
    fastest way each engine has.

    SQLite: the statement is compiled once, here, and rows go straight to the driver's
    executemany (building parameters row by row took ~20% of a 1,000-cell rollup write).
    PostgreSQL: one `INSERT ... SELECT unnest(array), ...` per call, every column sent
    as one array (SQLAlchemy's executemany was 58% of a worker's write). MySQL/MariaDB:
    SQLAlchemy's insertmanyvalues batching.
    """
    name = engine.dialect.name
    if name == "postgresql":
        return _pg_unnest(table, columns, upsert_on)
    stmt = (
        upsert(engine, table, upsert_on, [c for c in columns if c not in upsert_on])
        if upsert_on
        else table.insert()
    )
    if name == "mysql":
        return _mysql_rows(engine, stmt, columns)
    compiled = stmt.compile(dialect=engine.dialect, column_keys=columns)
    sql, order = compiled.string, list(compiled.positiontup or [])
    if order != columns:  # pragma: no cover - SQLite binds in column order today
        raise ValueError(f"{sql!r} binds {order}, not {columns}")

    def run(conn: Connection, rows: list[tuple[Any, ...]]) -> None:
        if rows:
            conn.exec_driver_sql(sql, rows)

    return run


_PYFORMAT = re.compile(r"%\((\w+)\)s")


def _mysql_rows(engine: Engine, stmt: Insert, columns: list[str]) -> ExecuteMany:
    # PyMySQL's own executemany turns INSERT ... VALUES (%s, ...) [ON DUPLICATE KEY
    # UPDATE ...] into multi-row statements; SQLAlchemy's parameter building on top of
    # it was a fifth of a worker's write.
    compiled = stmt.compile(dialect=engine.dialect, column_keys=columns)
    if _PYFORMAT.findall(compiled.string) != columns:  # pragma: no cover - a schema change
        raise ValueError(f"{compiled.string!r} does not bind exactly {columns}")
    sql = _PYFORMAT.sub("%s", compiled.string)

    def run(conn: Connection, rows: list[tuple[Any, ...]]) -> None:
        if rows:
            dbapi = conn.connection.dbapi_connection
            assert dbapi is not None  # noqa: S101 - a checked-out connection has one
            cursor = dbapi.cursor()
            try:
                cursor.executemany(sql, rows)
            finally:
                cursor.close()

    return run


def _pg_unnest(table: Table, columns: list[str], upsert_on: list[str] | None) -> ExecuteMany:
    # Each column travels as one array literal built with str.join: psycopg's own list
    # adaptation runs per element in Python and took half of the write.
    arrays = select(
        *(
            func.unnest(cast(bindparam(c, type_=Text), postgresql.ARRAY(table.c[c].type))).label(c)
            for c in columns
        )
    )
    ins = postgresql.insert(table).from_select(columns, arrays)
    stmt = (
        ins.on_conflict_do_update(
            index_elements=upsert_on,
            set_={c: ins.excluded[c] for c in columns if c not in upsert_on},
        )
        if upsert_on
        else ins
    )
    literals = [_pg_array_literal(table.c[c].type.python_type) for c in columns]

    def run(conn: Connection, rows: list[tuple[Any, ...]]) -> None:
        if rows:
            values = zip(*rows, strict=True)
            conn.execute(
                stmt,
                {c: literal(v) for c, literal, v in zip(columns, literals, values, strict=True)},
            )

    return run


def _pg_array_literal(kind: type) -> Callable[[Sequence[Any]], str]:
    """PostgreSQL's text form of an array of ints, floats (repr round-trips them) or bytes."""
    if kind is bytes:
        return lambda values: '{"\\\\x' + '","\\\\x'.join(v.hex() for v in values) + '"}'
    if kind in (int, float):
        return lambda values: "{" + ",".join(map(repr, values)) + "}"
    raise TypeError(f"no array literal for {kind}")  # pragma: no cover - our schema only


RaiseMany = Callable[[Connection, dict[int, float]], None]


def raise_many(engine: Engine, table: Table, key: str, column: str) -> RaiseMany:
    """A function setting `column` to the given value in each row (by `key`) where it is
    NULL or lower. MySQL/MariaDB: one UPDATE with a CASE (PyMySQL sends an executemany
    of UPDATEs as one round trip each: 100 metrics were a fifth of a worker's write);
    elsewhere an executemany of one prepared UPDATE (pipelined by psycopg, in-process on
    SQLite)."""
    col, ident = table.c[column], table.c[key]
    if engine.dialect.name == "mysql":

        def one_statement(conn: Connection, values: dict[int, float]) -> None:
            if values:
                newer = case(values, value=ident)
                conn.execute(
                    update(table)
                    .where(ident.in_(sorted(values)))
                    .values({column: func.greatest(func.coalesce(col, newer), newer)})
                )

        return one_statement
    stmt = (
        update(table)
        .where(ident == bindparam("k"))
        .where(col.is_(None) | (col < bindparam("v")))
        .values({column: bindparam("v")})
    )

    def each(conn: Connection, values: dict[int, float]) -> None:
        if values:
            conn.execute(stmt, [{"k": k, "v": v} for k, v in values.items()])

    return each


FetchAll = Callable[[Connection, dict[str, Any]], list[Any]]


def fetch_all(engine: Engine, stmt: Select[Any]) -> FetchAll:
    """A function running a SELECT with bound parameters and returning its rows as
    tuples, on a hot path. SQLite: compiled once, executed by the driver (a day of minute
    cells, 1,440 rows, measured 0.9 ms through SQLAlchemy's result layer and 0.6 ms
    without; a writer's four cell reads, 0.4 ms of a 2.2 ms commit of a few points).
    Expanding parameters (`bindparam(..., expanding=True)`) take a list."""
    if engine.dialect.name != "sqlite":
        return lambda conn, params: [tuple(row) for row in conn.execute(stmt, params).all()]
    compiled = stmt.compile(dialect=engine.dialect)
    sql, order = compiled.string, list(compiled.positiontup or [])
    expanding = {k for k in order if f"__[POSTCOMPILE_{k}]" in sql}

    def run(conn: Connection, params: dict[str, Any]) -> list[Any]:
        cursor = conn.connection.dbapi_connection
        assert cursor is not None  # noqa: S101 - a checked-out connection has one
        text, args = sql, []
        for key in order:
            if key in expanding:
                values = list(params[key])
                text = text.replace(f"__[POSTCOMPILE_{key}]", ", ".join("?" * len(values)))
                args.extend(values)
            else:
                args.append(params[key])
        return list(cursor.execute(text, args).fetchall())

    return run
