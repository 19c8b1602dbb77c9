"""Map domain errors to HTTP statuses and the SPEC's JSON error envelope."""

from __future__ import annotations

import msgspec
import structlog
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match

from glowing_fiesta.api.services import services_of
from glowing_fiesta.errors import (
    BadRequest,
    Forbidden,
    GlowingFiestaError,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    TypeConflict,
    Unauthenticated,
    Unavailable,
    UnsupportedEncoding,
    UnsupportedMediaType,
    ValidationError,
    _RetryLater,
)

log = structlog.get_logger(__name__)

# Set in a request's ASGI state once it may take effect whatever becomes of the request
# (a batch handed to the queue, a deletion begun): cancelled after that, its outcome is
# unknown, and it is not answered "retry" (`app.RequestTelemetry`).
COMMITTING = "gf_committing"

STATUS: dict[type[GlowingFiestaError], int] = {
    BadRequest: 400,
    Unauthenticated: 401,
    Forbidden: 403,
    NotFound: 404,
    TypeConflict: 409,
    PayloadTooLarge: 413,
    UnsupportedMediaType: 415,
    UnsupportedEncoding: 415,
    ValidationError: 422,
    RateLimited: 429,
    Unavailable: 503,
}


def status_of(exc: GlowingFiestaError) -> int:
    return STATUS.get(type(exc), 500)


def envelope(code: str, message: str, details: list[dict[str, object]] | None = None) -> bytes:
    body: dict[str, object] = {"code": code, "message": message}
    if details:
        body["details"] = details
    return msgspec.json.encode({"error": body})


def error_response(exc: GlowingFiestaError, headers: dict[str, str] | None = None) -> Response:
    out = dict(headers or {})
    if isinstance(exc, _RetryLater):
        out["Retry-After"] = str(exc.retry_after)
    if isinstance(exc, Unauthenticated):
        out["WWW-Authenticate"] = 'Bearer realm="glowing-fiesta"'
    if isinstance(exc, UnsupportedEncoding):
        out["Accept-Encoding"] = exc.accepted
    return Response(
        envelope(exc.code, exc.message, [d.as_dict() for d in exc.details]),
        status_code=status_of(exc),
        media_type="application/json",
        headers=out,
    )


async def on_domain_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GlowingFiestaError)  # noqa: S101
    headers: dict[str, str] = getattr(request.state, "ratelimit_headers", {})
    return error_response(exc, headers)


async def on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)  # noqa: S101
    if _under_api(request.url.path):
        # SPEC §2: every request under /api is authenticated, and counted against its
        # key's limit, a path that exists or not: no key is a 401 here, not a 404.
        try:
            await services_of(request).auth.request(request, None)
        except GlowingFiestaError as refused:
            return await on_domain_error(request, refused)
    if exc.status_code == 404:
        body = envelope("not_found", f"no route for {request.url.path}")
    elif exc.status_code == 405:
        body = envelope("method_not_allowed", f"{request.method} is not allowed here")
    else:  # pragma: no cover - Starlette raises only the two above for routing
        body = envelope("http_error", str(exc.detail))
    headers = {**getattr(request.state, "ratelimit_headers", {}), **(exc.headers or {})}
    if exc.status_code == 405:
        headers["Allow"] = ", ".join(_allowed_methods(request))
    return Response(
        body, status_code=exc.status_code, media_type="application/json", headers=headers
    )


def _under_api(path: str) -> bool:
    return path == "/api" or path.startswith("/api/")


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this path. Starlette's own Allow header names
    only the first route that matched the path; GET and DELETE /api/metrics/{metric}
    are two routes."""
    allowed: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches(request.scope)
        if match is not Match.NONE:
            allowed.update(getattr(route, "methods", None) or ())
    return sorted(allowed)


async def on_client_gone(request: Request, exc: Exception) -> Response:
    """The client closed the connection before its request was whole (wrk does, at the
    end of every run): nothing was written and nobody is left to answer. Not an error
    of ours, so no traceback."""
    log.info("client_disconnected", path=request.url.path)
    return Response(
        envelope("bad_request", "the connection closed before the request was complete"),
        status_code=400,
        media_type="application/json",
    )


def internal_error(headers: dict[str, str]) -> Response:
    """The 500 of a request that hit a bug (logged as `unhandled_error`)."""
    return Response(
        envelope("internal_error", "an internal error occurred"),
        status_code=500,
        media_type="application/json",
        headers=headers,
    )
