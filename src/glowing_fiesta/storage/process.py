"""The embedded layout's writer in a process of its own: `apply` over a socket pair.

In one process, the event loop (HTTP, JSON, validation) and the writer share one GIL:
under bulk ingest the writer held ~60% of it and requests waited for the rest. With
`apply` in a child process each side has a core. The parent keeps group commit (one
`apply` in flight, carrying every batch that queued meanwhile), telemetry and every
other write.

Wire: each message is a 4-byte big-endian length and a msgpack body. The parent sends
a request — `apply` with a list of batches as `Columns`, or `flush` — and the child answers
with one result per item (or an error) and the number of points whose cells wait.

Rollups: on SQLite the child commits a write's points to the journal (storage/journal.py)
before answering; the rollup process it starts beside itself (storage/roller.py) writes
the raw blocks and rollup cells of many writes together. A read in the parent first
sends `flush` if some may be waiting, and the child rolls up what is left, so that the
read sees every acknowledged write. Writes whose blocks and cells were never written (a
process died) are still in the journal, and the next rollup writes them.

Failure: if the child dies, the `apply` in flight fails with `Unavailable` (its
requests get a 503 and were never acknowledged; a commit that did land before the
death is not undone, as with any server that dies before answering) and the next
`apply` starts a new child.
"""

from __future__ import annotations

import asyncio
import contextlib
import select
import socket
import sqlite3
import struct
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import msgspec
import structlog

from glowing_fiesta.errors import Detail, TypeConflict, Unavailable
from glowing_fiesta.storage.columns import Columns
from glowing_fiesta.storage.roller import (
    ROLLUP_POINTS,
    Config,
    Roller,
    child_storage,
    quiet_child,
)

if TYPE_CHECKING:
    from glowing_fiesta.storage.sql import SqlStorage

log = structlog.get_logger(__name__)

_LENGTH = struct.Struct(">I")
_STOP_SECONDS = 30.0
# While this many points wait in the journal, the child takes no write until the rollup
# process catches up, so that the backlog (the journal, and what a flush must roll up)
# stays bounded when writes outrun rollups.
ROLLUP_LIMIT = 4 * ROLLUP_POINTS
# When this process rolls up itself (see `_flush`), this many points at a time.
FLUSH_POINTS = 25_000
_FLUSH_POLL_SECONDS = 0.002
# A rollup of ROLLUP_MAX_POINTS takes ~0.2 s here; one that fails is tried again after 1 s.
_FLUSH_STALL_SECONDS = 1.5
# How often the child looks at how far the rollups got (see `SqlStorage.observe_rollups`).
_OBSERVE_SECONDS = 0.1


class _Conflict(msgspec.Struct, array_like=True):
    message: str
    details: list[Detail]


class _Request(msgspec.Struct, array_like=True):
    op: str  # "apply" or "flush"
    items: list[Columns] = []


class _Reply(msgspec.Struct, array_like=True):
    results: list[_Conflict | None] = []
    # "unavailable" (the database refused: retry) or "failed" (anything else)
    error: str | None = None
    message: str = ""
    backlog: int = 0  # points whose blocks and cells the child has not written yet


_encoder = msgspec.msgpack.Encoder()
_request = msgspec.msgpack.Decoder(_Request)
_reply = msgspec.msgpack.Decoder(_Reply)


