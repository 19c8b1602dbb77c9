"""The embedded layout's write path: `serve` commits each group of writes to the journal
(storage/journal.py) and answers; the rollup process (storage/roller.py), which this
starts beside `serve`, writes their raw blocks and rollup cells, many writes at a time.

Where the commit runs, measured with the bench's ingest on this 2-core machine (four
1,000-point batches in flight, the backlog limit off): on `serve`'s event loop 803,000
to 890,000 points/s; on a thread of `serve` 613,000 to 630,000, the loop and the thread
handing the GIL back and forth; in a writer process of its own (as until the tenth
session) 632,000 to 661,000, each group's round trip over a socket pair ~2.5 ms against
~1 ms of commit, because a write to the socket woke the writer on `serve`'s core. With
the limit on, alternating runs: 452,000 to 571,000 with the writer process, 572,000 to
621,000 without (the rollup process is the limit again). Single writes measured no
slower.

Kept off the loop, on the storage's writer thread: a write that creates metrics (it
takes the database's write lock, which a rollup holds for up to a few hundred ms) or
finds the journal's lock taken for more than a few ms, deleting rolled-up rows (an
fsync first), rollups this process must do itself (the rollup process is dead or
stuck), and metric deletion. One user of the journal's connection at a time: the loop
and that thread take `exclusive()` first, and keep it until the thread is done, even
when cancelled.

Backpressure: while ROLLUP_LIMIT points wait in the journal, the next write waits (on
the loop, without blocking it) until the rollup process catches up, so that the backlog
(the journal, and what a flush must roll up) stays bounded when writes outrun rollups.
A read first waits for the writes acknowledged before it to be rolled up (`settle`).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import structlog
from sqlalchemy.exc import OperationalError

from glowing_fiesta.errors import TypeConflict, Unavailable
from glowing_fiesta.storage.columns import Columns
from glowing_fiesta.storage.roller import ROLLUP_POINTS, Roller

if TYPE_CHECKING:
    from glowing_fiesta.storage.sql import SqlStorage

log = structlog.get_logger(__name__)

ROLLUP_LIMIT = 4 * ROLLUP_POINTS
# When `serve` rolls up itself (the rollup process is not running or makes no
# progress), this many points a transaction.
FLUSH_POINTS = 25_000
_POLL_SECONDS = 0.002
# A rollup of ROLLUP_MAX_POINTS takes ~0.2 s here; one that fails is tried again after 1 s.
_STALL_SECONDS = 1.5
# How often `serve` looks at how far the rollups got and whether the rollup process runs.
_WATCH_SECONDS = 0.1


class JournalWriter:
    """`serve`'s side of the journal: appends, backpressure, flushes for reads, and the
    rollup process."""

    def __init__(self, storage: SqlStorage, config: bytes, lock_path: Path) -> None:
        self._storage = storage
        self._roller = Roller(config, lock_path)
        self._guard = asyncio.Lock()
        # Whether some write may wait to be rolled up (a predecessor's, at start).
        self._dirty = True
        self._watch: asyncio.Task[None] | None = None

    @property
    def rollup_pid(self) -> int | None:
        return self._roller.pid

    def start(self) -> None:
        self._roller.ensure()
        self._watch = asyncio.create_task(self._watching(), name="rollup-watch")

    async def stop(self) -> None:
        """Stop the rollup process (it rolls up what is left), then roll up here what it
        left if it failed."""
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        async with self._guard:
            await asyncio.to_thread(self._roller.stop)
            storage = self._storage
            try:
                await storage.on_writer_thread(
                    lambda: storage.roll_up_through(storage.journal_end(), FLUSH_POINTS)
                )
            except Exception:
                log.exception("rollup_write_failed")

    async def apply(self, batches: Sequence[Columns]) -> list[TypeConflict | None]:
        storage = self._storage
        async with self._guard:
            if not await self._room():
                raise Unavailable("the writer is behind: its rollups are failing", 1)
            self._dirty = True
            try:
                results = storage.journal_now(batches, create_metrics=False)
                if results is None:
                    results = await storage.on_writer_thread(
                        lambda: storage.journal_now(batches, create_metrics=True)
                    )
            except (OperationalError, sqlite3.OperationalError) as exc:
                log.warning("writer_commit_refused", error=str(getattr(exc, "orig", exc)))
                raise Unavailable("the database is not accepting writes", 2) from exc
            assert results is not None  # noqa: S101 - create_metrics=True always journals
            return results

    async def settle(self) -> None:
        """Return once the blocks and cells of every write acknowledged so far are
        written: by the rollup process (`serve` never holds a rollup's cells, which
        would count against the service's memory twice) or, when it is not running or
        makes no progress, here. Writes journaled meanwhile are not waited for, so that
        other writers on the same file cannot keep a read waiting. If the cells cannot
        be written (the database refuses writes), the read goes ahead without them.

        Every write acknowledged so far by any `serve` process on the file: under
        `--workers N` the read may reach another process than its write did."""
        storage = self._storage
        async with self._guard:  # the journal's connection is the writer thread's too
            try:
                target = storage.journal_end()
                # Past the mark with nothing of this process's waiting (`_dirty`): another
                # process's writes. Reading the end costs 3.7 µs.
                if not self._dirty and target <= storage.rolled_up_to:
                    return
                if storage.rolled_up_to < target and self._roller.hurry():
                    await self._wait(lambda: storage.rolled_up_to >= target)
                if storage.rolled_up_to < target:
                    await storage.on_writer_thread(
                        lambda: storage.roll_up_through(target, FLUSH_POINTS)
                    )
            except Exception:
                log.exception("rollup_write_failed")
                log.warning("rollup_flush_failed", error="rollup cells could not be written")
                return
            self._dirty = storage.backlog_points > 0

    async def _room(self) -> bool:
        """Whether a write may be journaled: fewer than ROLLUP_LIMIT points wait, or
        come to, once the rollup process (or, when it is not running or makes no
        progress, `serve` itself) has rolled up enough. False after rollups here failed
        too: the write is refused (503, retry), and the requests behind it, reads'
        flushes among them, are answered rather than held."""
        storage = self._storage
        if storage.backlog_points < ROLLUP_LIMIT:
            return True
        try:
            await self._wait(lambda: storage.backlog_points < ROLLUP_LIMIT)
            while storage.backlog_points >= ROLLUP_LIMIT:
                if not await storage.on_writer_thread(lambda: storage.roll_up_now(FLUSH_POINTS)):
                    break
        except Exception:
            log.exception("rollup_write_failed")
            return False
        return storage.backlog_points < ROLLUP_LIMIT

    async def _wait(self, done: Callable[[], bool]) -> None:
        """Until `done()`, the rollup process died, or it made no progress for
        _STALL_SECONDS (its rollups fail). Another `serve` process's rollup process is
        waited for the same way."""
        storage = self._storage
        roller = self._roller
        storage.observe_rollups()
        progress, since = storage.rolled_up_to, time.monotonic()
        while (
            not done()
            and (roller.alive() or roller.elsewhere())
            and time.monotonic() - since < _STALL_SECONDS
        ):
            await asyncio.sleep(_POLL_SECONDS)
            storage.observe_rollups()
            if storage.rolled_up_to > progress:
                progress, since = storage.rolled_up_to, time.monotonic()

    async def _watching(self) -> None:
        """Start the rollup process again if it died, keep `backlog_points` (and what
        the storage remembers of its writes) short, writes or not, and delete the
        journal's rolled-up rows (on the writer thread: an fsync comes first)."""
        storage = self._storage
        while True:
            await asyncio.sleep(_WATCH_SECONDS)
            async with self._guard:
                try:
                    self._roller.ensure()
                    storage.observe_rollups()
                    if storage.forget_due():
                        await storage.on_writer_thread(storage.forget_rolled_up)
                except Exception:  # only bookkeeping: the next look may succeed
                    log.exception("rollup_observe_failed")

    @contextlib.asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        """The journal's connection for the block (on the storage's writer thread)."""
        async with self._guard:
            yield
