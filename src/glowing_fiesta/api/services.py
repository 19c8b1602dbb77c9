"""What the routes need, built once by the composition root and handed to the app."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from glowing_fiesta.api.auth import Authenticator
from glowing_fiesta.ingest.validate import Rules
from glowing_fiesta.query import QueryService
from glowing_fiesta.queue.base import Queue
from glowing_fiesta.storage.base import Storage
from glowing_fiesta.telemetry import Telemetry


@dataclass(slots=True)
class Services:
    storage: Storage
    queue: Queue
    query: QueryService
    auth: Authenticator
    telemetry: Telemetry
    rules: Rules
    max_body_bytes: int


def services_of(request: Request) -> Services:
    services: Services = request.app.state.services
    return services
