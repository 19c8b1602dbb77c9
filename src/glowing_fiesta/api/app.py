"""The Starlette application: routes, error mapping, request telemetry, lifecycle."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Protocol

import structlog
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from glowing_fiesta.api import errors, routes_ingest, routes_query, routes_service
from glowing_fiesta.api.errors import COMMITTING, error_response, internal_error
from glowing_fiesta.api.services import Services
from glowing_fiesta.errors import GlowingFiestaError, Unavailable
from glowing_fiesta.telemetry import Telemetry

log = structlog.get_logger(__name__)
_STOPPING = Unavailable("the service is shutting down", 1)


class Lifecycle(Protocol):
    """What runs beside the routes (the writer, periodic jobs): started and stopped
    with the app."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class RequestTelemetry:
    """Pure ASGI middleware: count requests by route and status, time them; answer a
    request that hit a bug with the envelope's 500; and answer a request cancelled
    before its response began with the envelope's 503.

    The 500 is sent here, not by an `Exception` handler of Starlette's: its
    ServerErrorMiddleware raises the exception again once the handler has answered, and
    uvicorn then closes the connection, as it must for a response cut short. A
    keep-alive client's next request on that connection failed (a POST its client
    library does not send again), and uvicorn logged the error a second time. Only a
    response cut short still closes its connection.

    uvicorn cancels the requests still running when its graceful shutdown ends (10 s
    after SIGTERM), such as one whose body is still arriving, and answers them with a
    plain-text 500 of its own. One cancelled before it could take effect (`COMMITTING`)
    stored nothing: the client may send it again (SPEC §2: 503, Retry-After). One
    cancelled after (its batch queued, and written at the drain, or not) keeps
    uvicorn's 500: its outcome is not known."""

    def __init__(self, app: ASGIApp, telemetry: Telemetry) -> None:
        self.app = app
        self.telemetry = telemetry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0  # no response begun
        whole = False  # the response's last body part sent

        async def send_wrapper(message: Message) -> None:
            nonlocal status, whole
            if message["type"] == "http.response.start":
                status = message["status"]
            elif not message.get("more_body", False):
                whole = True
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except asyncio.CancelledError:
            if status or scope["state"].get(COMMITTING):
                raise
            status = 503
            log.warning("request_cancelled", reason="the server is stopping")
            await error_response(_STOPPING, {"Connection": "close"})(scope, receive, send)
        except Exception:
            if status and not whole:
                raise  # uvicorn logs it and closes the connection
            log.exception("unhandled_error", path=scope["path"])
            if not status:
                status = 500
                headers = scope["state"].get("ratelimit_headers", {})
                await internal_error(headers)(scope, receive, send)
        finally:
            status = status or 500
            endpoint = scope.get("endpoint")
            route = getattr(endpoint, "__name__", "unmatched")
            self.telemetry.request_done(route, status, time.perf_counter() - started)


def create_app(services: Services, lifecycle: Lifecycle) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await lifecycle.start()
        try:
            yield
        finally:
            await lifecycle.stop()

    routes = [
        Route("/api/metrics/counter", routes_ingest.post_counter, methods=["POST"]),
        Route("/api/metrics/value", routes_ingest.post_value, methods=["POST"]),
        Route("/api/metrics/batch", routes_ingest.post_batch, methods=["POST"]),
        Route("/api/metrics", routes_query.list_metrics, methods=["GET"]),
        Route("/api/metrics/{metric:path}", routes_query.get_series, methods=["GET"]),
        Route("/api/metrics/{metric:path}", routes_query.delete_metric, methods=["DELETE"]),
        Route("/api/series", routes_query.get_series_by_param, methods=["GET"]),
        Route("/health", routes_service.health, methods=["GET"]),
        Route("/ready", routes_service.ready, methods=["GET"]),
        Route("/metrics", routes_service.prometheus, methods=["GET"]),
        Route("/openapi.json", routes_service.openapi, methods=["GET"]),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={
            GlowingFiestaError: errors.on_domain_error,
            HTTPException: errors.on_http_error,
            ClientDisconnect: errors.on_client_gone,
        },
    )
    app.state.services = services
    app.add_middleware(RequestTelemetry, telemetry=services.telemetry)
    return app
