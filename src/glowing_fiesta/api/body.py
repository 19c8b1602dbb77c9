"""Read request bodies without trusting the client: limits enforced while reading.

On ASGI terms (the request's headers and `receive`), so that both the Starlette
routes and the ingest endpoints (api/routes_ingest.py, plain ASGI apps) use them.
"""

from __future__ import annotations

import zlib

from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect
from starlette.types import Receive

from glowing_fiesta.errors import (
    BadRequest,
    PayloadTooLarge,
    UnsupportedEncoding,
    UnsupportedMediaType,
)

# zlib's window bits for each content coding we decode: gzip's header and trailer, or
# zlib's (HTTP's "deflate" is RFC 1950's zlib format).
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


async def read_body(headers: Headers, receive: Receive, limit: int) -> bytes:
    """The whole body as sent, decoded from its `Content-Encoding`; at most `limit`
    bytes both as received and once decoded, so a small compressed body cannot grow
    into a large one in memory."""
    wbits = _coding(headers.get("content-encoding"))
    raw = await read_limited(headers, receive, limit)
    return raw if wbits is None else _decode(raw, wbits, limit)


def _coding(header: str | None) -> int | None:
    """zlib's window bits for the body's one coding, or None for none; 415 for codings
    we do not decode and for more than one (nobody sends gzip over gzip)."""
    if header is None:
        return None
    codings = [c.strip().lower() for c in header.split(",")]
    codings = [c for c in codings if c and c != "identity"]
    if not codings:
        return None
    if len(codings) == 1 and codings[0] in _WBITS:
        return _WBITS[codings[0]]
    raise UnsupportedEncoding(
        f"Content-Encoding {header.strip()!r} is not supported; "
        f"send the body in one of: {UnsupportedEncoding.accepted}"
    )


def _decode(raw: bytes, wbits: int, limit: int) -> bytes:
    out: list[bytes] = []
    size = 0
    rest = raw
    while True:  # gzip may hold several members one after another (RFC 1952 §2.2)
        stream = zlib.decompressobj(wbits)
        try:
            part = stream.decompress(rest, limit - size + 1)
        except zlib.error:
            raise BadRequest("the body is not valid for its Content-Encoding") from None
        size += len(part)
        if size > limit:
            raise PayloadTooLarge(f"the decoded body is larger than the {limit:,}-byte limit")
        out.append(part)
        if not stream.eof:
            raise BadRequest("the body ends before its Content-Encoding's end")
        rest = stream.unused_data
        if not rest or wbits == zlib.MAX_WBITS:
            break
    if rest:
        raise BadRequest("the body has data after its Content-Encoding's end")
    return b"".join(out)


async def read_limited(headers: Headers, receive: Receive, limit: int) -> bytes:
    """The whole body, or `PayloadTooLarge` as soon as it passes `limit` bytes.

    A declared Content-Length over the limit is refused before reading; a lying one or
    an endless chunked body is cut off at the limit, so no more than `limit` bytes are
    ever buffered. `ClientDisconnect` if the client goes away first.
    """
    declared = headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise PayloadTooLarge(f"the body is larger than the {limit:,}-byte limit")
        except ValueError:
            raise BadRequest("Content-Length is not a number") from None
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the body is larger than the {limit:,}-byte limit")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def require_json(headers: Headers) -> None:
    """415 unless the body is declared as JSON (a missing Content-Type is tolerated)."""
    ctype = headers.get("content-type")
    if ctype is None:
        return
    media = ctype.split(";", 1)[0].strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        raise UnsupportedMediaType(
            f"this endpoint takes application/json, not {media or 'an empty type'}"
        )
