"""The embedded layout's writer in a process of its own: `apply` over a socket pair.

In one process, the event loop (HTTP, JSON, validation) and the writer share one GIL:
under bulk ingest the writer held ~60% of it and requests waited for the rest. With
`apply` in a child process each side has a core. The parent keeps group commit (one
`apply` in flight, carrying every batch that queued meanwhile), telemetry and every
other write.

Wire: each message is a 4-byte big-endian length and a msgpack body. The parent sends
a request — `apply` with a list of batches as `Columns`, or `flush` — and the child answers
with one result per item (or an error) and the number of points whose cells wait.

Rollups: on SQLite the child commits a write's points as one pending row before
answering and writes the raw blocks and rollup cells of many writes together, when
ROLLUP_POINTS have gathered or the oldest has waited ROLLUP_SECONDS (SqlStorage.apply_now
says why). The child computes a rollup on a thread while it goes on committing writes,
then writes it. A read in the parent first sends `flush` if some may be waiting, so it
sees every acknowledged write. A write whose blocks and cells were never written (the child
died) is still pending in the database, and the next child writes them before anything
else.

Failure: if the child dies, the `apply` in flight fails with `Unavailable` (its
requests get a 503 and were never acknowledged; a commit that did land before the
death is not undone, as with any server that dies before answering) and the next
`apply` starts a new child.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import select
import signal
import socket
import struct
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

import msgspec
import structlog

from glowing_fiesta.errors import Detail, TypeConflict, Unavailable
from glowing_fiesta.storage.columns import Columns

if TYPE_CHECKING:
    from glowing_fiesta.storage.sql import PreparedRollup, SqlStorage

log = structlog.get_logger(__name__)

_LENGTH = struct.Struct(">I")
_STOP_SECONDS = 30.0
# When the child writes deferred blocks and rollup cells. Measured on the bench's data: cells of
# 10,000 points written together cost 3.6 µs a point, of 20,000 3.1, of 50,000 2.8;
# a query never waits for this (it flushes), only the next write does.
ROLLUP_POINTS = 50_000
ROLLUP_SECONDS = 0.25
# A write of at most this many points, alone (not grouped with others) and with nothing
# deferred, writes its cells in its own transaction, as on server engines. A few points
# have about one cell each, so gathering them saves nothing, while a second commit per
# write costs WAL pages: under 1,000 single writes/s the WAL grew ~40% faster with every
# write split in two, and its restarts (tens of ms, every write waiting) came that much
# more often.
ROLLUP_AT_ONCE = 500
# While a rollup is being computed, writes go on; past this many points waiting the
# child stops taking writes until it is written, so the backlog (in memory and in the
# pending table) stays bounded when writes outrun rollups.
ROLLUP_LIMIT = 4 * ROLLUP_POINTS
_RETRY_SECONDS = 1.0
# The child's GIL switch interval. A write's transaction gives up the GIL in every
# SQLite call; with the default 5 ms, each time it could wait that long for the rollup
# thread to hand it back. Measured (bench ingest, 2 runs): 5 ms 232k points/s (as with
# no thread), 0.5 ms 245k, 0.1 ms 245k.
SWITCH_SECONDS = 0.0001


class _Conflict(msgspec.Struct, array_like=True):
    message: str
    details: list[Detail]


class _Config(msgspec.Struct):
    """The child's first message: what to open and how to log."""

    url: str
    sqlite_synchronous: str
    log_level: str
    log_format: str


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
        self._config = _encoder.encode(_Config(url, sqlite_synchronous, log_level, log_format))
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
        # A new child first writes the cells its predecessor left (the rollup backlog),
        # and a query must wait for that: the first `settle` asks.
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
    # Ctrl-C and SIGTERM reach the whole process group; the parent decides when the
    # writer stops (by closing the socket, after its last commit).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sys.setswitchinterval(SWITCH_SECONDS)
    from glowing_fiesta.logs import configure
    from glowing_fiesta.storage.sql import SqlStorage  # the parent's module imports us

    # As in `serve` (bootstrap._calm_garbage_collector): what start-up loaded is moved
    # out of the collector's sight, and young collections run every 50,000 allocations.
    # Each write builds and frees thousands of objects by reference counting; at the
    # default threshold, collections walked the rollup's live cells again and again.
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)

    with sock:
        config = _read(sock)
        if config is None:
            return
        settings = msgspec.msgpack.decode(config, type=_Config)
        configure(settings.log_level, settings.log_format)
        storage = SqlStorage(settings.url, sqlite_synchronous=settings.sqlite_synchronous)
        rollups = _Rollups(storage)
        rollups.recover()
        while True:
            wait = rollups.due_in()
            if wait is not None and wait <= 0:
                rollups.start()
                continue
            if rollups.running() and storage.backlog_points >= ROLLUP_LIMIT:
                rollups.finish()
                continue
            ready = select.select([sock, rollups.done], [], [], wait)[0]
            if rollups.done in ready:
                rollups.finish()
            if sock not in ready:
                continue
            body = _read(sock)
            if body is None:
                break
            request = _request.decode(body)
            if request.op == "flush":
                reply = rollups.flush()
            else:
                reply = _apply(storage, request.items, defer=_defer(storage, request.items))
            sock.sendall(_frame(_encoder.encode(reply)))
        rollups.write()
        rollups.close()
    storage.dispose()


