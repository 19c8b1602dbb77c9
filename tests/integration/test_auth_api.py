"""Keys, scopes, rate limits and the service endpoints, through the real app."""

from __future__ import annotations

import asyncio
import gzip
import json
import re
import time
import zlib
from typing import Any

import pytest
from starlette.testclient import TestClient

from glowing_fiesta.auth import keys as tokens
from glowing_fiesta.auth.ratelimit import MemoryRateLimiter
from glowing_fiesta.bootstrap import create_app_from
from glowing_fiesta.settings import Settings
from glowing_fiesta.storage.sql import SqlStorage
from tests.conftest import KeyMaker, bearer

RATE_HEADERS = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset")
# A fixed instant 20 s into a minute: the rate-limit window is then the same for every
# request of a test, whatever the wall clock does meanwhile.
FROZEN = 1_750_000_020.0 + 20


@pytest.fixture
def settings(database_url: str) -> Settings:
    """The app of these tests looks keys up on every request: revocation is immediate."""
    return Settings(
        database_url=database_url,
        log_format="console",
        retention_interval_seconds=3600,
        key_cache_seconds=0,
    )


@pytest.fixture
def frozen_limiter(client: TestClient) -> MemoryRateLimiter:
    """The app's own limiter class, on a clock that stays inside one window."""
    limiter = MemoryRateLimiter(clock=lambda: FROZEN)
    client.app.state.services.auth.limiter = limiter  # type: ignore[attr-defined]
    return limiter


def revoke(database_url: str, name_or_prefix: str) -> int:
    async def go() -> int:
        storage = SqlStorage(database_url)
        try:
            return await storage.revoke_keys(name_or_prefix, time.time())
        finally:
            await storage.close()

    return asyncio.run(go())


