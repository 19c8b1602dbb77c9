"""The storage interface on SQLAlchemy Core, for every SQL engine we support.

Writes run on one dedicated thread with one connection (a single writer per process,
as SQLite needs and as group commit wants anyway); reads run on the default thread
pool with pooled connections. Dialect differences are delegated to `dialects`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import secrets
import sqlite3
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import numpy as np
import structlog
from sqlalchemy import (
    Connection,
    bindparam,
    create_engine,
    delete,
    func,
    null,
    select,
    tuple_,
    update,
)
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from glowing_fiesta import rollup
from glowing_fiesta.errors import Detail, TypeConflict, Unavailable, ValidationError
from glowing_fiesta.model import ApiKey, Metric, MetricType, Resolution, Scope
from glowing_fiesta.storage import blocks, cellpacks, dialects
from glowing_fiesta.storage.base import CellRow, Read, StorageStats, WriteItem
from glowing_fiesta.storage.columns import Columns, stacked
from glowing_fiesta.storage.journal import Journal
from glowing_fiesta.storage.journaling import JournalWriter
from glowing_fiesta.storage.roller import Config
from glowing_fiesta.storage.schema import (
    api_keys,
    journal_marks,
    metric_points,
    metrics,
    pending_points,
    processed_batches,
    rollup_backlog,
    rollups,
)

log = structlog.get_logger(__name__)

T = TypeVar("T")

# The write path's statements, built once: building them per write (operators, cache
# keys) measured ~1 ms of a 3.4 ms commit of a few points.
_METRICS_NAMED = select(metrics).where(metrics.c.name.in_(bindparam("names", expanding=True)))
_LOCK_METRICS = (
    select(metrics.c.id)
    .where(metrics.c.id.in_(bindparam("ids", expanding=True)))
    .order_by(metrics.c.id)
    .with_for_update()
)
_CELLS_IN_RANGE = select(rollups).where(
    rollups.c.metric_id.in_(bindparam("ids", expanding=True)),
    rollups.c.res == bindparam("res"),
    rollups.c.bucket.between(bindparam("lo"), bindparam("hi")),
)
_FORGET_PENDING = delete(pending_points).where(
    pending_points.c.id.in_(bindparam("ids", expanding=True))
)
_FORGET_LEGACY = delete(rollup_backlog).where(
    rollup_backlog.c.first_block.in_(bindparam("firsts", expanding=True))
)
_READ_MARK = select(journal_marks.c.rolled_up_to).where(
    journal_marks.c.journal == bindparam("journal")
)
_FORGET_EVERY = 256  # journal rows; see `forget_due`
# How long a journal commit on `serve`'s event loop waits for the journal's lock (held
# briefly by the rollup process deleting rolled-up rows, or by another `serve --workers`
# process) before the commit goes to the writer thread, which waits as long as it takes.
_LOOP_LOCK_WAIT_MS = 5
_CHUNK = 500  # keeps IN lists under every engine's parameter limit
_RETRIES = 5
_DAY = 86400


def _chunks(seq: Sequence[T], size: int = _CHUNK) -> Iterable[Sequence[T]]:
    for i in range(0, len(seq), size):
        yield seq[i : i + size]


def _metric(row: Any) -> Metric:
    """A `metrics` row, selected whole (a SQLAlchemy row or a plain tuple), by position."""
    mid, name, mtype, stat_key, created_at, last_point_at = row
    return Metric(mid, name, MetricType(mtype), stat_key, created_at, last_point_at)


def _key(row: Any) -> ApiKey:
    return ApiKey(
        id=row.id,
        name=row.name,
        prefix=row.prefix,
        secret_hash=row.secret_hash,
        scopes=frozenset(Scope(s) for s in row.scopes.split(",") if s),
        rate_limit=row.rate_limit,
        created_at=row.created_at,
        last_used_at=row.last_used_at,
        revoked_at=row.revoked_at,
    )


class SqlStorage:
    """`Storage` on a SQL engine chosen by a plain database URL."""

    def __init__(self, url: str, *, sqlite_synchronous: str = "NORMAL") -> None:
        self.url = dialects.driver_url(url)
        self._synchronous = sqlite_synchronous
        # When set (`start_rollups`), `apply` commits to the journal and the rollup
        # process writes the cells (storage/journaling.py).
        self._journaling: JournalWriter | None = None
        self._write_engine = create_engine(
            self.url,
            **dialects.engine_options(self.url, writer=True),
        )
        self._read_engine = create_engine(
            self.url,
            **dialects.engine_options(self.url, writer=False),
        )
        dialects.configure(self._write_engine, writer=True, sqlite_synchronous=sqlite_synchronous)
        dialects.configure(self._read_engine, writer=False, sqlite_synchronous=sqlite_synchronous)
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gf-writer")
        self._insert_blocks = dialects.execute_many(
            self._write_engine, metric_points, ["metric_id", "t_min", "t_max", "n", "data"]
        )
        self._metric_named = dialects.fetch_all(
            self._read_engine, select(metrics).where(metrics.c.name == bindparam("name"))
        )
        self._read_cells = {
            sketches: dialects.fetch_all(
                self._read_engine,
                select(
                    rollups.c.bucket,
                    rollups.c.count,
                    rollups.c.sum,
                    rollups.c.min,
                    rollups.c.max,
                    rollups.c.sketch if sketches else null(),
                )
                .where(
                    rollups.c.metric_id == bindparam("mid"),
                    rollups.c.res == bindparam("res"),
                    rollups.c.bucket >= bindparam("lo"),
                    rollups.c.bucket < bindparam("hi"),
                )
                .order_by(rollups.c.bucket),
            )
            for sketches in (False, True)
        }
        cell_key, cell_data = (
            ["metric_id", "res", "bucket"],
            ["count", "sum", "min", "max", "sketch"],
        )
        self._upsert_cells = dialects.execute_many(
            self._write_engine, rollups, cell_key + cell_data, upsert_on=cell_key
        )
        self._cells_in_range = dialects.fetch_all(self._write_engine, _CELLS_IN_RANGE)
        self._touch_metrics = dialects.raise_many(
            self._write_engine, metrics, "id", "last_point_at"
        )
        self._raw_reads = 0
        self._cell_reads = 0
        # The journal (embedded SQLite only), opened on first use; the writes this storage
        # appended to it, as (id, points), until it sees them rolled up; and the journal's
        # mark (see journal.py) as it last saw it.
        self._journal_path = dialects.journal_path(self.url)
        # The journal commit's read of the write's metrics has a connection of its own:
        # on `serve`'s event loop it must not wait for the writing connection, which the
        # writer thread may hold while a rollup holds the database's write lock
        # (retention's chunks, the keys' last-used times).
        self._append_engine = self._write_engine
        if self._journal_path is not None:
            self._append_engine = create_engine(
                self.url, **dialects.engine_options(self.url, writer=True)
            )
            dialects.configure(
                self._append_engine, writer=True, sqlite_synchronous=sqlite_synchronous
            )
        self._journal: Journal | None = None
        self._appended: collections.deque[tuple[int, int]] = collections.deque()
        self._appended_points = 0
        self._mark = 0
        self._forgotten = 0  # the mark up to which this storage deleted journal rows
        self._shrunk_at = 0  # the mark when it last shrank the journal (`tidy_journal`)
        self._set_mark = dialects.upsert(
            self._write_engine, journal_marks, ["journal"], ["rolled_up_to"]
        )
        # Metrics by name, as the writer last read or created them, while no other
        # connection has committed (see `_metrics_for_write`).
        self._data_version = dialects.data_version_sql(self._write_engine)
        self._metric_cache: dict[str, Metric] = {}
        self._metric_cache_version: object = None

    # -- plumbing -------------------------------------------------------------------

    def _write_now(self, fn: Callable[[Connection], T], *, journal_locked: bool = False) -> T:
        """Run `fn` in one transaction on the calling thread. `journal_locked`: holding
        the journal's write lock meanwhile (see `delete_metric`).

        A transaction chosen as a deadlock victim (two workers writing overlapping
        metrics on a server engine) is rolled back whole, so running it again is safe.
        """
        journal = self._open_journal() if journal_locked else None
        with journal.locked() if journal is not None else contextlib.nullcontext():
            for attempt in range(_RETRIES):
                try:
                    with self._write_engine.begin() as conn:
                        result = _discarding_on_error(conn, fn)
                except DBAPIError as exc:
                    if attempt == _RETRIES - 1 or not dialects.is_retryable(exc):
                        raise
                    time.sleep(0.01 * (attempt + 1))
                    continue
                except _MetricGone:
                    if attempt == _RETRIES - 1:
                        raise
                    continue  # read again: the next attempt creates the metric anew
                # Committed: what follows is housekeeping, and must not report the
                # write as failed (its caller would write it again, or answer a 503
                # for points that are stored).
                try:
                    dialects.bound_wal(self._write_engine)
                except Exception:
                    log.warning("wal_restart_failed", exc_info=True)
                return result
        raise AssertionError("unreachable")  # pragma: no cover

    def _open_journal(self) -> Journal | None:
        """The journal, opened on first use; never inside a transaction of the database
        (opening takes the journal's lock, always taken before the database's)."""
        if self._journal is None and self._journal_path is not None:
            journal = Journal(self._journal_path, synchronous=self._synchronous)
            # A journal behind its mark would number new writes at or below it, and they
            # would be skipped as rolled up: one restored from a backup older than the
            # database's, or one whose last commits a power loss took (under NORMAL its
            # WAL reaches the disk only at its checkpoints, the database's mark at its
            # own). Its ids go on from the mark.
            with self._read_engine.connect() as conn:
                mark = self._read_mark(conn, journal)
            journal.number_after(mark)
            self._journal = journal
        return self._journal

    async def _write(self, fn: Callable[[Connection], T], *, journal_locked: bool = False) -> T:
        """`_write_now` on the writer thread."""
        try:
            return await self.on_writer_thread(
                functools.partial(self._write_now, fn, journal_locked=journal_locked)
            )
        except OperationalError as exc:
            raise Unavailable("the database is not accepting writes", 2) from exc

    async def _read(self, fn: Callable[[Connection], T]) -> T:
        def run() -> T:
            with self._read_engine.connect() as conn:
                return _discarding_on_error(conn, fn)

        try:
            return await asyncio.to_thread(run)
        except OperationalError as exc:
            raise Unavailable("the database does not answer", 2) from exc

    async def open(self) -> None:
        await self.ping()
        if self.can_defer_rollups:
            # Opened before the transaction: opening takes the journal's lock, which is
            # always taken before the database's (see `_append`).
            await asyncio.to_thread(self._open_journal)
            await self._write(self._recover)

    async def start_rollups(self, *, log_level: str, log_format: str) -> None:
        """From now on `apply` commits each write to the journal, and a rollup process
        writes their blocks and cells (storage/journaling.py). SQLite files only; on
        other databases `apply` goes on writing the cells with the points."""
        if not self.can_defer_rollups or self._journaling is not None:
            return
        config = Config(
            self.url.render_as_string(hide_password=False),
            self._synchronous,
            log_level,
            log_format,
        )
        assert self._journal_path is not None  # noqa: S101 - can_defer_rollups
        self._journaling = JournalWriter(
            self, msgspec.msgpack.encode(config), Path(f"{self._journal_path}-rollup.lock")
        )
        self._journaling.start()

    @property
    def rollup_pid(self) -> int | None:
        """The rollup process's pid, when there is one."""
        return self._journaling.rollup_pid if self._journaling is not None else None

    async def on_writer_thread(self, fn: Callable[[], T]) -> T:
        """`fn()` on the writer thread (with the journal's connection, under
        `JournalWriter.exclusive()`). Cancelled, this still returns only once `fn` is
        done: the thread cannot be stopped, and the caller must keep what it holds
        (that lock) until then, or the loop would use the journal's connection in the
        middle of the thread's transaction."""
        done = asyncio.get_running_loop().run_in_executor(self._writer, fn)
        try:
            return await asyncio.shield(done)
        except asyncio.CancelledError:
            while not done.done():
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait({done})
            if not done.cancelled():
                done.exception()  # retrieved: the caller was cancelled and goes
            raise

    def dispose(self) -> None:
        """Close every connection (synchronously, for the rollup process)."""
        self._writer.shutdown(wait=True)
        if self._journal is not None:
            self._journal.close()
            self._journal = None
        self._write_engine.dispose()
        self._append_engine.dispose()
        self._read_engine.dispose()

    async def close(self) -> None:
        if self._journaling is not None:
            await self._journaling.stop()
        self.dispose()

    async def _settle(self) -> None:
        """Before reading points or cells: have the blocks and cells of the journal's
        writes written, so that a read sees every write acknowledged before it."""
        if self._journaling is not None:
            await self._journaling.settle()

    async def ping(self) -> None:
        await self._read(lambda c: c.execute(select(1)).scalar())

    async def maintain(self) -> None:
        sql = dialects.checkpoint_sql(self._read_engine)
        if sql is not None:
            await self._read(lambda c: c.exec_driver_sql(sql).all())

    def stats(self) -> StorageStats:
        return StorageStats(raw_reads=self._raw_reads, cell_reads=self._cell_reads)

    # -- writes ---------------------------------------------------------------------

    async def apply(self, items: Sequence[WriteItem]) -> list[TypeConflict | None]:
        batches = [Columns.of(item) for item in items]
        if self._journaling is not None:
            return await self._journaling.apply(batches)
        results, metrics = await self._write(lambda conn: self._apply(conn, batches))
        self._remember(metrics)
        return results

    def apply_now(
        self, items: Sequence[WriteItem | Columns], *, defer_rollups: bool = False
    ) -> list[TypeConflict | None]:
        """`apply` on the calling thread.

        With `defer_rollups` (where `can_defer_rollups`), the write's points are
        committed as one row of the journal (storage/journal.py) and their blocks and
        cells are written later, many writes together, by `roll_up_now` (in the rollup
        process, see storage/roller.py). Measured on the bench's data (storage alone): a
        2,000-point write costs 4 ms without its cells and 16 ms with them, and the cells
        of 20,000 points written together cost 61 ms, because most of a write's cells
        (its quarter-hour, hour and day cells) are the same cells as the next write's.
        Blocks likewise: 50,000 points written together make as many blocks as one write
        of 2,000 (~100, one per metric and day), of 25 times the points. Until then,
        `backlog_points` says how many points wait; reads of the database see them once
        they are written.
        """
        batches = [i if isinstance(i, Columns) else Columns.of(i) for i in items]
        # Redelivered batches' claims must commit with their points, in one file.
        if defer_rollups and self.can_defer_rollups and not any(b.dedupe for b in batches):
            results = self._append(batches, create_metrics=True)
            assert results is not None  # noqa: S101 - create_metrics=True always appends
            if self.forget_due():
                self.forget_rolled_up()
            return results
        results, metrics = self._write_now(lambda conn: self._apply(conn, batches))
        self._remember(metrics)
        return results

    def journal_now(
        self, items: Sequence[Columns], *, create_metrics: bool
    ) -> list[TypeConflict | None] | None:
        """Commit the accepted points of `items` to the journal, on the calling thread
        (the journal must be there: `can_defer_rollups`; no redelivered batch: its
        claim would commit in the database, its points here). Without
        `create_metrics` (on an event loop): None, and nothing done, where that would
        wait, for the database's write lock (new metrics) or for more than
        _LOOP_LOCK_WAIT_MS for the journal's."""
        assert not any(item.dedupe for item in items)  # noqa: S101 - see above
        return self._append(list(items), create_metrics=create_metrics)

    def _append(
        self, batches: list[Columns], *, create_metrics: bool
    ) -> list[TypeConflict | None] | None:
        """Commit the accepted points of `batches` to the journal (see `journal_now`).

        The journal's write lock is held from reading the metrics' ids to the commit:
        `delete_metric` takes it too, so a metric is never deleted (and its id given to a
        new metric) between the two. The database's write lock is taken only when a
        batch needs it (new metrics, dedupe claims): a rollup holds it for tens of ms.
        """
        journal = self._open_journal()
        assert journal is not None  # noqa: S101 - can_defer_rollups
        with contextlib.ExitStack() as stack:
            try:
                stack.enter_context(
                    journal.locked(wait_ms=None if create_metrics else _LOOP_LOCK_WAIT_MS)
                )
            except sqlite3.OperationalError as exc:
                if create_metrics or "locked" not in str(exc):
                    raise
                return None
            with self._append_engine.connect() as conn, dialects.read_only(conn).begin():
                accepted = _discarding_on_error(
                    conn, lambda c: self._accept(c, batches, write=False)
                )
            if accepted is None:
                if not create_metrics:
                    return None
                accepted = self._write_now(lambda conn: self._accept(conn, batches, write=True))
            assert accepted is not None  # noqa: S101 - write=True always accepts
            results, points, metrics = accepted
            self._remember(metrics)  # committed (or only read)
            if points is not None:
                data = blocks.encode_pending(points.metric, points.time, points.value)
                wid = journal.append(len(points), data)
        if points is not None:
            self._appended.append((wid, len(points)))
            self._appended_points += len(points)
        return results

    @property
    def can_defer_rollups(self) -> bool:
        return self._journal_path is not None

    @property
    def backlog_points(self) -> int:
        """Points this storage appended to the journal that it has not seen rolled up
        (see `observe_rollups`)."""
        return self._appended_points

    def observe_rollups(self) -> None:
        """Read how far the journal is rolled up (by any process), for `backlog_points`
        (on the journal commit's connection: never behind the writer thread's)."""
        journal = self._open_journal()
        if journal is None:
            return
        with self._append_engine.connect() as conn, dialects.read_only(conn).begin():
            self._saw_mark(self._read_mark(conn, journal))

    def forget_due(self) -> bool:
        """Whether _FORGET_EVERY rolled-up writes wait to be deleted from the journal
        (`forget_rolled_up`; the writer deletes them: the rollup process would wait for
        the journal's lock, which the writer holds most of the time under ingest: 11%
        of its time when it deleted after each rollup)."""
        return self._mark - self._forgotten >= _FORGET_EVERY

    def rollup_due(self, points: int, seconds: float) -> bool:
        """Whether the journal holds `points` not rolled up, or some that waited
        `seconds` (as far as this storage knows the mark)."""
        journal = self._open_journal()
        if journal is None:
            return False
        waiting, since = journal.waiting(self._mark)
        # Write times are wall-clock times, shared with other processes. One from the
        # future means the clock was set back: due now, not once the clock is back.
        age = time.time() - since
        return waiting >= points or (waiting > 0 and not 0 <= age < seconds)

    def roll_up_now(self, limit: int | None = None, *, through: int | None = None) -> int:
        """Write the blocks and cells of the journal's writes not rolled up yet (the
        oldest, up to about `limit` points, none after id `through`), in one
        transaction; the points written."""
        if self._open_journal() is None:
            return 0
        # The rows rolled up leave the journal later: see `_append` and `tidy_journal`.
        try:
            written, mark = self._write_now(
                lambda conn: self._roll_up_journal(conn, limit, through)
            )
        except (DBAPIError, sqlite3.Error):
            raise  # the database's or the journal's: tried again as it is
        except Exception as exc:
            written, mark = self._roll_up_apart(limit, through, exc)
        self._saw_mark(mark)  # committed
        return written

    def _roll_up_apart(
        self, limit: int | None, through: int | None, cause: Exception
    ) -> tuple[int, int]:
        """After a rollup failed for a reason other than the database: the data. One
        stored cell the merge refuses (a corrupt one, say) would otherwise fail every
        rollup its metric is in, for ever, and the journal would grow until writes are
        refused. So each metric's points are tried alone, in a transaction rolled back
        (`_probe_apart`); those that fail while others are written are set aside in the
        journal (`Journal.set_aside`: kept, never lost), and the rest rolled up without
        them. If none is written the cause may not be the data: `cause` is raised, and
        the rollup tried again later, as before."""
        journal = self._journal
        assert journal is not None  # noqa: S101 - opened by roll_up_now
        with self._write_engine.connect() as conn, conn.begin() as tx:
            mark = self._read_mark(conn, journal)
            writes = journal.after(mark, limit, through)
            aside, written = self._probe_apart(conn, writes)
            tx.rollback()
        if not aside or (not written and any(mid >= 0 for _, mid, *_ in aside)):
            raise cause
        journal.set_aside(aside)
        by_metric: dict[int, list[tuple[int, int, str]]] = {}
        for wid, mid, n, _, error in aside:
            by_metric.setdefault(mid, []).append((wid, n, error))
        for mid, rows in by_metric.items():
            log.error(
                "rollup_points_set_aside",
                metric_id=mid,  # -1: journal writes whose data is unreadable
                writes=len(rows),
                points=sum(n for _, n, _ in rows),
                error=rows[0][2],
            )
        skip: dict[int, set[int]] = {}
        for wid, mid, *_ in aside:
            skip.setdefault(wid, set()).add(mid)
        last = writes[-1][0]
        return self._write_now(lambda conn: self._roll_up_journal(conn, limit, last, skip))

    def _probe_apart(
        self, conn: Connection, writes: list[tuple[int, bytes]]
    ) -> tuple[list[tuple[int, int, int, bytes, str]], int]:
        """Each metric's points of `writes` written alone, each in a savepoint, in the
        caller's transaction (which the caller rolls back): the parts no transaction can
        write, as `Journal.set_aside` rows, and the points written beside them."""
        aside: list[tuple[int, int, int, bytes, str]] = []
        parts: list[tuple[int, rollup.Pending]] = []
        for wid, data in writes:
            try:
                parts.append((wid, rollup.Pending(*blocks.decode_pending(data))))
            except ValueError as exc:
                aside.append((wid, -1, 0, data, f"{exc.__class__.__name__}: {exc}"))
        if not parts:
            return aside, 0
        points = rollup.Points.concat([part for _, part in parts])
        starts, ends = points.runs(np.zeros(len(points), dtype=np.int64))
        failed: dict[int, str] = {}
        written = 0
        for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
            one = rollup.Points(points.metric[a:b], points.time[a:b], points.value[a:b])
            try:
                with conn.begin_nested():
                    self._write_points(conn, one)
            except (DBAPIError, sqlite3.Error):
                raise
            except Exception as exc:
                failed[int(points.metric[a])] = f"{exc.__class__.__name__}: {exc}"
            else:
                written += b - a
        for wid, part in parts:
            for mid in sorted(set(part.metric.tolist()) & failed.keys()):
                keep = part.metric == mid
                data = blocks.encode_pending(part.metric[keep], part.time[keep], part.value[keep])
                aside.append((wid, mid, int(keep.sum()), data, failed[mid]))
        return aside, written

    def roll_up_through(self, through: int, limit: int) -> int:
        """`roll_up_now`, `limit` points a transaction, until every write up to id
        `through` is rolled up (writes appended meanwhile, by other writers too, wait
        for the next rollup, so this ends however busy they are); the points written."""
        written = 0
        while self._mark < through:
            done = self.roll_up_now(limit, through=through)
            if not done and self._mark < through:
                break  # nothing left up to `through` (ids of failed appends are never used)
            written += done
        return written

    @property
    def rolled_up_to(self) -> int:
        """The journal's mark as this storage last saw it (see `observe_rollups`)."""
        return self._mark

    def journal_end(self) -> int:
        """The id of the last write appended to the journal by anyone (0: none)."""
        journal = self._open_journal()
        return journal.last_id() if journal is not None else 0

    def recover_now(self) -> int:
        """Write the blocks and cells of every write still waiting in the journal or in
        tables of earlier versions (a writer that died or stopped left them); the points
        written."""
        self._open_journal()
        written, mark = self._write_now(self._recover)
        self._saw_mark(mark)  # committed
        self.forget_rolled_up()
        return written

    def _read_mark(self, conn: Connection, journal: Journal) -> int:
        mark = conn.scalar(_READ_MARK, {"journal": journal.identity})
        return int(mark or 0)

    def _saw_mark(self, mark: int) -> None:
        self._mark = max(self._mark, mark)
        while self._appended and self._appended[0][0] <= self._mark:
            self._appended_points -= self._appended.popleft()[1]

    def tidy_journal(self) -> None:
        """Delete the journal's rolled-up writes now (the rollup process, when idle:
        writes have stopped, and with them the deletions in `_append`), and give the
        space back once the journal is empty (a burst is over)."""
        self.forget_rolled_up()
        journal = self._journal
        if journal is not None and self._shrunk_at != self._mark and not journal.waiting(0)[0]:
            self._shrunk_at = self._mark
            try:
                journal.shrink()
            except sqlite3.Error as exc:
                log.warning("journal_cleanup_failed", error=str(exc))

    def forget_rolled_up(self) -> None:
        """After a rollup committed: its writes leave the journal, once the rollups up
        to the mark are on the disk (an fsync first). Failing that, they stay behind the
        mark, which every reader skips, until the next time."""
        if self._journal is not None and self._mark > self._forgotten and self._sync_rolled_up():
            self._forget_through(self._journal, self._mark)

    def _sync_rolled_up(self) -> bool:
        """Have the rollups up to the mark reach the disk (see `dialects.sync_wal`)."""
        try:
            dialects.sync_wal(self._write_engine)
        except OSError as exc:
            log.warning("journal_cleanup_failed", error=str(exc))
            return False
        return True

    def _forget_through(self, journal: Journal, mark: int) -> None:
        try:
            journal.forget_through(mark)
        except sqlite3.Error as exc:
            log.warning("journal_cleanup_failed", error=str(exc))
            return
        self._forgotten = mark

    def _roll_up_journal(
        self,
        conn: Connection,
        limit: int | None,
        through: int | None = None,
        skip: dict[int, set[int]] | None = None,
    ) -> tuple[int, int]:
        """The journal's writes after the mark (about `limit` points of them, none after
        id `through`): their blocks, cells and the new mark, in the caller's
        transaction; the points written and the mark it leaves. Only the caller, once
        the transaction committed, may take that mark as this storage's (`_saw_mark`):
        taken before, a failed commit would leave it believing writes rolled up that
        are not, and deleting them from the journal. `skip`: by write id, the metric ids
        (-1: all) whose points are set aside (see `_roll_up_apart`)."""
        journal = self._journal
        if journal is None:  # opened by every caller, outside the transaction
            return 0, 0
        mark = self._read_mark(conn, journal)
        writes = journal.after(mark, limit, through)
        if not writes:
            return 0, mark
        skip = skip or {}
        parts = [
            _without(rollup.Pending(*blocks.decode_pending(data)), skip.get(wid))
            for wid, data in writes
            if -1 not in skip.get(wid, ())
        ]
        points = rollup.Points.concat(parts) if parts else None
        if points is not None and len(points):
            self._write_points(conn, points)
        last = writes[-1][0]
        conn.execute(self._set_mark, {"journal": journal.identity, "rolled_up_to": last})
        return len(points) if points is not None else 0, last

    def _recover(self, conn: Connection) -> tuple[int, int]:
        """Write the blocks and cells of every waiting write: the journal's, and those
        `pending_points` and `rollup_backlog` hold from earlier versions (see schema.py);
        the points written and the journal's mark it leaves (see `_roll_up_journal`).

        Runs when a writer starts, and first in the transaction that deletes a metric
        (so that no waiting point of it is rolled up into a new metric given its id).
        """
        if not self.can_defer_rollups:
            return 0, 0
        pending = conn.execute(select(pending_points.c.id, pending_points.c.data)).all()
        parts = [rollup.Pending(*blocks.decode_pending(data)) for _, data in pending]
        written = sum(len(p) for p in parts)
        if parts:
            self._write_points(conn, rollup.Points.concat(parts))
        for chunk in _chunks(sorted(pid for pid, _ in pending)):
            conn.execute(_FORGET_PENDING, {"ids": chunk})
        legacy = self._recover_legacy(conn)
        if pending or legacy:
            log.info("rollup_backlog_recovered", writes=len(pending), points=written + legacy)
        journaled, mark = self._roll_up_journal(conn, None)
        return written + legacy + journaled, mark

    def _recover_legacy(self, conn: Connection) -> int:
        """The cells of `rollup_backlog`'s block ranges (see schema.py): their blocks are
        stored, their cells are not."""
        ranges = conn.execute(
            select(rollup_backlog.c.first_block, rollup_backlog.c.last_block)
        ).all()
        if not ranges:
            return 0
        mids: list[int] = []
        times: list[float] = []
        values: list[float] = []
        for first, last in ranges:
            stmt = select(metric_points.c.metric_id, metric_points.c.data).where(
                metric_points.c.id.between(first, last)
            )
            for mid, data in conn.execute(stmt):
                for t, v in blocks.decode(data):
                    mids.append(mid)
                    times.append(t)
                    values.append(v)
        if mids:
            points = rollup.Points.of(mids, times, values)
            self._write_rollups(conn, points)
            self._touch_metrics(conn, points.last_times())
        for chunk in _chunks(sorted(first for first, _ in ranges)):
            conn.execute(_FORGET_LEGACY, {"firsts": chunk})
        return len(mids)

    def _apply(
        self, conn: Connection, items: Sequence[Columns]
    ) -> tuple[list[TypeConflict | None], dict[str, Metric]]:
        """A whole write in the caller's transaction: claims, metrics, points, blocks
        and cells."""
        accepted = self._accept(conn, items, write=True)
        assert accepted is not None  # noqa: S101 - write=True always accepts
        results, points, known = accepted
        if points is not None:
            # Row locks on the metrics, in id order, serialise writers of the same metric
            # for the read-merge-write of its cells.
            if dialects.has_row_locks(self._write_engine):
                ids = np.unique(points.metric).tolist()
                if len(conn.execute(_LOCK_METRICS, {"ids": ids}).all()) != len(ids):
                    # A DELETE committed since `_accept` read them (it locks the row
                    # first, so it cannot commit after this): these points would be
                    # stored under an id no metric has, never read, never deleted.
                    raise _MetricGone
            self._write_points(conn, rollup.Points.concat([points]))
        return results, known

    def _accept(
        self, conn: Connection, items: Sequence[Columns], *, write: bool
    ) -> tuple[list[TypeConflict | None], rollup.Pending | None, dict[str, Metric]] | None:
        """The points of `items` that are accepted (a first delivery, no type conflict),
        with their metrics' ids, creating new metrics; the metrics read or made are
        `_remember`ed by the caller once committed. Without `write`: None if that needs
        to write (new metrics, dedupe claims)."""
        if not write and any(item.dedupe for item in items):
            return None
        now = time.time()
        results: list[TypeConflict | None] = [None] * len(items)
        mine = self._claim_batches(conn, [i.batch_id for i in items if i.dedupe], now)
        todo = [k for k, item in enumerate(items) if not item.dedupe or item.batch_id in mine]

        known = self._metrics_for_write(conn, {name for k in todo for name in items[k].names})
        # Decide types in arrival order, so that the first accepted batch that mentions
        # a new metric fixes its type and later batches are checked against it.
        types = {name: m.type for name, m in known.items()}
        accepted: list[int] = []
        for k in todo:
            if any(types.get(name, kind) is not kind for name, kind in items[k].pairs()):
                results[k] = items[k].conflict(types)
                continue
            for name, kind in items[k].pairs():
                types.setdefault(name, kind)
            accepted.append(k)

        # Sorted, so that concurrent writers take unique-index locks in one order.
        new = sorted({name for k in accepted for name in items[k].names} - known.keys())
        if new and not write:
            return None
        if new:
            known.update(self._create_metrics(conn, {n: types[n] for n in new}, now))
            # Another process may have created one of them first with the other type.
            raced = {n: known[n].type for n in new if known[n].type is not types[n]}
            if raced:
                survivors = []
                for k in accepted:
                    bad = items[k].conflict(raced)
                    if bad is not None:
                        results[k] = bad
                    else:
                        survivors.append(k)
                accepted = survivors

        ids = {name: m.id for name, m in known.items()}
        batches = [items[k] for k in accepted if len(items[k])]
        if not batches:
            return results, None, known
        points = rollup.Pending.of(*stacked(batches, ids))
        return results, points, known

    def _metrics_for_write(self, conn: Connection, names: set[str]) -> dict[str, Metric]:
        """`_metrics_by_name`, from the cache for names this writer has seen.

        Reading a write's ~100 metrics was a fifth of a raw-points commit. Only a commit by
        another connection can delete a metric (and free its name) behind the writer's
        back, and SQLite's `data_version` changes exactly then; server engines, where
        other processes write all the time, read every time.
        """
        if self._data_version is None:
            return self._metrics_by_name(conn, names)
        version = self._version(conn)
        if version != self._metric_cache_version:
            self._metric_cache.clear()
            self._metric_cache_version = version
        cache = self._metric_cache
        known = {name: cache[name] for name in names if name in cache}
        if len(known) < len(names):
            known.update(self._metrics_by_name(conn, names - known.keys()))
        return known

    def _version(self, conn: Connection) -> tuple[object, object]:
        """The writer connection's `data_version`, with the connection it counts for (a
        new connection counts from scratch)."""
        assert self._data_version is not None  # noqa: S101 - SQLite only
        return conn.connection.dbapi_connection, conn.exec_driver_sql(self._data_version).scalar()

    def _remember(self, metrics: dict[str, Metric]) -> None:
        """After a commit: the metrics it read or created, for `_metrics_for_write`."""
        if self._data_version is not None:
            self._metric_cache.update(metrics)

    def _create_metrics(
        self, conn: Connection, types: dict[str, MetricType], now: float
    ) -> dict[str, Metric]:
        """Insert the metrics no one has created yet (sorted, so concurrent writers take
        unique-index locks in one order) and return all of them as stored."""
        conn.execute(
            dialects.insert_ignore(self._write_engine, metrics),
            [
                {"name": n, "type": t.value, "stat_key": secrets.token_hex(16), "created_at": now}
                for n, t in sorted(types.items())
            ],
        )
        return self._metrics_by_name(conn, set(types))

    def _claim_batches(self, conn: Connection, ids: list[str], now: float) -> set[str]:
        """Claim batch ids for this transaction; ids claimed before are not ours."""
        if not ids:
            return set()
        txn = secrets.token_hex(16)
        conn.execute(
            dialects.insert_ignore(self._write_engine, processed_batches),
            [{"batch_id": b, "txn": txn, "processed_at": now} for b in sorted(ids)],
        )
        mine: set[str] = set()
        for chunk in _chunks(ids):
            mine.update(
                conn.scalars(
                    select(processed_batches.c.batch_id).where(
                        processed_batches.c.batch_id.in_(chunk), processed_batches.c.txn == txn
                    )
                )
            )
        return mine

    def _metrics_by_name(self, conn: Connection, names: set[str]) -> dict[str, Metric]:
        out: dict[str, Metric] = {}
        for chunk in _chunks(sorted(names)):
            for row in conn.execute(_METRICS_NAMED, {"names": chunk}):
                out[row.name] = _metric(row)
        return out

    def _write_points(self, conn: Connection, points: rollup.Points) -> None:
        """Blocks, cells and `last_point_at`: everything a write stores but its claims."""
        self._insert_blocks(conn, self._block_rows(points))
        self._write_rollups(conn, points)
        self._touch_metrics(conn, points.last_times())

    @staticmethod
    def _block_rows(points: rollup.Points) -> list[tuple[int, float, float, int, bytes]]:
        """One block per metric and UTC day of the write."""
        day = np.floor(points.time).astype(np.int64) // _DAY  # integers: see `rollup.fold`
        starts, ends = (run.tolist() for run in points.runs(day))
        data = blocks.encode_runs(points.time, points.value, starts, ends)
        mids, times = points.metric.tolist(), points.time.tolist()
        return [
            (mids[a], times[a], times[b - 1], b - a, blob)
            for a, b, blob in zip(starts, ends, data, strict=True)
        ]

    def _write_rollups(self, conn: Connection, points: rollup.Points) -> None:
        folded = rollup.fold(points)
        # Read-merge-write inside the write transaction: percentile data cannot be merged
        # by SQL arithmetic, and the transaction holds the write lock while we merge.
        stored = self._stored_cells(conn, folded)
        self._upsert_cells(conn, _cell_rows(points, folded, stored))

    def _stored_cells(
        self, conn: Connection, folded: list[rollup.Folded]
    ) -> dict[tuple[int, int, int], rollup.Stored]:
        """The stored cells among `folded`'s (and maybe others nearby), by key."""
        stored: dict[tuple[int, int, int], rollup.Stored] = {}
        for params in _existing_cells(folded):
            stored.update(cellpacks.unpack_stored(self._cells_in_range(conn, params)))
        return stored

    # -- metrics --------------------------------------------------------------------

    async def get_metric(self, name: str) -> Metric | None:
        await self._settle()

        def run(conn: Connection) -> Metric | None:
            found = self._metric_named(conn, {"name": name})
            return _metric(found[0]) if found else None

        return await self._read(run)

    async def get_metrics(self, names: Collection[str]) -> dict[str, Metric]:
        return await self._read(lambda conn: self._metrics_by_name(conn, set(names)))

    async def ensure_metrics(self, types: dict[str, MetricType]) -> dict[str, Metric]:
        if not types:
            return {}

        def run(conn: Connection) -> dict[str, Metric]:
            made = self._create_metrics(conn, types, time.time())
            if any(m.type is not types[name] for name, m in made.items()):
                raise _CreatedNone  # rolls back the others: a refused write creates none
            return made

        try:
            return await self._write(run)
        except _CreatedNone:
            return await self.get_metrics(types)

    async def get_metric_by_stat_key(self, stat_key: str) -> Metric | None:
        def run(conn: Connection) -> Metric | None:
            row = conn.execute(select(metrics).where(metrics.c.stat_key == stat_key)).first()
            return _metric(row) if row else None

        return await self._read(run)

    async def list_metrics(self, prefix: str, after: str | None, limit: int) -> list[Metric]:
        await self._settle()  # last_point_at is written with the cells

        def run(conn: Connection) -> list[Metric]:
            stmt = select(metrics).order_by(metrics.c.name).limit(limit)
            if prefix:
                # Range on the name instead of LIKE: no escaping of % and _, and the
                # unique index on name serves it on every engine.
                stmt = stmt.where(metrics.c.name >= prefix)
            if after is not None:
                stmt = stmt.where(metrics.c.name > after)
            out = []
            for row in conn.execute(stmt):
                if not row.name.startswith(prefix):
                    break
                out.append(_metric(row))
            return out

        return await self._read(run)

    async def delete_metric(self, name: str) -> bool:
        def run(conn: Connection) -> bool:
            # Its name may come back as a new metric (new id, maybe the other type).
            self._metric_cache.pop(name, None)
            # Locked before its points are deleted, as a writer locks it before it adds
            # some (`_apply`): a write either commits first, and is deleted with the
            # rest, or finds the metric gone. (SQLite has no row locks: its writers take
            # turns on the whole database.)
            mid = conn.scalar(select(metrics.c.id).where(metrics.c.name == name).with_for_update())
            if mid is None:
                return False
            self._recover(conn)
            conn.execute(delete(metric_points).where(metric_points.c.metric_id == mid))
            conn.execute(delete(rollups).where(rollups.c.metric_id == mid))
            conn.execute(delete(metrics).where(metrics.c.id == mid))
            return True

        # The journal's lock: no write of this metric is journaled under its old id
        # between the rollup above and the deletion (see `_append`).
        async with (
            self._journaling.exclusive()
            if self._journaling is not None
            else contextlib.nullcontext()
        ):
            return await self._write(run, journal_locked=True)

    # -- reads ----------------------------------------------------------------------

    async def read_cells(
        self, metric_id: int, res: Resolution, start: int, end: int, *, sketches: bool
    ) -> list[CellRow]:
        self._cell_reads += 1
        await self._settle()
        return await self._read(
            lambda conn: self._cells(conn, metric_id, res, (start, end), sketches=sketches)
        )

    async def read_points(
        self, metric_id: int, start: float, end: float
    ) -> list[tuple[float, float]]:
        self._raw_reads += 1
        await self._settle()
        return await self._read(lambda conn: _points(conn, metric_id, start, end))

    async def read_series(
        self, name: str, spans: Sequence[Read], *, sketches: bool
    ) -> tuple[Metric | None, list[list[Any]]]:
        await self._settle()

        # One thread hop and one connection for the whole query: a day of minutes
        # measured four (metric, two sub-minute edges, cells), ~0.3 ms each.
        def run(conn: Connection) -> tuple[Metric | None, list[list[Any]]]:
            found = self._metric_named(conn, {"name": name})
            if not found:
                return None, []
            metric = _metric(found[0])
            out: list[list[Any]] = []
            for res, start, end in spans:
                if res is None:
                    self._raw_reads += 1
                    out.append(_points(conn, metric.id, start, end))
                else:
                    self._cell_reads += 1
                    span = (int(start), int(end))
                    cells = self._cells(conn, metric.id, res, span, sketches=sketches)
                    out.append(cells)
            return metric, out

        return await self._read(run)

    def _cells(
        self,
        conn: Connection,
        metric_id: int,
        res: Resolution,
        span: tuple[int, int],
        *,
        sketches: bool,
    ) -> list[CellRow]:
        lo, hi = span
        if int(res) not in cellpacks.PACKED:
            params = {"mid": metric_id, "res": int(res), "lo": lo, "hi": hi}
            return self._read_cells[sketches](conn, params)
        # Packs, from the one that holds the first cell; cells outside the span are
        # dropped, which only the packs at its two ends can hold.
        first = cellpacks.row_start(int(res), lo)
        width = cellpacks.PACKED[int(res)]
        params = {"mid": metric_id, "res": int(res), "lo": first, "hi": hi}
        out: list[CellRow] = []
        for start, _, _, _, _, data in self._read_cells[True](conn, params):
            cells = cellpacks.decode(int(res), start, data, summaries=sketches)
            if lo <= start and start + width <= hi:
                out.extend(cells)
            else:
                out.extend(cell for cell in cells if lo <= cell[0] < hi)
        return out

    # -- keys -----------------------------------------------------------------------

    async def create_key(
        self,
        *,
        name: str,
        prefix: str,
        secret_hash: str,
        scopes: frozenset[Scope],
        rate_limit: int | None,
        now: float,
    ) -> ApiKey:
        def run(conn: Connection) -> ApiKey:
            conn.execute(
                api_keys.insert().values(
                    name=name,
                    prefix=prefix,
                    secret_hash=secret_hash,
                    scopes=",".join(sorted(s.value for s in scopes)),
                    rate_limit=rate_limit,
                    created_at=now,
                )
            )
            return _key(conn.execute(select(api_keys).where(api_keys.c.prefix == prefix)).one())

        try:
            return await self._write(run)
        except IntegrityError as exc:
            raise ValidationError(
                f"a key named {name!r} already exists", [Detail("name is taken", field="name")]
            ) from exc

    async def list_keys(self) -> list[ApiKey]:
        return await self._read(
            lambda conn: [_key(r) for r in conn.execute(select(api_keys).order_by(api_keys.c.name))]
        )

    async def key_by_prefix(self, prefix: str) -> ApiKey | None:
        def run(conn: Connection) -> ApiKey | None:
            row = conn.execute(select(api_keys).where(api_keys.c.prefix == prefix)).first()
            return _key(row) if row else None

        return await self._read(run)

    async def revoke_keys(self, name_or_prefix: str, now: float) -> int:
        def run(conn: Connection) -> int:
            # A visible prefix names exactly one key; only when none has it is the
            # argument taken as a name (a key may be named like another's prefix).
            for column in (api_keys.c.prefix, api_keys.c.name):
                exists = conn.scalar(select(api_keys.c.id).where(column == name_or_prefix))
                if exists is not None:
                    result = conn.execute(
                        update(api_keys)
                        .where(column == name_or_prefix, api_keys.c.revoked_at.is_(None))
                        .values(revoked_at=now)
                    )
                    return int(result.rowcount)
            return 0

        return await self._write(run)

    async def touch_keys(self, last_used: dict[int, float]) -> None:
        if not last_used:
            return
        rows = [{"kid": k, "t": t} for k, t in last_used.items()]
        await self._write(
            lambda conn: conn.execute(
                update(api_keys)
                .where(api_keys.c.id == bindparam("kid"))
                .values(last_used_at=bindparam("t")),
                rows,
            )
        )

    # -- retention ------------------------------------------------------------------

    async def delete_points_before(self, cutoff: float, limit: int) -> int:
        def run(conn: Connection) -> int:
            # Blocks named by a 0002 writer's backlog must have their cells first. Writes
            # still pending are left to their writer (they become blocks within a second
            # and the next pass finds them): taking them here made `serve` roll up the
            # whole backlog, up to 200,000 points (+36 MB of `serve`'s
            # memory and the write lock held meanwhile, 30 s into every bench run).
            self._recover_legacy(conn)
            ids = list(
                conn.scalars(
                    select(metric_points.c.id).where(metric_points.c.t_max < cutoff).limit(limit)
                )
            )
            if ids:
                conn.execute(delete(metric_points).where(metric_points.c.id.in_(ids)))
            return len(ids)

        return await self._write(run)

    async def delete_claims_before(self, cutoff: float, limit: int) -> int:
        def run(conn: Connection) -> int:
            ids = list(
                conn.scalars(
                    select(processed_batches.c.batch_id)
                    .where(processed_batches.c.processed_at < cutoff)
                    .limit(limit)
                )
            )
            if ids:
                conn.execute(delete(processed_batches).where(processed_batches.c.batch_id.in_(ids)))
            return len(ids)

        return await self._write(run)

    async def delete_cells_before(self, res: Resolution, cutoff: float, limit: int) -> int:
        # Old cells are found through the key, metric by metric (`metric_id IN (all
        # metrics)`: one seek each), not by scanning the table (an index on (res, bucket)
        # would cost every cell write): the scan took ~100 ms per resolution after the
        # bench's 3,000,000 points, and the four of them, though on a read connection,
        # held 1,000 single writes/s at up to 168 ms while they ran; the seeks take
        # milliseconds. The write transaction then deletes what was found by key.
        bound = cellpacks.expired_before(int(res), cutoff)
        keys = await self._read(
            lambda conn: [
                tuple(k)
                for k in conn.execute(
                    select(rollups.c.metric_id, rollups.c.bucket)
                    .where(
                        rollups.c.metric_id.in_(select(metrics.c.id)),
                        rollups.c.res == int(res),
                        rollups.c.bucket < bound,
                    )
                    .limit(limit)
                )
            ]
        )
        if not keys:
            return 0

        def run(conn: Connection) -> int:
            deleted = 0
            for chunk in _chunks(keys):
                deleted += conn.execute(
                    delete(rollups).where(
                        rollups.c.res == int(res),
                        rollups.c.bucket < bound,
                        tuple_(rollups.c.metric_id, rollups.c.bucket).in_(chunk),
                    )
                ).rowcount
            return deleted

        return await self._write(run)

    async def count_expired(
        self, raw_cutoff: float, cell_cutoffs: dict[Resolution, float]
    ) -> tuple[int, int]:
        def run(conn: Connection) -> tuple[int, int]:
            blocks = (
                conn.scalar(
                    select(func.count())
                    .select_from(metric_points)
                    .where(metric_points.c.t_max < raw_cutoff)
                )
                or 0
            )
            cells = 0
            for res, cut in cell_cutoffs.items():
                cells += (
                    conn.scalar(
                        select(func.count())
                        .select_from(rollups)
                        .where(
                            rollups.c.res == int(res),
                            rollups.c.bucket < cellpacks.expired_before(int(res), cut),
                        )
                    )
                    or 0
                )
            return int(blocks), int(cells)

        return await self._read(run)

    async def count_points(self, metric_id: int | None = None) -> int:
        """Raw points stored (all metrics, or one); for retention reports and tests."""
        await self._settle()

        def run(conn: Connection) -> int:
            stmt = select(func.coalesce(func.sum(metric_points.c.n), 0))
            if metric_id is not None:
                stmt = stmt.where(metric_points.c.metric_id == metric_id)
            return int(conn.scalar(stmt) or 0)

        return await self._read(run)


