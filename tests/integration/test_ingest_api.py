"""Ingestion over HTTP against the real app and a real SQLite file."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

from starlette.testclient import TestClient
from starlette.types import Message

from tests.conftest import KeyMaker, bearer


def series(client: TestClient, key: str, name: str, **params: int | str) -> list[dict[str, object]]:
    r = client.get("/api/series", params={"metric": name, **params}, headers=bearer(key))
    assert r.status_code == 200, r.text
    points: list[dict[str, object]] = r.json()["points"]
    return points


def test_counter_value_and_batch_are_acknowledged_and_queryable(
    client: TestClient, make_key: KeyMaker
) -> None:
    key = make_key()
    hour = (int(time.time()) // 3600 - 2) * 3600
    r = client.post(
        "/api/metrics/counter", json={"metric": "signups", "timestamp": hour}, headers=bearer(key)
    )
    assert r.status_code == 202
    assert r.json() == {"accepted": 1}
    assert r.headers["content-type"] == "application/json"
    client.post(
        "/api/metrics/value",
        json={"metric": "temp", "value": 21.5, "timestamp": hour + 1},
        headers=bearer(key),
    )
    r = client.post(
        "/api/metrics/batch",
        headers=bearer(key),
        json={
            "points": [
                {"metric": "signups", "type": "counter", "timestamp": hour + 5},
                {"metric": "signups", "type": "counter", "value": 3, "timestamp": hour + 7},
                {"metric": "temp", "type": "value", "value": 22.5, "timestamp": hour + 9},
            ]
        },
    )
    assert r.status_code == 202
    assert r.json() == {"accepted": 3}
    window = {"from": hour, "to": hour + 3600}
    assert series(client, key, "signups", **window) == [{"t": hour, "value": 5}]
    assert series(client, key, "temp", **window) == [{"t": hour, "value": 22.0}]
    assert series(client, key, "signups", agg="count", **window) == [{"t": hour, "value": 3}]


def test_identical_points_count_twice(client: TestClient, make_key: KeyMaker) -> None:
    key = make_key()
    t = (int(time.time()) // 60 - 5) * 60
    for _ in range(2):
        client.post(
            "/api/metrics/counter", json={"metric": "dup", "timestamp": t}, headers=bearer(key)
        )
    minute: dict[str, int | str] = {"from": t, "to": t + 60, "interval": "minute"}
    assert series(client, key, "dup", **minute) == [{"t": t, "value": 2}]


def test_type_conflict_is_409_and_changes_nothing(client: TestClient, make_key: KeyMaker) -> None:
    key = make_key()
    t = int(time.time()) - 120
    assert (
        client.post(
            "/api/metrics/counter", json={"metric": "orders", "timestamp": t}, headers=bearer(key)
        ).status_code
        == 202
    )
    r = client.post(
        "/api/metrics/value", json={"metric": "orders", "value": 3}, headers=bearer(key)
    )
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "type_conflict"
    # The conflicting batch is rejected whole: its good point is not stored either.
    r = client.post(
        "/api/metrics/batch",
        headers=bearer(key),
        json={
            "points": [
                {"metric": "fresh", "type": "counter", "timestamp": t},
                {"metric": "orders", "type": "value", "value": 1, "timestamp": t},
            ]
        },
    )
    assert r.status_code == 409
    assert r.json()["error"]["details"][0]["index"] == 1
    r = client.get("/api/metrics/fresh", headers=bearer(key))
    assert r.status_code == 404


def test_type_conflict_inside_one_batch(client: TestClient, make_key: KeyMaker) -> None:
    key = make_key()
    r = client.post(
        "/api/metrics/batch",
        headers=bearer(key),
        json={
            "points": [
                {"metric": "x", "type": "counter"},
                {"metric": "x", "type": "value", "value": 2},
            ]
        },
    )
    assert r.status_code == 409
    assert r.json()["error"]["details"] == [
        {"index": 1, "field": "type", "message": "metric 'x' is sent both as counter and value"}
    ]


def test_invalid_batch_reports_every_bad_point_and_stores_nothing(
    client: TestClient, make_key: KeyMaker
) -> None:
    key = make_key()
    r = client.post(
        "/api/metrics/batch",
        headers=bearer(key),
        json={
            "points": [
                {"metric": "ok", "type": "counter"},
                {"metric": "", "type": "counter"},
                {"metric": "v", "type": "value"},
                {"metric": "t", "type": "counter", "timestamp": "yesterday"},
                {"metric": "b", "type": "counter", "value": True},
            ]
        },
    )
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["code"] == "validation_error"
    assert [(d["index"], d["field"]) for d in err["details"]] == [
        (1, "metric"),
        (2, "value"),
        (3, "timestamp"),
        (4, "value"),
    ]
    assert client.get("/api/metrics/ok", headers=bearer(key)).status_code == 404


def test_envelopes_for_malformed_bodies(client: TestClient, make_key: KeyMaker) -> None:
    key = make_key()
    cases = [
        (b"{not json", "application/json", 400, "bad_request"),
        (b"[1, 2]", "application/json", 400, "bad_request"),
        (b'{"metric": "a", "value": NaN}', "application/json", 400, "bad_request"),
        (b'{"metric": "a", "value": 1e999}', "application/json", 422, "validation_error"),
        (b'{"metric": "a", "value": "5"}', "application/json", 422, "validation_error"),
        (b'{"metric": "a"}', "text/plain", 415, "unsupported_media_type"),
    ]
    for body, ctype, status, code in cases:
        r = client.post(
            "/api/metrics/value", content=body, headers={**bearer(key), "Content-Type": ctype}
        )
        assert (r.status_code, r.json()["error"]["code"]) == (status, code), body
        assert r.json()["error"]["message"]


def test_body_over_the_limit_is_413_even_when_chunked(
    client: TestClient, make_key: KeyMaker
) -> None:
    key = make_key()
    big = b'{"points": [' + b'{"metric": "m", "type": "counter"},' * 40_000 + b"]}"

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(big), 65536):
            yield big[i : i + 65536]

    r = client.post(
        "/api/metrics/batch",
        content=chunks(),
        headers={**bearer(key), "Content-Type": "application/json"},
    )
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "payload_too_large"


def test_batch_over_1000_points_is_413(client: TestClient, make_key: KeyMaker) -> None:
    key = make_key()
    r = client.post(
        "/api/metrics/batch",
        headers=bearer(key),
        json={"points": [{"metric": "m", "type": "counter"}] * 1001},
    )
    assert r.status_code == 413


def test_names_round_trip_through_the_encoded_path(client: TestClient, make_key: KeyMaker) -> None:
    from urllib.parse import quote

    key = make_key()
    t = (int(time.time()) // 3600 - 1) * 3600
    names = ["a b/c%d?e#f+g&h", "naïve ✓ 東京", "  padded  "]
    for name in names:
        r = client.post(
            "/api/metrics/counter", json={"metric": name, "timestamp": t}, headers=bearer(key)
        )
        assert r.status_code == 202
    for name in names:
        r = client.get(
            f"/api/metrics/{quote(name.strip(), safe='')}",
            params={"from": t, "to": t + 3600},
            headers=bearer(key),
        )
        assert r.status_code == 200, (name, r.text)
        assert r.json()["metric"] == name.strip()
        assert r.json()["points"] == [{"t": t, "value": 1}]


def test_a_request_cancelled_before_it_takes_effect_is_answered_503(
    client: TestClient, make_key: KeyMaker
) -> None:
    """uvicorn cancels the requests still running when its graceful shutdown ends: one
    whose body is still arriving gets the envelope's 503 with Retry-After (nothing of
    it was stored; it may be sent again), not uvicorn's plain-text 500."""
    key = make_key()
    sent: list[Message] = []

    async def scenario() -> None:
        waiting = asyncio.Event()

        async def receive() -> Message:
            if not waiting.is_set():
                waiting.set()
                return {"type": "http.request", "body": b'{"metric": "sl', "more_body": True}
            await asyncio.Event().wait()  # the rest of the body never comes
            raise AssertionError("unreachable")

        async def send(message: Message) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/api/metrics/counter",
            "raw_path": b"/api/metrics/counter",
            "query_string": b"",
            "root_path": "",
            "headers": [
                (b"authorization", f"Bearer {key}".encode()),
                (b"content-type", b"application/json"),
                (b"content-length", b"100"),
            ],
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 80),
            "state": {},
        }

        async def request() -> None:
            await client.app(scope, receive, send)

        task = asyncio.create_task(request())
        await waiting.wait()
        await asyncio.sleep(0.05)  # the endpoint waits in receive()
        task.cancel()
        await task  # answered, not re-raised: uvicorn has nothing left to do

    assert client.portal is not None  # the app's own loop, its writer running
    client.portal.call(scenario)
    assert sent[0]["type"] == "http.response.start"
    assert sent[0]["status"] == 503
    headers = {k.decode(): v.decode() for k, v in sent[0]["headers"]}
    assert headers["content-type"] == "application/json"
    assert int(headers["retry-after"]) >= 1
    body = json.loads(b"".join(m.get("body", b"") for m in sent[1:]))
    assert body["error"] == {"code": "unavailable", "message": "the service is shutting down"}
    stored = client.get("/api/series", params={"metric": "sl"}, headers=bearer(key))
    assert stored.status_code == 404  # nothing of it was stored
    counted = 'gf_http_requests_total{route="post_counter",status="503"} 1.0'
    assert counted in client.get("/metrics").text


