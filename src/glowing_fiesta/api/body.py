"""Read request bodies without trusting the client: limits enforced while reading.

On ASGI terms (the request's headers and `receive`), so that both the Starlette
routes and the ingest endpoints (api/routes_ingest.py, plain ASGI apps) use them.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect
from starlette.types import Receive

from glowing_fiesta.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType


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
