"""Read request bodies without trusting the client: limits enforced while reading."""

from __future__ import annotations

from starlette.requests import Request

from glowing_fiesta.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType


async def read_limited(request: Request, limit: int) -> bytes:
    """The whole body, or `PayloadTooLarge` as soon as it passes `limit` bytes.

    A declared Content-Length over the limit is refused before reading; a lying one or
    an endless chunked body is cut off at the limit, so no more than `limit` bytes are
    ever buffered.
    """
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise PayloadTooLarge(f"the body is larger than the {limit:,}-byte limit")
        except ValueError:
            raise BadRequest("Content-Length is not a number") from None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the body is larger than the {limit:,}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


def require_json(request: Request) -> None:
    """415 unless the body is declared as JSON (a missing Content-Type is tolerated)."""
    ctype = request.headers.get("content-type")
    if ctype is None:
        return
    media = ctype.split(";", 1)[0].strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        raise UnsupportedMediaType(
            f"this endpoint takes application/json, not {media or 'an empty type'}"
        )