def test_compressed_bodies_are_decoded_within_the_body_limit(
    client: TestClient, make_key: KeyMaker
) -> None:
    import gzip
    import zlib

    key = make_key()
    t = (int(time.time()) // 60 - 5) * 60
    doc = {"points": [{"metric": "zipped", "type": "counter", "timestamp": t}] * 3}
    body = json.dumps(doc).encode()
    half = len(body) // 2
    two_members = gzip.compress(body[:half]) + gzip.compress(body[half:])
    accepted = [
        (gzip.compress(body), "gzip"),
        (gzip.compress(body), "X-GZIP"),
        (zlib.compress(body), "deflate"),
        (two_members, "gzip"),
        (body, "identity"),
        (gzip.compress(body), "identity, gzip"),
    ]
    for content, coding in accepted:
        r = client.post(
            "/api/metrics/batch",
            content=content,
            headers={**bearer(key), "Content-Type": "application/json", "Content-Encoding": coding},
        )
        assert (r.status_code, r.json()) == (202, {"accepted": 3}), coding
    window: dict[str, int | str] = {"from": t, "to": t + 60, "interval": "minute"}
    assert series(client, key, "zipped", **window) == [{"t": t, "value": 3 * len(accepted)}]

    # A small body that decodes past the limit is refused before it is held whole.
    bomb = gzip.compress(b'{"points": [' + b" " * 50_000_000 + b"]}")
    refused = [
        (bomb, "gzip", 413, "payload_too_large"),
        (gzip.compress(body)[:-9], "gzip", 400, "bad_request"),
        (body, "gzip", 400, "bad_request"),
        (gzip.compress(body) + b"junk", "gzip", 400, "bad_request"),
        (zlib.compress(body) + zlib.compress(body), "deflate", 400, "bad_request"),
        (body, "br", 415, "unsupported_media_type"),
        (gzip.compress(gzip.compress(body)), "gzip, gzip", 415, "unsupported_media_type"),
    ]
    for content, coding, status, code in refused:
        r = client.post(
            "/api/metrics/batch",
            content=content,
            headers={**bearer(key), "Content-Type": "application/json", "Content-Encoding": coding},
        )
        assert (r.status_code, r.json()["error"]["code"]) == (status, code), coding
        if status == 415:
            assert r.headers["accept-encoding"] == "gzip, deflate, identity"
            assert repr(coding) in r.json()["error"]["message"]
    assert series(client, key, "zipped", **window) == [{"t": t, "value": 3 * len(accepted)}]
