"""POST /api/metrics/counter, /value and /batch: authorise, validate whole, enqueue, answer.

Each is a plain ASGI endpoint in Starlette's router rather than a `Request → Response`
function: on a single-point write the request and response objects (and the wrapper
that makes them) cost about a sixth of `serve`'s time a request (docs/performance.md).
Everything else is the router's as before: routing, the middleware, and the exception
handlers, which render every error raised here with the rate-limit headers left in the
request's state.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.datastructures import Headers
from starlette.types import Receive, Scope, Send

from glowing_fiesta.api.body import read_body, require_json
from glowing_fiesta.api.errors import COMMITTING
from glowing_fiesta.api.services import Services
from glowing_fiesta.ingest.validate import Rules, decode_batch, decode_single, encode_accepted
from glowing_fiesta.model import MetricType, PointBatch
from glowing_fiesta.model import Scope as KeyScope

_JSON = [(b"content-type", b"application/json")]


class IngestEndpoint:
    """One ingest route: `decode` turns the body into a validated batch."""

    __slots__ = ("__name__", "_decode")

    def __init__(self, name: str, decode: Callable[[bytes, Rules], PointBatch]) -> None:
        # The route's label in `gf_http_requests_total`, as a function endpoint's name is.
        self.__name__ = name
        self._decode = decode

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        services: Services = scope["app"].state.services
        headers = Headers(scope=scope)
        await services.auth.admit(scope, headers, KeyScope.WRITE)
        require_json(headers)
        batch = self._decode(
            await read_body(headers, receive, services.max_body_bytes), services.rules
        )
        scope["state"][COMMITTING] = True
        if services.type_guard is not None:
            await services.type_guard.check(batch)
        # Returns only once the batch is durable (committed, or persisted by the broker).
        await services.queue.put(batch)
        services.telemetry.count_points(batch)
        body = encode_accepted(len(batch))
        raw = [
            (name.lower().encode("latin-1"), value.encode("latin-1"))
            for name, value in scope["state"]["ratelimit_headers"].items()
        ]
        raw.append((b"content-length", str(len(body)).encode("latin-1")))
        await send({"type": "http.response.start", "status": 202, "headers": raw + _JSON})
        await send({"type": "http.response.body", "body": body})


post_counter = IngestEndpoint(
    "post_counter", lambda body, rules: decode_single(body, MetricType.COUNTER, rules)
)
post_value = IngestEndpoint(
    "post_value", lambda body, rules: decode_single(body, MetricType.VALUE, rules)
)
post_batch = IngestEndpoint("post_batch", decode_batch)
