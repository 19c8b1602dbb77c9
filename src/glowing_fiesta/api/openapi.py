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


_ERRORS = {
    str(s): {"description": d, **_json("ErrorEnvelope")}
    for s, d in [
        (400, "Not JSON, or not the expected shape"),
        (401, "No key, unknown or revoked key"),
        (403, "The key lacks the scope"),
        (404, "Unknown metric or route"),
        (409, "Type conflict"),
        (413, "Body or batch too large"),
        (415, "Not application/json"),
        (422, "Invalid fields; details name them"),
        (429, "Rate limited; Retry-After set"),
        (503, "Unavailable; Retry-After set"),
    ]
}

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
            "security": [{"bearer": []}],
            "requestBody": {"required": True, **_json(schema)},
            "responses": {
                "202": {"description": "Durably accepted", **_json("Accepted")},
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
    series_get = {
        "summary": "Aggregated series",
        "security": [{"bearer": []}],
        "parameters": _QUERY_PARAMS,
        "responses": {
            "200": {
                "description": "The series",
                **_json("SeriesOut"),
            },
            **_ERRORS,
        },
    }
    doc = {
        "openapi": "3.1.0",
        "info": {"title": "Glowing Fiesta", "version": __version__},
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "paths": {
            "/api/metrics/counter": _post("Record a counter", "CounterIn"),
            "/api/metrics/value": _post("Record a value", "ValueIn"),
            "/api/metrics/batch": _post("Record up to 1,000 points", "BatchIn"),
            "/api/metrics": {
                "get": {
                    "summary": "List metrics",
                    "security": [{"bearer": []}],
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
                        "200": {"description": "A page", **_json("MetricList")},
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
                    "security": [{"bearer": []}],
                    "responses": {"204": {"description": "Deleted"}, **_ERRORS},
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