def _points(
    conn: Connection, metric_id: int, start: float, end: float
) -> list[tuple[float, float]]:
    stmt = select(metric_points.c.data).where(
        metric_points.c.metric_id == metric_id,
        metric_points.c.t_max >= start,
        metric_points.c.t_min < end,
    )
    # In columns: a block of deferred writes holds tens of thousands of points, and a
    # query edge wants a few seconds of them.
    parts = [blocks.decode_columns(data) for data in conn.scalars(stmt)]
    if not parts:
        return []
    time = np.concatenate([t for t, _ in parts])
    value = np.concatenate([v for _, v in parts])
    keep = (time >= start) & (time < end)
    time, value = time[keep], value[keep]
    order = np.lexsort((value, time))
    return list(zip(time[order].tolist(), value[order].tolist(), strict=True))


def _without(part: rollup.Pending, metrics: set[int] | None) -> rollup.Pending:
    """`part` without the points of `metrics`."""
    if not metrics:
        return part
    keep = ~np.isin(part.metric, list(metrics))
    return rollup.Pending(part.metric[keep], part.time[keep], part.value[keep])


class _CreatedNone(Exception):
    """`ensure_metrics` found one of its metrics stored with the other type."""


class _MetricGone(Exception):
    """A write's metric was deleted by another transaction after the write read it."""