def error_of(response: Any, status: int, code: str) -> dict[str, Any]:
    """Check the SPEC's error envelope and return its `error` object."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    assert error["code"] == code
    assert isinstance(error["message"], str)
    assert error["message"]
    return error


def rate_headers(response: Any) -> dict[str, int]:
    return {h: int(response.headers[h]) for h in RATE_HEADERS}


# Requests under /api that need a key, one per route and scope.
WRITE = ("POST", "/api/metrics/counter", {"metric": "signups"})
WRITE_VALUE = ("POST", "/api/metrics/value", {"metric": "latency", "value": 3.5})
WRITE_BATCH = ("POST", "/api/metrics/batch", {"points": [{"metric": "b", "type": "counter"}]})
READ_LIST = ("GET", "/api/metrics", None)
READ_SERIES = ("GET", "/api/series?metric=signups", None)
READ_PATH = ("GET", "/api/metrics/signups", None)
ADMIN = ("DELETE", "/api/metrics/signups", None)
API_REQUESTS = [WRITE, WRITE_VALUE, WRITE_BATCH, READ_LIST, READ_SERIES, READ_PATH, ADMIN]


def call(
    client: TestClient,
    request: tuple[str, str, object],
    headers: dict[str, str] | None = None,
) -> Any:
    method, path, body = request
    return client.request(method, path, json=body, headers=headers or {})


# -- authentication -------------------------------------------------------------------


@pytest.mark.parametrize("request_", API_REQUESTS, ids=lambda r: f"{r[0]} {r[1]}")
def test_no_key_is_401(client: TestClient, request_: tuple[str, str, object]) -> None:
    r = call(client, request_)
    error_of(r, 401, "unauthenticated")
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert "X-RateLimit-Limit" not in r.headers


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"Authorization": "Bearer"}, id="bearer-without-key"),
        pytest.param({"Authorization": "Bearer   "}, id="bearer-blank"),
        pytest.param({"Authorization": "Basic dXNlcjpwYXNz"}, id="basic-auth"),
        pytest.param({"X-API-Key": ""}, id="empty-x-api-key"),
        pytest.param({"Authorization": "Bearer hello"}, id="malformed"),
        pytest.param({"Authorization": "Bearer gf_short_x"}, id="malformed-prefix"),
        pytest.param({"Authorization": "Bearer gf_Ab3dE5gH_"}, id="no-secret"),
        pytest.param({"X-API-Key": "not a key at all"}, id="malformed-x-api-key"),
        pytest.param({"Authorization": "Bearer " + "gf_" + "A" * 5000}, id="huge"),
    ],
)
def test_missing_or_malformed_keys_are_401(client: TestClient, headers: dict[str, str]) -> None:
    for request_ in (WRITE, READ_LIST):
        error_of(call(client, request_, headers), 401, "unauthenticated")


def test_an_unknown_key_is_401(client: TestClient, make_key: KeyMaker) -> None:
    make_key()  # a key exists, just not this one
    unknown, _ = tokens.generate()
    for headers in (bearer(unknown), {"X-API-Key": unknown}):
        error_of(call(client, WRITE, headers), 401, "unauthenticated")


def test_a_known_prefix_with_the_wrong_secret_is_401(
    client: TestClient, make_key: KeyMaker
) -> None:
    key = make_key()
    prefix = tokens.prefix_of(key)
    other, _ = tokens.generate()
    forged = f"{prefix}_{other.split('_', 2)[2]}"
    for token in (forged, key[:-1], key + "A"):
        error_of(call(client, WRITE, bearer(token)), 401, "unauthenticated")
    assert call(client, WRITE, bearer(key)).status_code == 202


def test_bearer_and_x_api_key_both_work(client: TestClient, make_key: KeyMaker) -> None:
    key = make_key()
    for headers in (
        {"Authorization": f"Bearer {key}"},
        {"Authorization": f"bearer {key}"},
        {"Authorization": f"Bearer\t{key}"},
        {"Authorization": f"  Bearer   {key} "},
        {"X-API-Key": key},
        {"X-API-Key": f"  {key}  "},
        {"Authorization": "Basic dXNlcjpwYXNz", "X-API-Key": key},
    ):
        assert call(client, WRITE, headers).status_code == 202, headers
        assert call(client, READ_LIST, headers).status_code == 200, headers


def test_a_revoked_key_is_401_on_every_route(
    client: TestClient, make_key: KeyMaker, database_url: str
) -> None:
    key = make_key(scopes="write,read,admin", name="leaked")
    assert call(client, WRITE, bearer(key)).status_code == 202
    assert revoke(database_url, "leaked") == 1
    for request_ in API_REQUESTS:
        for headers in (bearer(key), {"X-API-Key": key}):
            error = error_of(call(client, request_, headers), 401, "unauthenticated")
            assert "revoked" in error["message"]


def test_revoking_one_key_by_prefix_leaves_the_others(
    client: TestClient, make_key: KeyMaker, database_url: str
) -> None:
    gone, kept = make_key(), make_key()
    prefix = tokens.prefix_of(gone)
    assert prefix is not None
    assert revoke(database_url, prefix) == 1
    error_of(call(client, WRITE, bearer(gone)), 401, "unauthenticated")
    assert call(client, WRITE, bearer(kept)).status_code == 202


def test_revocation_takes_effect_within_the_key_cache_time(
    database_url: str, make_key: KeyMaker
) -> None:
    cache = 0.3
    settings = Settings(database_url=database_url, log_format="console", key_cache_seconds=cache)
    key = make_key(name="cached")
    with TestClient(create_app_from(settings)) as client:
        assert call(client, WRITE, bearer(key)).status_code == 202  # now cached
        revoke(database_url, "cached")
        time.sleep(cache + 0.05)
        error_of(call(client, WRITE, bearer(key)), 401, "unauthenticated")


def test_a_key_created_while_the_service_runs_works_at_once(
    client: TestClient, make_key: KeyMaker
) -> None:
    assert call(client, READ_LIST).status_code == 401
    key = make_key()
    assert call(client, READ_LIST, bearer(key)).status_code == 200


# -- scopes ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scopes", "request_", "status"),
    [
        ("write", WRITE, 202),
        ("write", WRITE_VALUE, 202),
        ("write", WRITE_BATCH, 202),
        ("write", READ_LIST, 403),
        ("write", READ_SERIES, 403),
        ("write", READ_PATH, 403),
        ("write", ADMIN, 403),
        ("read", WRITE, 403),
        ("read", WRITE_VALUE, 403),
        ("read", WRITE_BATCH, 403),
        ("read", READ_LIST, 200),
        ("read", READ_SERIES, 404),  # allowed; the metric does not exist
        ("read", READ_PATH, 404),
        ("read", ADMIN, 403),
        ("write,read", ADMIN, 403),
        ("admin", WRITE, 403),
        ("admin", READ_LIST, 403),
        ("admin", ADMIN, 404),  # allowed; the metric does not exist
    ],
    ids=lambda v: f"{v[0]} {v[1]}" if isinstance(v, tuple) else str(v),
)
def test_scopes(
    client: TestClient,
    make_key: KeyMaker,
    scopes: str,
    request_: tuple[str, str, object],
    status: int,
) -> None:
    r = call(client, request_, bearer(make_key(scopes=scopes)))
    assert r.status_code == status, r.text
    if status == 403:
        error = error_of(r, 403, "forbidden")
        missing = {"POST": "write", "GET": "read", "DELETE": "admin"}[request_[0]]
        assert missing in error["message"]
    if status == 404:
        error_of(r, 404, "not_found")
    assert rate_headers(r)["X-RateLimit-Limit"] == 6000


def test_a_forbidden_write_stores_nothing(client: TestClient, make_key: KeyMaker) -> None:
    reader = make_key(scopes="read")
    assert call(client, WRITE, bearer(reader)).status_code == 403
    assert client.get("/api/metrics", headers=bearer(reader)).json()["metrics"] == []


def test_delete_needs_admin_and_deletes(client: TestClient, make_key: KeyMaker) -> None:
    rw, admin = make_key(scopes="write,read"), make_key(scopes="admin")
    assert call(client, WRITE, bearer(rw)).status_code == 202
    deadline = time.monotonic() + 1  # accepted points are visible within 1 second
    while call(client, READ_PATH, bearer(rw)).status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    error_of(call(client, ADMIN, bearer(rw)), 403, "forbidden")
    assert call(client, READ_PATH, bearer(rw)).status_code == 200
    r = call(client, ADMIN, bearer(admin))
    assert r.status_code == 204
    assert r.content == b""
    error_of(call(client, READ_PATH, bearer(rw)), 404, "not_found")


# -- rate limits ----------------------------------------------------------------------


def test_a_key_over_its_limit_gets_429_with_retry_after(
    client: TestClient, make_key: KeyMaker, frozen_limiter: MemoryRateLimiter
) -> None:
    key = make_key(rate_limit=3)
    answers = [call(client, WRITE, bearer(key)) for _ in range(4)]
    assert [r.status_code for r in answers] == [202, 202, 202, 429]
    assert [rate_headers(r) for r in answers] == [
        {"X-RateLimit-Limit": 3, "X-RateLimit-Remaining": 2, "X-RateLimit-Reset": 40},
        {"X-RateLimit-Limit": 3, "X-RateLimit-Remaining": 1, "X-RateLimit-Reset": 40},
        {"X-RateLimit-Limit": 3, "X-RateLimit-Remaining": 0, "X-RateLimit-Reset": 40},
        {"X-RateLimit-Limit": 3, "X-RateLimit-Remaining": 0, "X-RateLimit-Reset": 40},
    ]
    limited = answers[-1]
    error_of(limited, 429, "rate_limited")
    assert int(limited.headers["Retry-After"]) == 40
    assert all("Retry-After" not in r.headers for r in answers[:3])
    # Still limited, on every route, until the window ends.
    for request_ in (WRITE_BATCH, READ_LIST):
        error_of(call(client, request_, bearer(key)), 429, "rate_limited")


def test_a_rate_limited_write_stores_nothing(
    client: TestClient, make_key: KeyMaker, frozen_limiter: MemoryRateLimiter
) -> None:
    key = make_key(rate_limit=2)
    assert call(client, READ_LIST, bearer(key)).status_code == 200
    assert call(client, READ_LIST, bearer(key)).status_code == 200
    assert call(client, WRITE, bearer(key)).status_code == 429
    other = make_key()
    assert client.get("/api/metrics", headers=bearer(other)).json()["metrics"] == []


def test_other_keys_are_not_affected(
    client: TestClient, make_key: KeyMaker, frozen_limiter: MemoryRateLimiter
) -> None:
    busy, quiet, default = make_key(rate_limit=1), make_key(rate_limit=1), make_key()
    assert call(client, WRITE, bearer(busy)).status_code == 202
    assert call(client, WRITE, bearer(busy)).status_code == 429
    r = call(client, WRITE, bearer(quiet))
    assert r.status_code == 202
    assert rate_headers(r)["X-RateLimit-Remaining"] == 0
    r = call(client, WRITE, bearer(default))
    assert r.status_code == 202
    assert rate_headers(r)["X-RateLimit-Limit"] == 6000
    assert rate_headers(r)["X-RateLimit-Remaining"] == 5999


def test_the_limit_counts_every_answer_and_each_carries_the_headers(
    client: TestClient, make_key: KeyMaker, frozen_limiter: MemoryRateLimiter
) -> None:
    writer = make_key(scopes="write", rate_limit=5)
    answers = [
        call(client, WRITE, bearer(writer)),  # 202
        call(client, READ_LIST, bearer(writer)),  # 403: no read scope
        call(client, ("POST", "/api/metrics/value", {"metric": "v"}), bearer(writer)),  # 422
        client.post("/api/metrics/value", content=b"{oops", headers=bearer(writer)),  # 400
        client.post(
            "/api/metrics/value",
            content=b"{}",
            headers={**bearer(writer), "Content-Type": "text/plain"},
        ),  # 415
        call(client, WRITE, bearer(writer)),  # 429: the sixth request
    ]
    assert [r.status_code for r in answers] == [202, 403, 422, 400, 415, 429]
    assert [rate_headers(r)["X-RateLimit-Remaining"] for r in answers] == [4, 3, 2, 1, 0, 0]
    assert all(rate_headers(r)["X-RateLimit-Limit"] == 5 for r in answers)


def test_rate_limit_with_the_real_clock(client: TestClient, make_key: KeyMaker) -> None:
    key = make_key(rate_limit=3)
    answers: list[Any] = []
    # At most one window boundary can pass during these requests, so a 429 comes by
    # the seventh request at the latest.
    for _ in range(7):
        answers.append(call(client, WRITE, bearer(key)))
        if answers[-1].status_code == 429:
            break
    limited = answers[-1]
    error_of(limited, 429, "rate_limited")
    assert 3 <= sum(r.status_code == 202 for r in answers) <= 6
    retry_after = int(limited.headers["Retry-After"])
    assert 1 <= retry_after <= 60
    assert rate_headers(limited) == {
        "X-RateLimit-Limit": 3,
        "X-RateLimit-Remaining": 0,
        "X-RateLimit-Reset": retry_after,
    }
    for r in answers:
        headers = rate_headers(r)
        assert headers["X-RateLimit-Limit"] == 3
        assert 0 <= headers["X-RateLimit-Remaining"] <= 2
        assert 1 <= headers["X-RateLimit-Reset"] <= 60


def test_rate_limit_rejections_are_in_the_service_metrics(
    client: TestClient, make_key: KeyMaker, frozen_limiter: MemoryRateLimiter
) -> None:
    key = make_key(rate_limit=1)
    for _ in range(3):
        call(client, WRITE, bearer(key))
    assert "gf_rate_limited_total 2.0" in client.get("/metrics").text.splitlines()


# -- routes without a key -------------------------------------------------------------


@pytest.mark.parametrize("path", ["/nope", "/health/x", "/apix"])
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_unknown_routes_are_404_with_the_envelope(
    client: TestClient, method: str, path: str
) -> None:
    error = error_of(client.request(method, path), 404, "not_found")
    assert path in error["message"]


@pytest.mark.parametrize("path", ["/api", "/api/nope", "/api/metric"])
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_unknown_api_routes_need_a_key_and_count_against_its_limit(
    client: TestClient, make_key: KeyMaker, method: str, path: str
) -> None:
    """SPEC §2: every request under /api is authenticated, a path that exists or not."""
    error_of(client.request(method, path), 401, "unauthenticated")
    key = make_key(rate_limit=2, scopes="read")  # any scope will do
    r = client.request(method, path, headers=bearer(key))
    assert path in error_of(r, 404, "not_found")["message"]
    assert (r.headers["X-RateLimit-Limit"], r.headers["X-RateLimit-Remaining"]) == ("2", "1")
    client.request(method, path, headers=bearer(key))
    error_of(client.request(method, path, headers=bearer(key)), 429, "rate_limited")


def test_an_unknown_metric_is_404_with_the_envelope(client: TestClient, make_key: KeyMaker) -> None:
    key = make_key(scopes="read,admin")
    for path in ("/api/metrics/nope", "/api/series?metric=nope"):
        error = error_of(client.get(path, headers=bearer(key)), 404, "not_found")
        assert "nope" in error["message"]
    error_of(client.delete("/api/metrics/nope", headers=bearer(key)), 404, "not_found")


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("PUT", "/api/metrics/counter", "POST"),
        ("GET", "/api/metrics/value", None),
        ("DELETE", "/api/metrics/batch", None),
        ("POST", "/health", "GET"),
        ("DELETE", "/ready", "GET"),
        ("POST", "/metrics", "GET"),
        ("PATCH", "/api/metrics", "GET"),
        ("PUT", "/api/metrics/some-metric", "GET"),
    ],
)
def test_wrong_methods_are_405_with_the_envelope(
    client: TestClient, make_key: KeyMaker, method: str, path: str, allowed: str | None
) -> None:
    api = path.startswith("/api/")
    if api:  # under /api, the key first (SPEC §2), whatever the method
        error_of(client.request(method, path), 401, "unauthenticated")
    key = make_key(scopes="write,read,admin")
    r = client.request(method, path, headers=bearer(key) if api else None)
    if allowed is None:
        # GET and DELETE under /api/metrics/ name a metric, even "value" or "batch".
        error_of(r, 404, "not_found")
        return
    error_of(r, 405, "method_not_allowed")
    assert allowed in r.headers["Allow"]
    assert ("X-RateLimit-Limit" in r.headers) is api


def test_allow_names_every_method_of_a_path_served_by_several_routes(
    client: TestClient, make_key: KeyMaker
) -> None:
    r = client.request("PUT", "/api/metrics/some-metric", headers=bearer(make_key()))
    error_of(r, 405, "method_not_allowed")
    assert {m.strip() for m in r.headers["Allow"].split(",")} == {"GET", "HEAD", "DELETE"}


def test_health(client: TestClient) -> None:
    r = client.get("/health")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {"status": "ok"}


def test_ready_names_its_checks(client: TestClient) -> None:
    r = client.get("/ready")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["status"] == "ok"
    checks = body["checks"]
    assert checks, "readiness must check something"
    assert set(checks.values()) == {"ok"}
    assert "queue" in checks
    assert {"database", "storage"} & set(checks)


def test_service_metrics_after_a_write(client: TestClient, make_key: KeyMaker) -> None:
    key = make_key()
    assert call(client, WRITE, bearer(key)).status_code == 202
    assert call(client, WRITE_VALUE, bearer(key)).status_code == 202
    batch = {"points": [{"metric": "b", "type": "counter"}] * 3}
    assert client.post("/api/metrics/batch", json=batch, headers=bearer(key)).status_code == 202
    mixed = {
        "points": [
            {"metric": "c", "type": "counter", "value": 5},
            {"metric": "lat", "type": "value", "value": 2.5},
            {"metric": "c", "type": "counter"},
            {"metric": "lat", "type": "value", "value": 3.5},
        ]
    }
    assert client.post("/api/metrics/batch", json=mixed, headers=bearer(key)).status_code == 202
    call(client, READ_LIST)  # a 401 is counted too
    r = client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    lines = r.text.splitlines()
    samples = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in lines
        if line and not line.startswith("#")
    }
    # Points, not metrics or batches: 1 + 3 + 2 counters, 1 + 2 values.
    assert samples['gf_points_ingested_total{type="counter"}'] == 6
    assert samples['gf_points_ingested_total{type="value"}'] == 3
    requests = {k: v for k, v in samples.items() if k.startswith("gf_http_requests_total{")}
    assert sum(v for k, v in requests.items() if 'status="202"' in k) == 4
    assert sum(v for k, v in requests.items() if 'status="401"' in k) == 1
    assert any(line.startswith("gf_http_request_duration_seconds_bucket") for line in lines)
    assert any(line.startswith("gf_queue_depth") for line in lines)


def test_openapi_document(client: TestClient) -> None:
    r = client.get("/openapi.json")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    doc = json.loads(r.content)
    assert doc["openapi"] == "3.1.0"
    assert doc["info"]["title"]
    paths = doc["paths"]
    for path in ("/api/metrics/counter", "/api/metrics/value", "/api/metrics/batch"):
        assert "post" in paths[path], path
    assert {"/api/metrics", "/api/series"} <= set(paths)
    # Every reference points at a component the document defines.
    refs = set(re.findall(r'"\$ref":\s*"#/components/([^/]+)/([^"]+)"', r.text))
    assert refs
    for section, name in refs:
        assert name in doc["components"][section], (section, name)


def test_openapi_describes_what_the_server_does(client: TestClient, make_key: KeyMaker) -> None:
    doc = client.get("/openapi.json").json()
    key = make_key()
    # The key in either header the document names.
    schemes = doc["components"]["securitySchemes"]
    assert schemes["apiKey"] == {"type": "apiKey", "in": "header", "name": "X-API-Key"}
    post = doc["paths"]["/api/metrics/counter"]["post"]
    assert {name for option in post["security"] for name in option} == {"bearer", "apiKey"}
    r = client.post("/api/metrics/counter", json={"metric": "c"}, headers={"X-API-Key": key})
    assert r.status_code == 202
    sent = set(post["responses"]["202"]["headers"])
    assert {h for h in r.headers if h.startswith("x-ratelimit")} == {h.lower() for h in sent}
    # A series as CSV is one of the 200's declared media types.
    r = client.get("/api/series", params={"metric": "c", "format": "csv"}, headers=bearer(key))
    series = doc["paths"]["/api/series"]["get"]["responses"]["200"]["content"]
    assert r.headers["content-type"].split(";")[0] in series
    # A wrong method is a 405 the document lists; a 429 declares its Retry-After.
    r = client.put("/api/metrics/counter", headers=bearer(key))
    assert r.status_code == 405
    assert "405" in post["responses"]
    assert "Retry-After" in post["responses"]["429"]["headers"]
    points = doc["components"]["schemas"]["BatchIn"]["properties"]["points"]
    assert (points["minItems"], points["maxItems"]) == (1, 1000)
    # The body codings the document offers are taken; any other is its 415.
    (coding,) = [p for p in post["parameters"] if p["name"] == "Content-Encoding"]
    for name in coding["schema"]["enum"]:
        body = b'{"metric": "c"}' if name == "identity" else gzip.compress(b'{"metric": "c"}')
        if name == "deflate":
            body = zlib.compress(b'{"metric": "c"}')
        r = client.post(
            "/api/metrics/counter", content=body, headers={**bearer(key), "Content-Encoding": name}
        )
        assert r.status_code == 202, name
    r = client.post(
        "/api/metrics/counter", content=b"{}", headers={"Content-Encoding": "br", **bearer(key)}
    )
    assert r.status_code == 415
    assert set(post["responses"]["415"]["headers"]) >= {"Accept-Encoding", *sent}
    assert {"accept-encoding", *(h.lower() for h in sent)} <= set(r.headers)


@pytest.mark.parametrize("path", ["/health", "/ready", "/metrics", "/openapi.json"])
def test_service_endpoints_need_no_key_and_do_not_count_against_one(
    client: TestClient, make_key: KeyMaker, frozen_limiter: MemoryRateLimiter, path: str
) -> None:
    key = make_key(rate_limit=1)
    for _ in range(3):
        r = client.get(path, headers=bearer(key))
        assert r.status_code == 200
        assert "X-RateLimit-Limit" not in r.headers
    assert call(client, WRITE, bearer(key)).status_code == 202
