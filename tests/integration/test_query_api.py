"""Query parameters, formats and the metric catalogue over HTTP."""

from __future__ import annotations

import csv
import io
import time
from datetime import UTC, datetime

import pytest
from starlette.testclient import TestClient

from tests.conftest import KeyMaker, bearer


@pytest.fixture
def loaded(client: TestClient, make_key: KeyMaker) -> tuple[str, int]:
    key = make_key(scopes="write,read,admin")
    hour = (int(time.time()) // 3600 - 3) * 3600
    points = [
        {"metric": "lat", "type": "value", "value": float(v), "timestamp": hour + 60 * i}
        for i, v in enumerate([5, 1, 9, 3, 7, 2])
    ]
    points += [
        {"metric": "hits", "type": "counter", "timestamp": hour + 3600 + i} for i in range(4)
    ]
    r = client.post("/api/metrics/batch", json={"points": points}, headers=bearer(key))
    assert r.status_code == 202
    return key, hour


def test_csv_and_json_give_the_same_numbers(client: TestClient, loaded: tuple[str, int]) -> None:
    key, hour = loaded
    params: dict[str, int | str] = {
        "from": hour,
        "to": hour + 3 * 3600,
        "interval": "hour",
        "tz": "America/New_York",
    }
    for agg in ["avg", "max", "p50", "count"]:
        js = client.get(
            "/api/metrics/lat", params={**params, "agg": agg}, headers=bearer(key)
        ).json()
        r = client.get(
            "/api/metrics/lat", params={**params, "agg": agg, "format": "csv"}, headers=bearer(key)
        )
        assert r.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(r.text)))
        assert [int(datetime.fromisoformat(row["t"]).timestamp()) for row in rows] == [
            p["t"] for p in js["points"]
        ]
        assert [float(row["value"]) if row["value"] else None for row in rows] == [
            p["value"] for p in js["points"]
        ]
        # ISO 8601 with the zone's offset (New York is -05:00 or -04:00).
        assert rows[0]["t"].endswith(("-05:00", "-04:00"))


def test_accept_text_csv_selects_csv(client: TestClient, loaded: tuple[str, int]) -> None:
    key, hour = loaded
    r = client.get(
        "/api/metrics/hits",
        params={"from": hour, "to": hour + 7200},
        headers={**bearer(key), "Accept": "text/csv"},
    )
    assert r.text.splitlines()[0] == "t,value"
    assert r.text.splitlines()[1:] == [
        f"{datetime.fromtimestamp(hour, UTC).isoformat()},0",
        f"{datetime.fromtimestamp(hour + 3600, UTC).isoformat()},4",
    ]


@pytest.mark.parametrize(
    ("accept", "csv_expected"),
    [
        ("TEXT/CSV", True),  # media types are case-insensitive
        ("application/json;q=0.5, text/csv", True),
        ("text/csv, application/json", True),
        ("application/json, text/csv;q=0", False),  # q=0: not acceptable
        ("text/csv;q=0.5, application/json", False),
        ("text/csv;q=0.5, */*", False),
        ("text/csv;q=oops", False),
        ("text/csvx", False),
        ("*/*", False),
    ],
)
def test_the_accept_header_is_read_with_its_preferences(
    client: TestClient, loaded: tuple[str, int], accept: str, csv_expected: bool
) -> None:
    key, hour = loaded
    r = client.get(
        "/api/metrics/hits",
        params={"from": hour, "to": hour + 7200},
        headers={**bearer(key), "Accept": accept},
    )
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/csv" if csv_expected else "application/json")


