"""The embedded layout's journal: acknowledged writes whose blocks and cells are not
written yet, in a SQLite file of their own beside the database (`<database>-pending`).

Why a file of its own: SQLite has one write lock per file. With these rows in the
database itself, each rollup's transaction (~31 ms of cell upserts, commit and WAL
restart) held every write behind it, 21% of the bench's ingest with nothing moving.
Here a write commits while the rollup process writes cells into the database.

What is rolled up is told by a mark in the database (`journal_marks`): the last journal
id whose blocks and cells were written, committed in the same transaction as those
cells. Rows up to the mark are deleted afterwards, at leisure; a crash in between
leaves rows the mark already covers, which every reader skips. Ids are never reused
(AUTOINCREMENT) and are taken under the journal's write lock (by `serve`, or each of
`serve --workers N`), so ids commit in increasing order and "everything up to the
mark" is exact.
The mark is kept per journal identity (a random id made with the file): a journal
made anew, whose ids start again from 1, is not mistaken for one already rolled up.

Plain `sqlite3`: the file is SQLite whatever the database is, and its three statements
are on the path of every acknowledged write.
"""

from __future__ import annotations

import contextlib
import secrets
import sqlite3
import time
from collections.abc import Iterator

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS pending ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT, n INTEGER NOT NULL,"
    " at REAL NOT NULL, data BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    # Points no rollup could write (see `set_aside`): one row per journal write and
    # metric (-1: the write's data itself unreadable), kept whole with the reason.
    "CREATE TABLE IF NOT EXISTS set_aside ("
    " write_id INTEGER NOT NULL, metric_id INTEGER NOT NULL, n INTEGER NOT NULL,"
    " at REAL NOT NULL, data BLOB NOT NULL, error TEXT NOT NULL,"
    " PRIMARY KEY (write_id, metric_id))",
)
_BUSY_TIMEOUT_S = 30.0
_OPEN_RETRY_S = 0.005
_LAST_ID = 2**63 - 1
# The WAL is checkpointed by SQLite's default auto-checkpoint (every ~1,000 pages, in the
# commit that crosses it: ~1 ms here, every ~150 bench writes); once started over it is
# cut back to this size.
_WAL_LIMIT_BYTES = 4 * 1024 * 1024


