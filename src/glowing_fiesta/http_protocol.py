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
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_OneWrite(transport, asyncio.get_running_loop()))  # type: ignore[arg-type]

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to what its parser rejects (it has logged `msg`), as the
        error envelope; the connection closes, as uvicorn's own answer closes it."""
        head = [b"HTTP/1.1 400 Bad Request\r\n"]
        head += [
            name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers
        ]
        head += [
            b"content-type: application/json\r\n",
            b"content-length: " + str(len(_NOT_HTTP)).encode("ascii") + b"\r\n",
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + _NOT_HTTP)
        self.transport.close()
