"""The rollup process: writes the raw blocks and rollup cells of the journal's writes.

In the embedded layout `serve` commits each write's points to the journal
(storage/journal.py, storage/journaling.py) and answers; this process, which `serve`
starts beside itself, rolls up what gathered there, many writes at a time: when
ROLLUP_POINTS have gathered or the oldest has waited ROLLUP_SECONDS. It has a core and a
GIL of its own. Before, the rollups ran on a thread of the writer and were written by
its loop, every write waiting: in the bench's ingest the loop was blocked 21% of the
time and the writer's two threads together held its GIL ~88% of it.

Every rollup is one transaction of the database that also moves the journal's mark, so
it can be run by anyone at any time: this process, `serve` when a read must not wait
any longer or a metric is deleted. A rollup that dies half-way is rolled back and done
again by the next.

Its parent tells it to stop by closing its stdin (after the parent's last write): it
rolls up what is left and exits. A parent that dies closes it too.

With `serve --workers N` the processes share one rollup process: the one that holds the
lock file beside the journal (`flock`, let go by the kernel when its holder dies) starts
it; the others look every 0.1 s and take over within that of the holder's end. One
rollup process per database, not per `serve` process: each costs ~120 MB at its peak,
and two would only take turns on the database's write lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec
import structlog

if TYPE_CHECKING:
    from glowing_fiesta.storage.sql import SqlStorage

log = structlog.get_logger(__name__)

# When to roll up. Measured on the bench's data: cells of 10,000 points written together
# cost 3.6 µs a point, of 20,000 3.1, of 50,000 2.8; a query never waits for this (it
# flushes).
ROLLUP_POINTS = 50_000
ROLLUP_SECONDS = 0.25
# A rollup takes at most about this many points (bounds this process's memory): rollups
# of 100,000 points were no faster than of 50,000 and took 50-110 MB more.
ROLLUP_MAX_POINTS = 2 * ROLLUP_POINTS
_POLL_SECONDS = 0.02
_RETRY_SECONDS = 1.0
# How long `serve`, stopping, waits for this process to roll up what is left before it
# kills it (and rolls up the rest itself): a rollup of ROLLUP_MAX_POINTS takes ~0.2 s.
_STOP_SECONDS = 20.0


class Config(msgspec.Struct):
    """What `serve` passes on: what to open and how to log."""

    url: str
    sqlite_synchronous: str
    log_level: str
    log_format: str


def quiet_child() -> None:
    """Settings for a child process of `serve` (this one)."""
    # Ctrl-C and SIGTERM reach the whole process group; the parent decides when a child
    # stops (by closing its pipe, after its last commit).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # As in `serve` (bootstrap._calm_garbage_collector): what start-up loaded is moved
    # out of the collector's sight, and young collections run every 50,000 allocations.
    # Each write builds and frees thousands of objects by reference counting; at the
    # default threshold, collections walked a rollup's live cells again and again.
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


class Roller:
    """`serve`'s handle on its rollup process: starts it, starts it again when it died,
    and stops it."""

    def __init__(self, config: bytes, lock_path: Path) -> None:
        self._config = config
        self._lock_path = lock_path
        self._lock_fd: int | None = None
        self._other_holds = False
        self._proc: subprocess.Popen[bytes] | None = None
        self._start_at = 0.0

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def alive(self) -> bool:
        """Whether this `serve` process's rollup process runs."""
        return self._proc is not None and self._proc.poll() is None

    def elsewhere(self) -> bool:
        """Whether another `serve` process on this database runs the rollup process (as
        of the last `ensure`)."""
        return self._other_holds

    def _elected(self) -> bool:
        """Whether this process holds the lock file (takes it when it is free)."""
        if self._lock_fd is not None:
            return True
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            self._other_holds = True
            return False
        except OSError:  # no locks here (ENOLCK): not a descriptor lost every look
            os.close(fd)
            raise
        self._lock_fd = fd
        self._other_holds = False
        return True

    def ensure(self) -> None:
        """Start the process if it is not running (not more than once a second) and no
        other `serve` process runs it."""
        if self.alive() or not self._elected():
            return
        if self._proc is not None:
            log.error("rollup_process_lost", returncode=self._proc.returncode)
            if self._proc.stdin is not None:
                with contextlib.suppress(OSError):  # its end is gone: nothing to flush
                    self._proc.stdin.close()
            self._proc = None
            self._start_at = time.monotonic() + _RETRY_SECONDS
        if time.monotonic() < self._start_at:
            return
        # The configuration, database URL included, goes through the pipe rather than
        # the command line.
        proc = None
        try:
            proc = subprocess.Popen([sys.executable, "-m", __name__], stdin=subprocess.PIPE)  # noqa: S603
            assert proc.stdin is not None  # noqa: S101 - stdin=PIPE
            proc.stdin.write(len(self._config).to_bytes(4, "big") + self._config)
            proc.stdin.flush()
        except OSError as exc:  # no process to be had now (EMFILE, ENOMEM, it died)
            log.error("rollup_process_failed_to_start", error=str(exc))
            self._start_at = time.monotonic() + _RETRY_SECONDS
            if proc is not None:
                proc.kill()
                proc.wait()
            return
        self._proc = proc
        log.info("rollup_process_started", pid=proc.pid)

    def hurry(self) -> bool:
        """Ask it to roll up everything journaled now; False if it is not running."""
        if not self.alive():
            return False
        assert self._proc is not None  # noqa: S101 - alive
        assert self._proc.stdin is not None  # noqa: S101 - stdin=PIPE
        try:
            self._proc.stdin.write(b"!")
            self._proc.stdin.flush()
        except OSError:  # it died meanwhile
            return False
        return True

    def stop(self) -> None:
        """Close its pipe: it rolls up what is left and exits; then let the lock go."""
        proc, self._proc = self._proc, None
        try:
            if proc is not None:
                self._stop(proc)
        finally:
            if self._lock_fd is not None:
                os.close(self._lock_fd)  # and with it the lock
                self._lock_fd = None

    @staticmethod
    def _stop(proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdin is not None  # noqa: S101 - stdin=PIPE
        with contextlib.suppress(OSError):  # it died with its end unread
            proc.stdin.close()
        try:
            proc.wait(_STOP_SECONDS)
        except subprocess.TimeoutExpired:  # pragma: no cover - a rollup stuck past 30 s
            proc.kill()
            proc.wait()


def _read_config(fd: int) -> bytes | None:
    head = _read_exactly(fd, 4)
    if head is None:
        return None
    return _read_exactly(fd, int.from_bytes(head, "big"))


def _read_exactly(fd: int, size: int) -> bytes | None:
    buf = b""
    while len(buf) < size:
        chunk = os.read(fd, size - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def child_storage(config: bytes) -> SqlStorage:
    """A child process's storage, from the `Config` its parent sent; logging set up."""
    from glowing_fiesta.logs import configure
    from glowing_fiesta.storage.sql import SqlStorage

    settings = msgspec.msgpack.decode(config, type=Config)
    configure(settings.log_level, settings.log_format)
    return SqlStorage(settings.url, sqlite_synchronous=settings.sqlite_synchronous)


def _main(fd: int) -> None:
    quiet_child()
    body = _read_config(fd)
    if body is None:
        return
    storage = child_storage(body)
    try:
        # What a `serve` or rollup process that died left (any start finds the rollups
        # of a clean stop done, and rolls up nothing).
        _attempt(lambda: _roll_up_all(storage), log_as="rollup_backlog_recovered")
        retry_at = 0.0
        written = 0
        while True:
            hurry = False
            # After a rollup, the next one may be due already (writes outran this
            # process): no pause then. A pause of _POLL_SECONDS between rollups of
            # ROLLUP_MAX_POINTS (~0.13 s) was an eighth of this process's time, while
            # `serve` held writes at the backlog's limit.
            if select.select([fd], [], [], 0 if written else _POLL_SECONDS)[0]:
                if not os.read(fd, 4096):
                    break  # `serve` closed the pipe
                hurry = True  # a query waits for everything journaled so far
            written = 0
            if time.monotonic() < retry_at and not hurry:
                continue
            try:
                if hurry:
                    written = _roll_up_journal(storage)
                elif storage.rollup_due(ROLLUP_POINTS, ROLLUP_SECONDS):
                    written = storage.roll_up_now(ROLLUP_MAX_POINTS)
                elif not storage.rollup_due(1, 0.0):
                    # Only with nothing journaled to roll up: under load `serve`
                    # deletes the rolled-up rows (its writer thread), and tidying here
                    # between two rollups (an fsync, the journal's lock, a shrink that
                    # the next writes undo) cost ingest 3.4% (ten alternating pairs).
                    storage.tidy_journal()
            except Exception:  # a failed rollup is tried again; the writes stay journaled
                log.exception("rollup_write_failed")
                retry_at = time.monotonic() + _RETRY_SECONDS
        _attempt(lambda: _roll_up_all(storage))
    finally:
        storage.dispose()


def _roll_up_journal(storage: SqlStorage) -> int:
    """Every write journaled so far, ROLLUP_MAX_POINTS at a time (this process's memory
    stays bounded however many there are). Up to the last write journaled now: other
    writers on the same file may go on appending, and this must end."""
    return storage.roll_up_through(storage.journal_end(), ROLLUP_MAX_POINTS)


def _roll_up_all(storage: SqlStorage) -> int:
    """At start and stop: the journal, then what earlier versions left (`recover_now`)."""
    return _roll_up_journal(storage) + storage.recover_now()


def _attempt(rollup: Callable[[], int], *, log_as: str | None = None) -> None:
    try:
        points = rollup()
    except Exception:
        log.exception("rollup_write_failed")
        return
    if log_as is not None and points:
        log.info(log_as, points=points)


if __name__ == "__main__":
    _main(sys.stdin.fileno())