def _discarding_on_error(conn: Connection, fn: Callable[[Connection], T]) -> T:
    """Run `fn`; if it raises, discard the connection instead of pooling it again.

    A statement left unfinished by the error stays alive as long as the traceback that
    references its cursor, and on SQLite an unfinished read pins its connection to the
    snapshot it started in: pooled again, that connection would serve old data to later
    reads (found by a test: reads failing mid-result hid later writes).
    """
    try:
        return fn(conn)
    except BaseException:
        conn.invalidate()
        raise


_GAP = 32  # cells; a longer run of untouched cells splits a range read in two


def _cell_rows(
    points: rollup.Points,
    folded: list[rollup.Folded],
    stored: dict[tuple[int, int, int], rollup.Stored],
) -> list[rollup.Row]:
    """The rows to upsert for `points` merged into the `stored` cells, minute cells in
    their packs."""
    return cellpacks.pack(rollup.merge(points, folded, stored), stored)


def _existing_cells(folded: Iterable[rollup.Folded]) -> Iterable[dict[str, Any]]:
    """`_CELLS_IN_RANGE` parameters that bring every stored cell among the write's cells
    (and maybe others nearby, which the caller ignores).

    One range read per resolution and run of nearby cell starts, over all the write's
    metrics: `metric_id IN (...) AND res = ? AND bucket BETWEEN ? AND ?` walks the
    primary key, where a row-value IN list of (metric, res, bucket) measured ~10x slower
    on SQLite. Runs are split at gaps so a write spanning days does not read every
    minute cell in between.
    """
    for cells in folded:
        res = int(cells.res)
        # Rows, not cells: a packed cell is read with its pack (see cellpacks). Starts
        # are multiples of `res`, so this leaves unpacked ones as they are.
        step = cellpacks.PACKED.get(res, res)
        ordered = sorted({s - s % step for s in cells.start})
        lo = prev = ordered[0]
        runs = []
        for s in ordered[1:]:
            if s - prev > _GAP * step:
                runs.append((lo, prev))
                lo = s
            prev = s
        runs.append((lo, prev))
        for chunk in _chunks(sorted(set(cells.metric))):
            for first, last in runs:
                yield {"ids": chunk, "res": res, "lo": first, "hi": last}
