"""The embedded layout's writer in a process of its own: `apply` over a socket pair.

In one process, the event loop (HTTP, JSON, validation) and the writer share one GIL:
under bulk ingest the writer held ~60% of it and requests waited for the rest. With
`apply` in a child process each side has a core. The parent keeps group commit (one
`apply` in flight, carrying every batch that queued meanwhile), telemetry and every
other write.

Wire: each message is a 4-byte big-endian length and a msgpack body. The parent sends
the list of `WriteItem`s; the child answers with one result per item, or an error.

Failure: if the child dies, the `apply` in flight fails with `Unavailable` (its
requests get a 503 and were never acknowledged; a commit that did land before the
death is not undone, as with any server that dies before answering) and the next
`apply` starts a new child.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import struct
import sys
from collections.abc import Sequence
from typing import Any

import msgspec
import structlog

from glowing_fiesta.errors import Detail, TypeConflict, Unavailable
from glowing_fiesta.storage.base import WriteItem

log = structlog.get_logger(__name__)

_LENGTH = struct.Struct(">I")
_STOP_SECONDS = 30.0


class _Conflict(msgspec.Struct, array_like=True):
    message: str
    details: list[Detail]


class _Config(msgspec.Struct):
    """The child's first message: what to open and how to log."""

    url: str
    sqlite_synchronous: str
    log_level: str
    log_format: str


class _Reply(msgspec.Struct, array_like=True):
    results: list[_Conflict | None] = []
    # "unavailable" (the database refused: retry) or "failed" (anything else)
    error: str | None = None
    message: str = ""


_encoder = msgspec.msgpack.Encoder()
_items = msgspec.msgpack.Decoder(list[WriteItem])
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
        self._writer.write(_frame(self._config))
        log.info("writer_process_started", pid=proc.pid)

    async def apply(self, items: Sequence[WriteItem]) -> list[TypeConflict | None]:
        async with self._lock:
            if self._writer is None or self._reader is None:
                await self.start()
            assert self._reader is not None  # noqa: S101
            assert self._writer is not None  # noqa: S101
            body = _encoder.encode(list(items))
            try:
                self._writer.write(_LENGTH.pack(len(body)) + body)
                await self._writer.drain()
                size = _LENGTH.unpack(await self._reader.readexactly(_LENGTH.size))[0]
                reply = _reply.decode(await self._reader.readexactly(size))
            except (OSError, asyncio.IncompleteReadError) as exc:
                await self._lost(exc)
                raise Unavailable("the writer process stopped; retry", 1) from exc
        if reply.error == "unavailable":
            raise Unavailable(reply.message, 2)
        if reply.error is not None:
            raise RuntimeError(f"the writer process failed: {reply.message}")
        return [None if r is None else TypeConflict(r.message, r.details) for r in reply.results]

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
    from glowing_fiesta.logs import configure
    from glowing_fiesta.storage.sql import SqlStorage  # the parent's module imports us

    with sock, sock.makefile("rb") as stream:
        config = _read(stream)
        if config is None:
            return
        settings = msgspec.msgpack.decode(config, type=_Config)
        configure(settings.log_level, settings.log_format)
        storage = SqlStorage(settings.url, sqlite_synchronous=settings.sqlite_synchronous)
        while (body := _read(stream)) is not None:
            sock.sendall(_frame(_encoder.encode(_apply(storage, body))))
    storage.dispose()


def _read(stream: Any) -> bytes | None:
    """One message, or None at the end of the stream."""
    head = stream.read(_LENGTH.size)
    if len(head) < _LENGTH.size:
        return None
    return bytes(stream.read(_LENGTH.unpack(head)[0]))


def _apply(storage: Any, body: bytes) -> _Reply:
    from sqlalchemy.exc import OperationalError

    try:
        results = storage.apply_now(_items.decode(body))
    except OperationalError as exc:
        log.warning("writer_commit_refused", error=str(exc.orig))
        return _Reply(error="unavailable", message="the database is not accepting writes")
    except Exception as exc:  # the loop must survive anything one batch does
        log.exception("writer_commit_failed")
        return _Reply(error="failed", message=exc.__class__.__name__)
    return _Reply(results=[None if r is None else _Conflict(r.message, r.details) for r in results])


def _frame(body: bytes) -> bytes:
    return _LENGTH.pack(len(body)) + body


if __name__ == "__main__":
    _serve(socket.socket(fileno=int(sys.argv[1])))
