"""uvicorn's httptools protocol, sending each response's head and body in one write,
and the error envelope for a request that is not HTTP.

uvicorn writes a response's status line and headers, then its body, with two
`transport.write` calls; on an idle socket each is a send of its own, so every small
response (a 202 is ~200 bytes) costs two syscalls and two TCP segments. Measured under
single-point writes: `write` was 19% of `serve`'s event-loop thread. Here the head is
held until the body's first write (or the end of the loop step, for a response with no
body) and both go out together.

A request the HTTP parser rejects (a bad `Content-Length`, a raw space in the path)
never reaches the application: uvicorn answers it with a plain-text 400 of its own.
Here it gets the JSON error envelope every other bad request gets (SPEC §2).

httptools sets no bound on a request's head: it holds a header line of any length until
it ends, so one client without a key could make `serve` hold hundreds of megabytes
(2.5 times what it sent) and keep its loop busy for seconds. Here a head longer than
`MAX_HEAD_BYTES` gets the envelope's 400 and the connection is closed, as uvicorn's
h11 protocol does past its 16 KiB.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from glowing_fiesta.api.errors import envelope

_NOT_HTTP = envelope(
    "bad_request",
    "the request is not valid HTTP/1.1 (its request line, headers or framing); "
    "the connection is closed",
)
# The request line and headers together; the longest a client of this API needs is a
# query's URL, well under this.
MAX_HEAD_BYTES = 64 * 1024
_HEAD_TOO_LONG = envelope(
    "bad_request",
    f"the request line and headers are over {MAX_HEAD_BYTES:,} bytes; the connection is closed",
)


class _OneWrite:
    """A transport that joins a response head with the write that follows it."""

    __slots__ = ("_flush", "_head", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._head: bytes | None = None
        self._flush: asyncio.Handle | None = None

    def write(self, data: bytes) -> None:
        if self._head is not None:
            head, self._head = self._head, None
            assert self._flush is not None  # noqa: S101
            self._flush.cancel()
            self._transport.write(head + data)
        elif data.startswith(b"HTTP/") and data.endswith(b"\r\n\r\n"):
            self._head = data
            self._flush = self._loop.call_soon(self._write_head)
        else:
            self._transport.write(data)

    def _write_head(self) -> None:
        if self._head is not None:
            head, self._head = self._head, None
            self._transport.write(head)

    def close(self) -> None:
        self._write_head()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class OneWriteHttpToolsProtocol(HttpToolsProtocol):
    # Bytes received while a request's head is not complete; None while its body comes.
    _head_bytes: int | None = 0
    # Heads and messages completed: a chunk in which one completed holds bytes of a
    # body or of a head that ended, and is not counted (at most one read's worth).
    _ends = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_OneWrite(transport, asyncio.get_running_loop()))  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        ends = self._ends
        super().data_received(data)
        if self._head_bytes is not None and self._ends == ends:
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES and not self.transport.is_closing():
                self.logger.warning("Request head over %d bytes.", MAX_HEAD_BYTES)
                self._refuse(_HEAD_TOO_LONG)

    def on_headers_complete(self) -> None:
        self._head_bytes = None
        self._ends += 1
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._head_bytes = 0  # the next request's head, on a kept-alive connection
        self._ends += 1
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to what its parser rejects (it has logged `msg`), as the
        error envelope; the connection closes, as uvicorn's own answer closes it."""
        self._refuse(_NOT_HTTP)

    def _refuse(self, body: bytes) -> None:
        head = [b"HTTP/1.1 400 Bad Request\r\n"]
        head += [
            name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers
        ]
        head += [
            b"content-type: application/json\r\n",
            b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + body)
        self.transport.close()