def test_json_shape(client: TestClient, loaded: tuple[str, int]) -> None:
    key, hour = loaded
    body = client.get(
        "/api/metrics/lat",
        params={"from": hour, "to": hour + 3600, "agg": "p90"},
        headers=bearer(key),
    ).json()
    assert body == {
        "metric": "lat",
        "type": "value",
        "interval": "hour",
        "agg": "p90",
        "tz": "UTC",
        "from": hour,
        "to": hour + 3600,
        "points": [{"t": hour, "value": pytest.approx(7, rel=0.01)}],
    }


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"interval": "fortnight"}, "interval"),
        ({"agg": "median"}, "agg"),
        ({"fill": "previous"}, "fill"),
        ({"tz": "Mars/Olympus_Mons"}, "tz"),
        ({"from": "yesterday"}, "from"),
        ({"to": "2024-01-01T00:00:00"}, "to"),
        ({"from": 2000, "to": 1000}, "from"),
        ({"format": "xml"}, "format"),
        ({"from": 0, "to": 86400 * 8, "interval": "minute"}, "interval"),
        # Within years 1-9999 UTC, but not every bucket is in the zone's calendar.
        (
            {"from": "9999-12-01T00:00:00Z", "to": "9999-12-02T00:00:00Z", "interval": "month"},
            "to",
        ),
        (
            {
                "from": "9999-12-31T00:00:00Z",
                "to": "9999-12-31T01:00:00Z",
                "interval": "minute",
                "tz": "Pacific/Kiritimati",
            },
            "to",
        ),
        (
            {
                "from": "0001-01-01T00:00:00Z",
                "to": "0001-01-01T01:00:00Z",
                "interval": "minute",
                "tz": "America/Adak",
            },
            "from",
        ),
        (
            {
                "from": "0001-01-01T00:00:00Z",
                "to": "0001-01-02T00:00:00Z",
                "interval": "hour",
                "tz": "Asia/Kathmandu",
            },
            "from",
        ),
    ],
)
def test_bad_parameters_are_422_naming_the_parameter(
    client: TestClient, loaded: tuple[str, int], params: dict[str, int | str], field: str
) -> None:
    key, _ = loaded
    r = client.get("/api/metrics/lat", params=params, headers=bearer(key))
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["code"] == "validation_error"
    assert err["details"][0]["field"] == field
    if field == "interval" and "from" in params:
        assert "10,000 buckets" in err["message"]


def test_unknown_metric_is_404(client: TestClient, loaded: tuple[str, int]) -> None:
    key, _ = loaded
    r = client.get("/api/metrics/nope", headers=bearer(key))
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not_found"
    assert client.get("/api/series", headers=bearer(key)).status_code == 422


def test_a_name_of_only_white_space_is_a_422_on_metric_everywhere(
    client: TestClient, loaded: tuple[str, int]
) -> None:
    """No metric can be named so (names are trimmed, 1-255 characters): a 422 that
    says so, on every route that takes a name, not a 404 for the name ''."""
    key, _ = loaded
    for method, url, params in [
        ("GET", "/api/metrics/%20%20", {}),
        ("GET", "/api/metrics/", {}),
        ("GET", "/api/series", {"metric": " \t"}),
        ("GET", "/api/series", {"metric": ""}),
        ("DELETE", "/api/metrics/%20", {}),
        ("DELETE", "/api/metrics/", {}),
    ]:
        r = client.request(method, url, params=params, headers=bearer(key))
        assert r.status_code == 422, (method, url, params)
        assert r.json()["error"]["details"][0]["field"] == "metric"
    # The names around it still resolve, trimmed.
    assert client.get("/api/metrics/%20lat%20", headers=bearer(key)).status_code == 200