class Journal:
    """One connection to the journal file; not for concurrent use by threads."""

    def __init__(self, path: str, *, synchronous: str = "NORMAL") -> None:
        self.path = path
        self._conn = sqlite3.connect(
            path, timeout=_BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
        self._to_wal()
        self._conn.execute(f"PRAGMA synchronous={synchronous}")
        self._conn.execute(f"PRAGMA journal_size_limit={_WAL_LIMIT_BYTES}")
        self._depth = 0
        with self.locked():
            for statement in _SCHEMA:
                self._conn.execute(statement)
            self._conn.execute(
                "INSERT OR IGNORE INTO meta VALUES ('identity', ?)", (secrets.token_hex(16),)
            )
            self.identity: str = self._conn.execute(
                "SELECT value FROM meta WHERE key = 'identity'"
            ).fetchone()[0]

    def _to_wal(self) -> None:
        """WAL mode, waiting as a transaction would: `serve` and its rollup process
        (and `serve --workers N`) may open a new file at once, and SQLite answers
        "database is locked" to the switch at once, without its busy timeout."""
        deadline = time.monotonic() + _BUSY_TIMEOUT_S
        while True:
            try:
                # Takes effect on a new file only (before its first table, outside a
                # transaction): pages freed by deletions are reused by the next writes,
                # and `shrink` gives the rest back. FULL would move pages at every
                # deletion's commit, which the writer makes while every write waits.
                self._conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
                mode = self._conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
            else:
                if mode == "wal":
                    return
                if time.monotonic() > deadline:
                    raise sqlite3.OperationalError(f"the journal stays in {mode} mode")
            time.sleep(_OPEN_RETRY_S)

    @contextlib.contextmanager
    def locked(self, *, wait_ms: int | None = None) -> Iterator[None]:
        """The journal's write lock for the block: no write is appended meanwhile.

        Re-entrant on this connection; the outermost block commits (or rolls back).
        `wait_ms`: how long to wait for the lock, if not the usual busy timeout; past
        it, `sqlite3.OperationalError` ("database is locked") and nothing done.
        """
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        if wait_ms is not None:
            self._conn.execute(f"PRAGMA busy_timeout = {int(wait_ms)}")
        try:
            self._conn.execute("BEGIN IMMEDIATE")
        finally:
            if wait_ms is not None:
                self._conn.execute(f"PRAGMA busy_timeout = {int(_BUSY_TIMEOUT_S * 1000)}")
        self._depth = 1
        try:
            yield
        except BaseException:
            self._depth = 0
            if self._conn.in_transaction:  # SQLite may have rolled back already (disk full)
                self._conn.execute("ROLLBACK")
            raise
        self._depth = 0
        self._conn.execute("COMMIT")

    def append(self, n: int, data: bytes) -> int:
        """Store one write's points (`blocks.encode_pending`); its id once committed
        (at the end of the outermost `locked` block, if in one)."""
        with self.locked():
            cur = self._conn.execute(
                "INSERT INTO pending (n, at, data) VALUES (?, ?, ?)", (n, time.time(), data)
            )
        assert cur.lastrowid is not None  # noqa: S101 - an INSERT always has one
        return cur.lastrowid

    def waiting(self, mark: int) -> tuple[int, float]:
        """Points after `mark` and when the oldest of them was written (`time.time()`,
        0 when none)."""
        n, at = self._conn.execute(
            "SELECT coalesce(sum(n), 0), coalesce(min(at), 0) FROM pending WHERE id > ?",
            (mark,),
        ).fetchone()
        return int(n), float(at)

    def after(
        self, mark: int, limit: int | None = None, through: int | None = None
    ) -> list[tuple[int, bytes]]:
        """The writes after `mark` (and up to id `through`) in id order, as (id, data):
        whole writes, until their points reach `limit` (at least one, if any)."""
        out: list[tuple[int, bytes]] = []
        total = 0
        # Closed explicitly: a statement left unfinished keeps its read snapshot, and the
        # WAL cannot start over behind it.
        with contextlib.closing(
            self._conn.execute(
                "SELECT id, n, data FROM pending WHERE id > ? AND id <= ? ORDER BY id",
                (mark, _LAST_ID if through is None else through),
            )
        ) as rows:
            for wid, n, data in rows:
                if limit is not None and out and total + n > limit:
                    break
                out.append((wid, data))
                total += n
        return out

    def set_aside(self, rows: list[tuple[int, int, int, bytes, str]]) -> None:
        """Keep (write id, metric id, points, data, error) rows whose points no rollup
        can write, before the rollup that leaves them out moves the mark past their
        writes. Keyed by write and metric, so a rollup tried again after a crash sets
        nothing aside twice. Never read by the service: an operator puts them back
        with `INSERT INTO pending (n, at, data) SELECT n, at, data FROM set_aside`
        once the cause is mended (docs/operations.md)."""
        now = time.time()
        with self.locked():
            self._conn.executemany(
                "INSERT OR IGNORE INTO set_aside VALUES (?, ?, ?, ?, ?, ?)",
                [(wid, mid, n, now, data, error) for wid, mid, n, data, error in rows],
            )

    def last_id(self) -> int:
        """The id of the last write appended (0 for none yet)."""
        row = self._conn.execute(
            "SELECT seq FROM sqlite_sequence WHERE name = 'pending'"
        ).fetchone()
        return int(row[0]) if row else 0

    def number_after(self, mark: int) -> None:
        """Have the next write's id come after `mark` (and after every id used)."""
        with self.locked():
            if (
                self._conn.execute(
                    "UPDATE sqlite_sequence SET seq = max(seq, ?) WHERE name = 'pending'", (mark,)
                ).rowcount
                == 0
            ):
                self._conn.execute(
                    "INSERT INTO sqlite_sequence (name, seq) VALUES ('pending', ?)", (mark,)
                )

    def forget_through(self, mark: int) -> None:
        """Delete the writes up to `mark` (their cells are written)."""
        with self.locked():
            self._conn.execute("DELETE FROM pending WHERE id <= ?", (mark,))

    def shrink(self) -> None:
        """Give the file's free pages back to the file system, and empty its WAL."""
        # One step of this pragma frees one page: `executescript` runs it to the end.
        self._conn.executescript("PRAGMA incremental_vacuum")
        self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()

    def close(self) -> None:
        self._conn.close()
