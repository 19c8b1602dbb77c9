"""GET /api/metrics, GET /api/metrics/{metric}, GET /api/series, DELETE /api/metrics/{metric}."""

from __future__ import annotations

import io
import time
from datetime import datetime
from enum import StrEnum
from typing import TypeVar

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from glowing_fiesta.api.errors import COMMITTING
from glowing_fiesta.api.services import services_of
from glowing_fiesta.errors import Detail, ValidationError
from glowing_fiesta.model import Agg, Fill, Interval, Metric, Scope
from glowing_fiesta.query import Series, SeriesQuery, metric_name
from glowing_fiesta.timeutil import parse_time, zone

E = TypeVar("E", bound=StrEnum)
DEFAULT_RANGE = 86400
DELETE_WAITS_SECONDS = 5.0  # for the batches queued before a DELETE to be written


def _invalid(field: str, message: str) -> ValidationError:
    return ValidationError(f"{field} {message}", [Detail(message, field=field)])


def _enum(request: Request, name: str, kind: type[E]) -> E | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    try:
        return kind(raw)
    except ValueError:
        allowed = ", ".join(k.value for k in kind)
        raise _invalid(name, f"must be one of {allowed} (got {raw!r})") from None


def _time(request: Request, name: str, default: float) -> float:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        return parse_time(raw)
    except ValueError as exc:
        raise _invalid(name, str(exc)) from None


def _quality(accept: str, *ranges: str) -> float:
    """The q an Accept header gives the first of `ranges` it names (most specific
    first), 0 if it names none."""
    named: dict[str, float] = {}
    for item in accept.split(","):
        media, *params = item.split(";")
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = 0.0
        named.setdefault(media.strip().lower(), q)
    return next((named[r] for r in ranges if r in named), 0.0)


def prefers_csv(accept: str) -> bool:
    """CSV when the client names `text/csv` (media types are case-insensitive) as
    acceptable (q > 0) and likes it at least as much as JSON."""
    csv = _quality(accept, "text/csv")
    return csv > 0 and csv >= _quality(accept, "application/json", "application/*", "*/*")


def _series_query(request: Request, metric: str) -> tuple[SeriesQuery, str]:
    now = time.time()
    end = _time(request, "to", now)
    start = _time(request, "from", end - DEFAULT_RANGE)
    fmt = request.query_params.get("format")
    if fmt is None:
        fmt = "csv" if prefers_csv(request.headers.get("accept", "")) else "json"
    if fmt not in ("json", "csv"):
        raise _invalid("format", f"must be json or csv (got {fmt!r})")
    query = SeriesQuery(
        metric=metric,
        start=start,
        end=end,
        interval=_enum(request, "interval", Interval) or Interval.HOUR,
        agg=_enum(request, "agg", Agg),
        tz=request.query_params.get("tz") or "UTC",
        fill=_enum(request, "fill", Fill),
    )
    return query, fmt


_EXACT = float(2**53)


def _number(x: float) -> float | int:
    """Whole numbers without ".0" (counts, sums of counters), up to 2**53, where every
    integer is still a double: past it `int` would print a double's hundreds of
    digits (1.8e308 has 309) for a precision it does not have."""
    return int(x) if x.is_integer() and -_EXACT <= x <= _EXACT else x


class _Point(msgspec.Struct, gc=False):
    """A point of a series as JSON: `{"t": ..., "value": ...}`. Encoding these is ~40%
    cheaper than building a dict per point (a day of minutes is 1,440)."""

    t: int
    value: float | None


def series_json(series: Series) -> bytes:
    return msgspec.json.encode(
        {
            "metric": series.metric.name,
            "type": series.metric.type.value,
            "interval": series.interval.value,
            "agg": series.agg.value,
            "tz": series.tz,
            "from": _number(series.start),
            "to": _number(series.end),
            "points": [_Point(t, v) for t, v in series.points],
        }
    )


def series_csv(series: Series) -> bytes:
    tz = zone(series.tz)
    out = io.StringIO()
    out.write("t,value\n")
    for t, v in series.points:
        stamp = datetime.fromtimestamp(t, tz).isoformat()
        out.write(f"{stamp},{'' if v is None else repr(_number(v))}\n")
    return out.getvalue().encode("utf-8")


async def _answer_series(request: Request, metric: str | None) -> Response:
    services = services_of(request)
    await services.auth.request(request, Scope.READ)
    if metric is None:
        raise _invalid("metric", "is required")
    query, fmt = _series_query(request, metric)
    series = await services.query.series(query)
    headers = request.state.ratelimit_headers
    if fmt == "csv":
        return Response(series_csv(series), media_type="text/csv; charset=utf-8", headers=headers)
    return Response(series_json(series), media_type="application/json", headers=headers)


async def get_series(request: Request) -> Response:
    return await _answer_series(request, request.path_params["metric"])


async def get_series_by_param(request: Request) -> Response:
    return await _answer_series(request, request.query_params.get("metric"))


def _metric_json(m: Metric) -> dict[str, object]:
    return {
        "name": m.name,
        "type": m.type.value,
        "stat_key": m.stat_key,
        "created_at": m.created_at,
        "last_point_at": m.last_point_at,
    }


async def list_metrics(request: Request) -> Response:
    services = services_of(request)
    await services.auth.request(request, Scope.READ)
    raw_limit = request.query_params.get("limit") or "100"
    # ASCII digits only: int() also takes " 5", "+5", "1_0" and other scripts' digits.
    if not (raw_limit.isascii() and raw_limit.isdigit()):
        raise _invalid("limit", f"must be a whole number (got {raw_limit!r})")
    limit = int(raw_limit)
    page, cursor = await services.query.list_metrics(
        request.query_params.get("prefix", ""), limit, request.query_params.get("cursor")
    )
    body = msgspec.json.encode({"metrics": [_metric_json(m) for m in page], "next_cursor": cursor})
    return Response(body, media_type="application/json", headers=request.state.ratelimit_headers)


async def delete_metric(request: Request) -> Response:
    services = services_of(request)
    await services.auth.request(request, Scope.ADMIN)
    # The deletion takes everything acknowledged before it, as in the embedded layout:
    # batches still queued for a worker are written first (or the deletion is refused).
    # Written after it, they would create the metric again, or, behind a write of the
    # other type, be dropped.
    name = metric_name(request.path_params["metric"])  # a 422 before any wait
    await services.queue.wait_written(DELETE_WAITS_SECONDS)
    setattr(request.state, COMMITTING, True)
    await services.query.delete(name)
    return Response(status_code=204, headers=request.state.ratelimit_headers)
