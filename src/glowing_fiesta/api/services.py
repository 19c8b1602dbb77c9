"""What the routes need, built once by the composition root and handed to the app."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from starlette.requests import Request

from glowing_fiesta.api.auth import Authenticator
from glowing_fiesta.api.typeguard import TypeGuard
from glowing_fiesta.ingest.validate import Rules
from glowing_fiesta.query import QueryService
from glowing_fiesta.queue.base import Queue
from glowing_fiesta.storage.base import Storage
from glowing_fiesta.telemetry import Telemetry


class Pingable(Protocol):
    async def ping(self) -> None:
        """Raise `Unavailable` unless the component answers now."""


@dataclass(slots=True)
class Services:
    storage: Storage
    queue: Queue
    query: QueryService
    auth: Authenticator
    telemetry: Telemetry
    rules: Rules
    max_body_bytes: int
    # Components /ready reports on, by the name it gives them.
    readiness: dict[str, Pingable] = field(default_factory=dict)
    type_guard: TypeGuard | None = None


def services_of(request: Request) -> Services:
    services: Services = request.app.state.services
    return services