class WriteProcess:
    """Parent side: starts the child, runs one `apply` at a time through it, and starts
    a new child when the last one died."""

    def __init__(
        self, url: str, *, sqlite_synchronous: str, log_level: str, log_format: str
    ) -> None:
        self._config = _encoder.encode(Config(url, sqlite_synchronous, log_level, log_format))
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._lock = asyncio.Lock()
        # Whether the child may hold writes whose cells it has not written.
        self._dirty = False

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    async def start(self) -> None:
        mine, theirs = socket.socketpair()
        with theirs:
            # A plain interpreter running this module: it imports the storage layer only
            # (not the web stack), and the configuration, database URL included, goes
            # over the socket rather than the command line.
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", __name__, str(theirs.fileno()), pass_fds=[theirs.fileno()]
            )
        self._proc = proc
        self._reader, self._writer = await asyncio.open_connection(sock=mine)
        # Its predecessor may have left writes in the journal whose cells are not
        # written, and a query must wait for them: the first `settle` asks.
        self._dirty = True
        self._writer.write(_frame(self._config))
        log.info("writer_process_started", pid=proc.pid)

    async def apply(self, items: Sequence[Columns]) -> list[TypeConflict | None]:
        reply = await self._call(_Request("apply", list(items)))
        if reply.error == "unavailable":
            raise Unavailable(reply.message, 2)
        if reply.error is not None:
            raise RuntimeError(f"the writer process failed: {reply.message}")
        return [None if r is None else TypeConflict(r.message, r.details) for r in reply.results]

    async def settle(self) -> None:
        """Return once the cells of every write acknowledged so far are written.

        If they cannot be (the database refuses writes), the query goes ahead without
        them: the points are stored, and their cells follow when writes work again.
        """
        for _ in range(2):  # a dead child's backlog is written by the next one
            if not self._dirty:
                return
            try:
                reply = await self._call(_Request("flush"))
            except Unavailable:
                continue
            if reply.error is None:
                return
            log.warning("rollup_flush_failed", error=reply.message)
            return
        log.warning("rollup_flush_failed", error="the writer process stopped")

    async def _call(self, request: _Request) -> _Reply:
        async with self._lock:
            if self._writer is None or self._reader is None:
                await self.start()
            assert self._reader is not None  # noqa: S101
            assert self._writer is not None  # noqa: S101
            body = _encoder.encode(request)
            try:
                self._writer.write(_LENGTH.pack(len(body)) + body)
                await self._writer.drain()
                size = _LENGTH.unpack(await self._reader.readexactly(_LENGTH.size))[0]
                reply = _reply.decode(await self._reader.readexactly(size))
            except (OSError, asyncio.IncompleteReadError) as exc:
                await self._lost(exc)
                raise Unavailable("the writer process stopped; retry", 1) from exc
            self._dirty = reply.backlog > 0
            return reply

    async def stop(self) -> None:
        """Close the socket: the child finishes the commit under way and exits."""
        async with self._lock:
            writer, proc = self._writer, self._proc
            self._reader = self._writer = None
            self._proc = None
            if writer is not None:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
            if proc is not None:
                try:
                    await asyncio.wait_for(proc.wait(), _STOP_SECONDS)
                except TimeoutError:  # pragma: no cover - a child stuck past 30 s
                    proc.kill()
                    await proc.wait()

    async def _lost(self, exc: BaseException) -> None:
        # It may have committed a write whose cells it had not written yet.
        self._dirty = True
        proc = self._proc
        log.error("writer_process_lost", error=repr(exc), pid=proc.pid if proc else None)
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None
        self._proc = None
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


def _serve(sock: socket.socket) -> None:
    """The child: apply what the parent sends until it closes the socket."""
    quiet_child()
    with sock:
        config = _read(sock)
        if config is None:
            return
        storage = child_storage(config)
        roller = Roller(config) if storage.can_defer_rollups else None
        try:
            _loop(sock, storage, roller)
        finally:
            if roller is not None:
                roller.stop()
            _flush(storage, None)  # what the rollup process left, if it failed
    storage.dispose()


def _loop(sock: socket.socket, storage: SqlStorage, roller: Roller | None) -> None:
    observed = time.monotonic()
    while True:
        if roller is not None:
            roller.ensure()
        ready = select.select([sock], [], [], _OBSERVE_SECONDS)[0]
        if time.monotonic() - observed >= _OBSERVE_SECONDS:
            # Keeps `backlog_points` (and what the child remembers of its writes) short.
            _observe(storage)
            observed = time.monotonic()
        if not ready:
            continue
        body = _read(sock)
        if body is None:
            return
        request = _request.decode(body)
        if request.op == "flush":
            reply = _flush(storage, roller)
        elif not _room(storage, roller):
            reply = _Reply(
                error="unavailable",
                message="the writer is behind: its rollups are failing",
                backlog=storage.backlog_points,
            )
        else:
            reply = _apply(storage, request.items)
        sock.sendall(_frame(_encoder.encode(reply)))