def test_list_metrics_pages_with_an_opaque_cursor(client: TestClient, make_key: KeyMaker) -> None:
    key = make_key()
    names = [f"svc.{i:02d}" for i in range(7)] + ["other", "svc_x", "svd"]
    client.post(
        "/api/metrics/batch",
        headers=bearer(key),
        json={"points": [{"metric": n, "type": "counter"} for n in names]},
    )
    seen: list[str] = []
    cursor: str | None = None
    while True:
        params: dict[str, int | str] = {"prefix": "svc.", "limit": 3}
        if cursor:
            params["cursor"] = cursor
        body = client.get("/api/metrics", params=params, headers=bearer(key)).json()
        seen += [m["name"] for m in body["metrics"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"svc.{i:02d}" for i in range(7)]
    everything = client.get("/api/metrics", headers=bearer(key)).json()["metrics"]
    assert {m["name"] for m in everything} == set(names)
    entry = everything[0]
    assert set(entry) == {"name", "type", "stat_key", "created_at", "last_point_at"}
    assert len({m["stat_key"] for m in everything}) == len(names)
    bad_params: list[dict[str, int | str]] = [
        {"limit": 0},
        {"limit": 1001},
        {"limit": "ten"},
        {"limit": " 5"},
        {"limit": "+5"},
        {"limit": "1_0"},
        {"limit": "\u0663"},  # ARABIC-INDIC DIGIT THREE
        {"cursor": "%%%"},
    ]
    for bad in bad_params:
        r = client.get("/api/metrics", params=bad, headers=bearer(key))
        assert r.status_code == 422, bad


def test_delete_needs_admin_and_removes_everything(
    client: TestClient, loaded: tuple[str, int], make_key: KeyMaker
) -> None:
    admin, hour = loaded
    plain = make_key()
    assert client.delete("/api/metrics/lat", headers=bearer(plain)).status_code == 403
    r = client.delete("/api/metrics/lat", headers=bearer(admin))
    assert r.status_code == 204
    assert client.get("/api/metrics/lat", headers=bearer(admin)).status_code == 404
    assert client.delete("/api/metrics/lat", headers=bearer(admin)).status_code == 404
    # A new write re-creates it, with a new type if need be and none of the old data.
    r = client.post(
        "/api/metrics/counter", json={"metric": "lat", "timestamp": hour + 5}, headers=bearer(admin)
    )
    assert r.status_code == 202
    body = client.get(
        "/api/metrics/lat", params={"from": hour, "to": hour + 3600}, headers=bearer(admin)
    ).json()
    assert body["type"] == "counter"
    assert body["points"] == [{"t": hour, "value": 1}]


def test_a_point_late_in_its_minute_is_counted_in_that_minute(
    client: TestClient, make_key: KeyMaker
) -> None:
    key = make_key()
    minute = (int(time.time()) // 60 - 5) * 60
    sent = {"metric": "late", "value": 7, "timestamp": minute + 59.9999}
    assert client.post("/api/metrics/counter", json=sent, headers=bearer(key)).status_code == 202
    params: dict[str, int | str] = {"from": minute, "to": minute + 60, "interval": "minute"}
    body = client.get("/api/metrics/late", params=params, headers=bearer(key)).json()
    assert body["points"] == [{"t": minute, "value": 7.0}]


def test_a_sum_past_the_largest_double_is_the_largest_however_the_bucket_is_made(
    client: TestClient, make_key: KeyMaker
) -> None:
    """Stored cells keep such a sum as the largest double (docs/api.md); a bucket
    merged at query time from two hour cells, or from raw points at a range's edge,
    answers the same, not infinity (`null` in JSON, `inf` in CSV)."""
    key = make_key()
    huge = 1.7976931348623157e308
    day = (int(time.time()) // 86400 - 2) * 86400
    points = [
        {"metric": "big", "type": "value", "value": 1e308, "timestamp": day + 10},
        {"metric": "big", "type": "value", "value": 1e308, "timestamp": day + 3610},
        {"metric": "big", "type": "value", "value": -1e308, "timestamp": day + 7210},
        {"metric": "big", "type": "value", "value": -1e308, "timestamp": day + 7220},
    ]
    r = client.post("/api/metrics/batch", json={"points": points}, headers=bearer(key))
    assert r.status_code == 202

    def answer(params: dict[str, int | str]) -> list[float | None]:
        body = client.get("/api/metrics/big", params=params, headers=bearer(key)).json()
        return [p["value"] for p in body["points"]]

    # A day of two hour cells (the range is not whole days), and the same in a zone.
    assert answer({"from": day, "to": day + 7200, "interval": "day", "agg": "sum"}) == [huge]
    in_zone: dict[str, int | str] = {
        "from": day,
        "to": day + 7200,
        "interval": "day",
        "tz": "Asia/Kathmandu",
    }
    assert answer({**in_zone, "agg": "sum"}) == [huge]
    assert answer({**in_zone, "agg": "avg"}) == [huge / 2]
    # Two raw points at the edge of a range that starts inside their minute.
    edge: dict[str, int | str] = {"from": day + 7205, "to": day + 7260, "interval": "minute"}
    assert answer({**edge, "agg": "sum"}) == [-huge]
    r = client.get(
        "/api/metrics/big",
        params={"from": day, "to": day + 7200, "interval": "day", "format": "csv"},
        headers=bearer(key),
    )
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [row["value"] for row in rows] == ["8.988465674311579e+307"]  # huge / 2
