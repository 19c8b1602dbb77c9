"""The OpenAPI 3.1 document, built from the same msgspec types that decode requests."""

from __future__ import annotations

from functools import cache
from typing import Any

import msgspec

from glowing_fiesta import __version__
from glowing_fiesta.ingest.validate import Accepted, BatchIn, CounterIn, ValueIn


class ErrorDetail(msgspec.Struct, omit_defaults=True):
    message: str
    index: int | None = None
    field: str | None = None


class ErrorBody(msgspec.Struct, omit_defaults=True):
    code: str
    message: str
    details: list[ErrorDetail] = []


class ErrorEnvelope(msgspec.Struct):
    error: ErrorBody


class SeriesPoint(msgspec.Struct):
    t: int
    value: float | None


class SeriesOut(msgspec.Struct, rename={"start": "from", "end": "to"}):
    metric: str
    type: str
    interval: str
    agg: str
    tz: str
    start: float
    end: float
    points: list[SeriesPoint]


class MetricOut(msgspec.Struct):
    name: str
    type: str
    stat_key: str
    created_at: float
    last_point_at: float | None


class MetricList(msgspec.Struct):
    metrics: list[MetricOut]
    next_cursor: str | None


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(name: str) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": _ref(name)}}}


# Every authenticated response carries the key's rate-limit headers, errors included
# (SPEC §2.4); a 401 has no key to count against.
_RATE_LIMIT_HEADERS = {
    name: {"$ref": f"#/components/headers/{name}"}
    for name in ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset")
}
_RETRY_AFTER = {"Retry-After": {"$ref": "#/components/headers/Retry-After"}}
_HEADERS = {
    "X-RateLimit-Limit": "Requests the key may make per minute",
    "X-RateLimit-Remaining": "Requests left in the current minute",
    "X-RateLimit-Reset": "Whole seconds until the count resets",
    "Retry-After": "Whole seconds to wait before trying again (at least 1)",
    "WWW-Authenticate": "`Bearer`: the scheme a key is sent with",
    "Accept-Encoding": "The body codings the service decodes (on a 415 for one it does not)",
}
_TEXT_HEADERS = {"WWW-Authenticate", "Accept-Encoding"}


def _error(status: int, description: str) -> dict[str, Any]:
    headers: dict[str, Any] = dict(_RATE_LIMIT_HEADERS)
    if status == 401:
        headers = {"WWW-Authenticate": {"$ref": "#/components/headers/WWW-Authenticate"}}
    if status in (429, 503):
        headers |= _RETRY_AFTER
    if status == 415:
        headers["Accept-Encoding"] = {"$ref": "#/components/headers/Accept-Encoding"}
    return {"description": description, "headers": headers, **_json("ErrorEnvelope")}


_ERRORS = {
    str(s): _error(s, d)
    for s, d in [
        (400, "Not JSON, or not the expected shape"),
        (401, "No key, unknown or revoked key"),
        (403, "The key lacks the scope"),
        (404, "Unknown metric or route"),
        (405, "The path does not take this method; Allow names those it takes"),
        (409, "Type conflict"),
        (413, "Body or batch too large"),
        (415, "Not application/json, or a Content-Encoding other than gzip or deflate"),
        (422, "Invalid fields; details name them"),
        (429, "Rate limited; Retry-After set"),
        (503, "Unavailable; Retry-After set"),
    ]
}
# `Authorization: Bearer <key>` or `X-API-Key: <key>`, either one.
_SECURITY: list[dict[str, list[str]]] = [{"bearer": []}, {"apiKey": []}]


def _ok(description: str, content: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"description": description, "headers": dict(_RATE_LIMIT_HEADERS), **(content or {})}


_QUERY_PARAMS = [
    {"name": n, "in": "query", "required": False, "schema": s, "description": d}
    for n, s, d in [
        ("from", {"type": "string"}, "Unix seconds or RFC 3339; default 24 h before `to`"),
        ("to", {"type": "string"}, "Unix seconds or RFC 3339 (exclusive); default now"),
        (
            "interval",
            {"enum": ["minute", "5minute", "hour", "day", "week", "month"]},
            "Bucket width; default hour",
        ),
        (
            "agg",
            {"enum": ["sum", "avg", "min", "max", "count", "p50", "p90", "p95", "p99"]},
            "Aggregate; default sum for counters, avg for values",
        ),
        ("tz", {"type": "string"}, "IANA time zone for bucket alignment; default UTC"),
        ("fill", {"enum": ["zero", "null", "none"]}, "What empty buckets show"),
        ("format", {"enum": ["json", "csv"]}, "Response format; default json"),
    ]
]