def _room(storage: SqlStorage, roller: Roller | None) -> bool:
    """Whether a write may be journaled: fewer than ROLLUP_LIMIT points wait, or come
    to, once the rollup process (or, when it is not running or makes no progress, this
    one) has rolled up enough. False after rollups here failed too: the write is
    refused (503, retry), and the requests behind it, queries' flushes among them,
    are answered rather than held."""
    if storage.backlog_points < ROLLUP_LIMIT:
        return True
    try:
        storage.observe_rollups()
        if roller is not None:
            _wait_for_rollups(storage, roller, lambda: storage.backlog_points < ROLLUP_LIMIT)
        while storage.backlog_points >= ROLLUP_LIMIT and storage.roll_up_now(FLUSH_POINTS):
            pass
    except Exception:
        log.exception("rollup_write_failed")
        return False
    return storage.backlog_points < ROLLUP_LIMIT


def _observe(storage: SqlStorage) -> None:
    try:
        storage.observe_rollups()
    except Exception:  # only bookkeeping: the next look may succeed
        log.exception("rollup_observe_failed")


def _flush(storage: SqlStorage, roller: Roller | None) -> _Reply:
    """Have every write journaled so far (by any writer) rolled up: by the rollup
    process (this one never holds a rollup's cells, which would count against the
    service's memory goal twice) or, when it is not running or makes no progress,
    here, FLUSH_POINTS at a time. Writes journaled meanwhile are not waited for, so
    that other writers on the same file cannot keep a query waiting."""
    try:
        target = storage.journal_end()
        if roller is not None and storage.rolled_up_to < target and roller.hurry():
            _wait_for_rollups(storage, roller, lambda: storage.rolled_up_to >= target)
        storage.roll_up_through(target, FLUSH_POINTS)
    except Exception:
        log.exception("rollup_write_failed")
        return _Reply(error="failed", message="rollup cells could not be written")
    return _Reply(backlog=storage.backlog_points)


def _wait_for_rollups(storage: SqlStorage, roller: Roller, done: Callable[[], bool]) -> None:
    """Until `done()`, the rollup process died, or it made no progress for
    _FLUSH_STALL_SECONDS (its rollups fail)."""
    storage.observe_rollups()
    progress, since = storage.rolled_up_to, time.monotonic()
    while not done() and roller.alive() and time.monotonic() - since < _FLUSH_STALL_SECONDS:
        time.sleep(_FLUSH_POLL_SECONDS)
        storage.observe_rollups()
        if storage.rolled_up_to > progress:
            progress, since = storage.rolled_up_to, time.monotonic()


def _read(sock: socket.socket) -> bytes | None:
    """One message, or None at the end of the stream."""
    head = _recv(sock, _LENGTH.size)
    if head is None:
        return None
    return _recv(sock, _LENGTH.unpack(head)[0])


def _recv(sock: socket.socket, size: int) -> bytes | None:
    """Exactly `size` bytes, or None if the stream ends first. Unbuffered, so that
    `select` on the socket tells whether another message is waiting."""
    buf = bytearray(size)
    view = memoryview(buf)
    got = 0
    while got < size:
        n = sock.recv_into(view[got:])
        if n == 0:
            return None
        got += n
    return bytes(buf)


def _apply(storage: SqlStorage, items: list[Columns]) -> _Reply:
    from sqlalchemy.exc import OperationalError

    try:
        results = storage.apply_now(items, defer_rollups=True)
    except (OperationalError, sqlite3.OperationalError) as exc:
        log.warning("writer_commit_refused", error=str(getattr(exc, "orig", exc)))
        return _Reply(
            error="unavailable",
            message="the database is not accepting writes",
            backlog=storage.backlog_points,
        )
    except Exception as exc:  # the loop must survive anything one batch does
        log.exception("writer_commit_failed")
        return _Reply(
            error="failed", message=exc.__class__.__name__, backlog=storage.backlog_points
        )
    return _Reply(
        results=[None if r is None else _Conflict(r.message, r.details) for r in results],
        backlog=storage.backlog_points,
    )


def _frame(body: bytes) -> bytes:
    return _LENGTH.pack(len(body)) + body


if __name__ == "__main__":
    _serve(socket.socket(fileno=int(sys.argv[1])))
