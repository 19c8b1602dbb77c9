"""Endpoints without a key: /health, /ready, /metrics (Prometheus), /openapi.json."""

from __future__ import annotations

import msgspec
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import Response

from glowing_fiesta.api.openapi import document
from glowing_fiesta.api.services import services_of
from glowing_fiesta.errors import GlowingFiestaError

_OK = msgspec.json.encode({"status": "ok"})


async def health(request: Request) -> Response:
    return Response(_OK, media_type="application/json")


async def ready(request: Request) -> Response:
    services = services_of(request)
    checks: dict[str, str] = {}
    for name, component in services.readiness.items():
        try:
            await component.ping()
            checks[name] = "ok"
        except GlowingFiestaError as exc:
            checks[name] = exc.message
        except Exception as exc:  # readiness must answer whatever the component does
            checks[name] = f"{exc.__class__.__name__}: {exc}"
    failed = [name for name, state in checks.items() if state != "ok"]
    body = {"status": "ok" if not failed else "unavailable", "checks": checks}
    if failed:
        body["message"] = f"not ready: {', '.join(failed)} failed"
    return Response(
        msgspec.json.encode(body), status_code=503 if failed else 200, media_type="application/json"
    )


async def prometheus(request: Request) -> Response:
    services = services_of(request)
    try:
        # Read now: under `serve --workers N` with Redis, the gauge shows the latest
        # reading of any process, and this process's last one may be old.
        depth = await services.queue.refresh_depth()
    except Exception:  # the metrics must answer when the broker does not (see /ready)
        depth = services.queue.depth()
    services.telemetry.queue_depth.set(depth)
    return Response(services.telemetry.exposition(), media_type=CONTENT_TYPE_LATEST)


async def openapi(request: Request) -> Response:
    return Response(document(), media_type="application/json")
