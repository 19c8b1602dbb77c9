"""POST /api/metrics/counter, /value and /batch: authorise, validate whole, enqueue, answer."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from glowing_fiesta.api.body import read_limited, require_json
from glowing_fiesta.api.services import Services, services_of
from glowing_fiesta.ingest.validate import decode_batch, decode_single, encode_accepted
from glowing_fiesta.model import MetricType, PointBatch, Scope


async def _accept(request: Request, services: Services, batch: PointBatch) -> Response:
    if services.type_guard is not None:
        await services.type_guard.check(batch)
    # Returns only once the batch is durable (committed, or persisted by the broker).
    await services.queue.put(batch)
    services.telemetry.count_points(batch)
    return Response(
        encode_accepted(len(batch)),
        status_code=202,
        media_type="application/json",
        headers=request.state.ratelimit_headers,
    )


async def _body(request: Request, services: Services) -> bytes:
    await services.auth.request(request, Scope.WRITE)
    require_json(request)
    return await read_limited(request, services.max_body_bytes)


async def post_counter(request: Request) -> Response:
    services = services_of(request)
    body = await _body(request, services)
    return await _accept(request, services, decode_single(body, MetricType.COUNTER, services.rules))


async def post_value(request: Request) -> Response:
    services = services_of(request)
    body = await _body(request, services)
    return await _accept(request, services, decode_single(body, MetricType.VALUE, services.rules))


async def post_batch(request: Request) -> Response:
    services = services_of(request)
    body = await _body(request, services)
    return await _accept(request, services, decode_batch(body, services.rules))