def _post(summary: str, schema: str) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "security": _SECURITY,
            "parameters": [
                {
                    "name": "Content-Encoding",
                    "in": "header",
                    "required": False,
                    "schema": {"enum": ["gzip", "x-gzip", "deflate", "identity"]},
                    "description": "The body may be compressed; decoded, it is held to the "
                    "same size limit",
                }
            ],
            "requestBody": {"required": True, **_json(schema)},
            "responses": {
                "202": _ok("Durably accepted", _json("Accepted")),
                **_ERRORS,
            },
        }
    }


@cache
def document() -> bytes:
    _, components = msgspec.json.schema_components(
        [CounterIn, ValueIn, BatchIn, Accepted, ErrorEnvelope, SeriesOut, MetricList],
        ref_template="#/components/schemas/{name}",
    )
    # Checked on decoding, as a 422 (none) or a 413 (over 1,000), not by the schema type.
    components["BatchIn"]["properties"]["points"] |= {"minItems": 1, "maxItems": 1000}
    series_content = {
        "content": {
            "application/json": {"schema": _ref("SeriesOut")},
            # `format=csv`, or an Accept header that prefers text/csv.
            "text/csv": {"schema": {"type": "string", "description": "`t,value` rows"}},
        }
    }
    series_get = {
        "summary": "Aggregated series",
        "security": _SECURITY,
        "parameters": _QUERY_PARAMS,
        "responses": {"200": _ok("The series", series_content), **_ERRORS},
    }
    doc = {
        "openapi": "3.1.0",
        "info": {"title": "Glowing Fiesta", "version": __version__},
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
            "headers": {
                name: {
                    "description": d,
                    "schema": {"type": "string" if name in _TEXT_HEADERS else "integer"},
                }
                for name, d in _HEADERS.items()
            },
        },
        "paths": {
            "/api/metrics/counter": _post("Record a counter", "CounterIn"),
            "/api/metrics/value": _post("Record a value", "ValueIn"),
            "/api/metrics/batch": _post("Record up to 1,000 points", "BatchIn"),
            "/api/metrics": {
                "get": {
                    "summary": "List metrics",
                    "security": _SECURITY,
                    "parameters": [
                        {"name": "prefix", "in": "query", "schema": {"type": "string"}},
                        {
                            "name": "limit",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
                        },
                        {"name": "cursor", "in": "query", "schema": {"type": "string"}},
                    ],
                    "responses": {
                        "200": _ok("A page", _json("MetricList")),
                        **_ERRORS,
                    },
                }
            },
            "/api/metrics/{metric}": {
                "parameters": [
                    {"name": "metric", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "get": series_get,
                "delete": {
                    "summary": "Delete a metric and its data",
                    "security": _SECURITY,
                    "responses": {"204": _ok("Deleted"), **_ERRORS},
                },
            },
            "/api/series": {
                "get": {
                    **series_get,
                    "parameters": [
                        {
                            "name": "metric",
                            "in": "query",
                            "required": True,
                            "schema": {"type": "string"},
                        },
                        *_QUERY_PARAMS,
                    ],
                }
            },
            "/health": {
                "get": {"summary": "Liveness", "responses": {"200": {"description": "Alive"}}}
            },
            "/metrics": {
                "get": {
                    "summary": "The service's own metrics (Prometheus text)",
                    "responses": {"200": {"description": "Metrics"}},
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "responses": {"200": {"description": "OpenAPI 3.1"}},
                }
            },
            "/ready": {
                "get": {
                    "summary": "Readiness",
                    "responses": {
                        "200": {"description": "Ready"},
                        "503": {"description": "Not ready"},
                    },
                }
            },
        },
    }
    return msgspec.json.encode(doc)