class _Rollups:
    """The child's deferred blocks and cells: when to write them, and failures kept apart
    from the writes (a failed rollup is tried again later; its writes are stored).

    A rollup is computed on a thread (`SqlStorage.prepare_roll_up`) while the loop goes
    on committing writes, and written by the loop once done (`done` becomes readable).
    """

    def __init__(self, storage: SqlStorage) -> None:
        self.storage = storage
        self.retry_at = 0.0
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gf-rollup")
        self.done, self._signal = socket.socketpair()
        self._running: Future[PreparedRollup] | None = None

    def running(self) -> bool:
        return self._running is not None

    def due_in(self) -> float | None:
        """Seconds until the next rollup should start; None when there is nothing to
        start (nothing waits, or one is running)."""
        if self._running is not None or not self.storage.backlog_points:
            return None
        if self.storage.backlog_points >= ROLLUP_POINTS:
            return self.retry_at - time.monotonic()
        due = max(self.storage.backlog_since + ROLLUP_SECONDS, self.retry_at)
        return due - time.monotonic()

    def start(self) -> None:
        """Start computing the rollup of every write deferred so far."""
        future = self._pool.submit(
            self.storage.prepare_roll_up,
            self.storage.backlog_snapshot(),
            self.storage.rollup_seen,
        )
        future.add_done_callback(lambda _: self._signal.send(b"."))
        self._running = future

    def finish(self) -> bool:
        """Wait for the running rollup, if any, and write it."""
        future, self._running = self._running, None
        if future is None:
            return True
        # Its signal, sent once it is done whichever way (a byte left unread would keep
        # `done` readable for ever): also how this waits for it.
        self.done.recv(1)
        return self._attempt(lambda: self.storage.write_roll_up(future.result()))

    def write(self) -> bool:
        """Write every deferred write's blocks and cells now."""
        return self.finish() and self._attempt(self.storage.roll_up_now)

    def _attempt(self, rollup: Callable[[], int]) -> bool:
        """Run `rollup`; if it fails, log it and try again after a pause."""
        try:
            rollup()
        except Exception:
            log.exception("rollup_write_failed")
            self.retry_at = time.monotonic() + _RETRY_SECONDS
            return False
        return True

    def close(self) -> None:
        self._pool.shutdown()
        self.done.close()
        self._signal.close()

    def recover(self) -> None:
        try:
            self.storage.recover_now()
        except Exception:  # the writes must go on; the backlog stays for the next try
            log.exception("rollup_recovery_failed")

    def flush(self) -> _Reply:
        if not self.write():
            return _Reply(error="failed", message="rollup cells could not be written")
        return _Reply(backlog=self.storage.backlog_points)


def _defer(storage: SqlStorage, items: list[Columns]) -> bool:
    """Whether this write's cells wait to be written with others': while others wait,
    for a big write, and for writes the parent grouped (a group means writes queue).

    A small write's own cells cost the writer ~3 ms on a slow machine (the day, hour and
    quarter-hour sketches merged and encoded again), so under 1,000 single writes/s
    groups formed and every commit paid it. Gathering the cells of grouped writes on the
    rollup thread, in alternating bench runs: open-loop p50 5.9-16.9 -> 2.7-6.1 ms, p99
    median of eight 31.5 -> 25.4 ms (docs/performance.md has every run)."""
    if not storage.can_defer_rollups:
        return False
    if storage.backlog_points or len(items) > 1:
        return True
    return sum(len(item) for item in items) > ROLLUP_AT_ONCE


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


def _apply(storage: SqlStorage, items: list[Columns], *, defer: bool) -> _Reply:
    from sqlalchemy.exc import OperationalError

    try:
        results = storage.apply_now(items, defer_rollups=defer)
    except OperationalError as exc:
        log.warning("writer_commit_refused", error=str(exc.orig))
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
