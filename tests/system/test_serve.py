"""The real program end to end: CLI keys, HTTP writes, exact aggregates back."""

from __future__ import annotations

import json
import socket
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from tests.system.conftest import Server, cli

pytestmark = pytest.mark.system


def test_keys_created_with_the_cli_write_and_read_exact_aggregates(
    server: Server, gf_env: dict[str, str]
) -> None:
    key = cli(gf_env, "keys", "create", "ci").stdout.strip()
    assert key.startswith("gf_")
    assert "\n" not in key  # only the key on stdout
    auth = {"Authorization": f"Bearer {key}"}
    hour = (int(time.time()) // 3600 - 1) * 3600  # a whole past hour

    with httpx.Client(base_url=server.url, headers=auth, timeout=10) as http:
        for i in range(3):
            r = http.post(
                "/api/metrics/counter", json={"metric": "signups", "timestamp": hour + 60 * i}
            )
            assert r.status_code == 202, r.text
        r = http.post(
            "/api/metrics/counter", json={"metric": "signups", "value": 4, "timestamp": hour + 600}
        )
        assert r.status_code == 202
        r = http.post(
            "/api/metrics/batch",
            json={
                "points": [
                    {
                        "metric": "checkout latency ms",
                        "type": "value",
                        "value": v,
                        "timestamp": hour + 30 + i,
                    }
                    for i, v in enumerate([100, 200, 600])
                ]
            },
        )
        assert r.json() == {"accepted": 3}

        q: dict[str, int | str] = {"from": hour, "to": hour + 3600, "interval": "hour"}
        counter = http.get("/api/metrics/signups", params=q).json()
        assert counter["points"] == [{"t": hour, "value": 7}]
        name = quote("checkout latency ms", safe="")
        for agg, want in [("avg", 300), ("min", 100), ("max", 600), ("sum", 900), ("count", 3)]:
            got = http.get(f"/api/metrics/{name}", params={**q, "agg": agg}).json()
            assert got["points"] == [{"t": hour, "value": want}], agg

    listed = cli(gf_env, "keys", "list").stdout
    assert "ci" in listed
    assert key[:11] in listed  # the visible prefix
    assert key not in listed  # never the secret


def descendants(pid: int) -> list[str]:
    """The command lines of `pid`'s descendants."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        parents[int(stat.parent.name)] = int(fields[1])

    def under(p: int) -> bool:
        while p > 1:
            p = parents.get(p, 0)
            if p == pid:
                return True
        return False

    out = []
    for p in parents:
        if under(p):
            try:
                out.append(Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ").decode())
            except OSError:
                continue
    return out


def test_two_server_processes_share_rate_limits_writes_and_one_rollup_process(
    gf_env: dict[str, str], tmp_path: Path
) -> None:
    reader = cli(gf_env, "keys", "create", "reader", "--scopes", "read").stdout.strip()
    server = Server(gf_env, log=tmp_path / "serve.log", args=("--workers", "2"))
    server.start()
    every: list[int] = []  # the statuses of both attempts, for /metrics
    try:
        for attempt in range(2):
            key = cli(gf_env, "keys", "create", f"w{attempt}", "--rate-limit", "20").stdout.strip()
            minute = time.time() // 60

            def two_writes(metric: str = f"w{attempt}", token: str = key) -> list[int]:
                with httpx.Client(base_url=server.url, timeout=10) as http:
                    return [
                        http.post(
                            "/api/metrics/counter",
                            json={"metric": metric},
                            headers={"Authorization": f"Bearer {token}"},
                        ).status_code
                        for _ in range(2)
                    ]

            # 30 connections, 10 at a time: both processes accept some while busy.
            with ThreadPoolExecutor(10) as pool:
                statuses = [s for pair in pool.map(lambda _: two_writes(), range(30)) for s in pair]
            every += statuses
            if time.time() // 60 == minute:
                break  # else a new minute began mid-way, with new counts: once more
        with httpx.Client(base_url=server.url, timeout=10) as http:
            counted = http.get(
                f"/api/metrics/w{attempt}",
                params={"agg": "sum", "interval": "day"},
                headers={"Authorization": f"Bearer {reader}"},
            )
        # Each scrape on a new connection, so that both processes answer some.
        scrapes = [httpx.get(f"{server.url}/metrics").text for _ in range(8)]
        assert server.proc is not None
        rollers = [c for c in descendants(server.proc.pid) if "storage.roller" in c]
    finally:
        server.stop()
    # 20 a minute across both processes, not 20 in each: the counts are in one file.
    assert (statuses.count(202), statuses.count(429)) == (20, 40)
    assert sum(p["value"] for p in counted.json()["points"]) == 20
    assert len(rollers) == 1, rollers
    # Whichever process answers, /metrics counts the requests of both.
    requests = 'gf_http_requests_total{route="post_counter",status="%d"}'
    for text in scrapes:
        assert f"{requests % 202} {float(every.count(202))}" in text, text
        assert f"{requests % 429} {float(every.count(429))}" in text, text


def test_points_acknowledged_before_a_sigkill_survive_a_restart(
    server: Server, gf_env: dict[str, str]
) -> None:
    """Several clients post batches; serve dies mid-load; every 202'd point is there."""
    import threading

    key = cli(gf_env, "keys", "create", "loader").stdout.strip()
    auth = {"Authorization": f"Bearer {key}"}
    base = int(time.time()) - 3000
    acked = [0] * 4
    stop = threading.Event()

    def client(n: int) -> None:
        with httpx.Client(base_url=server.url, headers=auth, timeout=5) as http:
            i = 0
            while not stop.is_set() and i < 400:
                batch = [
                    {
                        "metric": "durable",
                        "type": "counter",
                        "value": 1,
                        "timestamp": base + (i % 50),
                    }
                    for _ in range(50)
                ]
                try:
                    r = http.post("/api/metrics/batch", json={"points": batch})
                except httpx.TransportError:
                    return  # the server died under us: this batch was never acknowledged
                if r.status_code == 202:
                    acked[n] += 50
                i += 1

    threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 20
    while sum(acked) < 5000 and time.monotonic() < deadline:
        time.sleep(0.05)
    server.kill()
    stop.set()
    for t in threads:
        t.join(10)
    assert sum(acked) >= 5000, "the load never got going"

    server.start()
    with httpx.Client(base_url=server.url, headers=auth, timeout=10) as http:
        got = http.get(
            "/api/metrics/durable",
            params={"from": base - 60, "to": base + 3600, "interval": "day", "agg": "count"},
        ).json()
    stored = sum(p["value"] for p in got["points"])
    # Nothing acknowledged is lost; a batch in flight at the kill may have committed
    # without its 202 reaching the client, so the store may hold a little more.
    assert stored >= sum(acked)
    assert stored - sum(acked) <= 4 * 50


def _responses(sock: socket.socket, count: int) -> list[bytes]:
    """`count` whole HTTP responses (heads, and bodies by content-length)."""
    data = b""
    out: list[bytes] = []
    while len(out) < count:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {out!r}"
        data += chunk
        while b"\r\n\r\n" in data and len(out) < count:
            head, rest = data.split(b"\r\n\r\n", 1)
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(rest) < length:
                break
            out.append(head + b"\r\n\r\n" + rest[:length])
            data = rest[length:]
    return out


def test_keep_alive_pipelined_and_head_requests_get_whole_responses(server: Server) -> None:
    """serve writes each response's head and body together (glowing_fiesta.http_protocol):
    a connection still carries several requests, pipelined ones included, and a HEAD
    response (a head alone) still arrives."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        get = b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n"
        sock.sendall(get)
        first = _responses(sock, 1)
        sock.sendall(get + get)
        pipelined = _responses(sock, 2)
        for response in first + pipelined:
            assert response.startswith(b"HTTP/1.1 200 OK\r\n")
            assert response.endswith(b'{"status":"ok"}')
        sock.sendall(b"HEAD /health HTTP/1.1\r\nHost: t\r\n\r\n")
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            chunk = sock.recv(65536)
            assert chunk
            head += chunk
        assert head.startswith(b"HTTP/1.1 200 OK\r\n")
        sock.sendall(get)
        assert _responses(sock, 1)[0].endswith(b'{"status":"ok"}')


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"POST /api/metrics/counter HTTP/1.1\r\nHost: t\r\nContent-Length: 1x\r\n\r\n",
        b"GET /api/metrics/a b HTTP/1.1\r\nHost: t\r\n\r\n",
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",  # TLS to the plain port
    ],
    ids=["bad-content-length", "space-in-path", "tls-hello"],
)
def test_a_request_that_is_not_http_gets_the_error_envelope(
    server: Server, request_bytes: bytes
) -> None:
    """What the HTTP parser rejects never reaches the application: it still gets the
    JSON envelope every other bad request gets, and the connection is closed."""
    assert _refused(server, request_bytes)["code"] == "bad_request"


def _refused(server: Server, request_bytes: bytes) -> dict[str, str]:
    """The error of the 400 that `request_bytes` gets, once the server closed."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request_bytes)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"HTTP/1.1 400 Bad Request"
    assert b"content-type: application/json" in lines
    assert b"connection: close" in lines
    error: dict[str, str] = json.loads(body)["error"]
    return error


def test_a_request_head_past_the_bound_is_refused_before_it_ends(server: Server) -> None:
    """httptools alone holds a header of any length until it ends (a client without a
    key could fill the server's memory): past 64 KiB of request line and headers the
    client gets the envelope's 400 and the connection closes, though the head has not
    ended; a long head under the bound is served."""
    from glowing_fiesta.http_protocol import MAX_HEAD_BYTES

    # All of it read by the server (nothing left unread to reset the connection).
    unending = b"GET /health HTTP/1.1\r\nHost: t\r\nX-Long: " + b"a" * MAX_HEAD_BYTES
    assert "over 65,536 bytes" in _refused(server, unending)["message"]
    long_but_fine = {"X-Long": "a" * (MAX_HEAD_BYTES // 2)}
    assert httpx.get(f"{server.url}/health", headers=long_but_fine).status_code == 200


def test_bodies_past_the_head_bound_pipelined_on_one_connection_are_accepted(
    server: Server, gf_env: dict[str, str]
) -> None:
    """The head bound counts a request's line and headers only: several batches of
    ~250 KB each, pipelined in one send on a kept-alive connection, are all taken."""
    from glowing_fiesta.http_protocol import MAX_HEAD_BYTES

    key = cli(gf_env, "keys", "create", "big").stdout.strip()
    name = "b" * 240
    body = json.dumps({"points": [{"metric": name, "type": "counter"}] * 1000}).encode()
    assert len(body) > 3 * MAX_HEAD_BYTES
    request = (
        b"POST /api/metrics/batch HTTP/1.1\r\nHost: t\r\n"
        b"Authorization: Bearer " + key.encode() + b"\r\n"
        b"Content-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request * 3)
        answers = _responses(sock, 3)
    assert [a.split(b"\r\n", 1)[0] for a in answers] == [b"HTTP/1.1 202 Accepted"] * 3
    with httpx.Client(base_url=server.url, timeout=10) as http:
        r = http.get(
            f"/api/metrics/{name}",
            params={"agg": "count", "interval": "day"},
            headers={"Authorization": f"Bearer {key}"},
        )
    assert sum(p["value"] for p in r.json()["points"]) == 3000


def test_a_client_gone_before_its_body_is_logged_without_a_traceback(
    server: Server, gf_env: dict[str, str]
) -> None:
    key = cli(gf_env, "keys", "create", "gone").stdout.strip()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            b"POST /api/metrics/counter HTTP/1.1\r\nHost: t\r\n"
            b"Authorization: Bearer " + key.encode() + b"\r\n"
            b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
            b'{"metric": "go'
        )
    assert server.log is not None
    deadline = time.monotonic() + 10
    while "client_disconnected" not in server.log.read_text():
        assert time.monotonic() < deadline, server.log.read_text()
        time.sleep(0.05)
    log = server.log.read_text()
    assert "unhandled_error" not in log
    assert "Traceback" not in log
    with httpx.Client(base_url=server.url, timeout=10) as http:
        r = http.get("/api/metrics/go", headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 404  # nothing was written


def test_a_request_that_hits_a_bug_gets_the_envelope_and_its_connection_stays_open(
    server: Server, gf_env: dict[str, str]
) -> None:
    """A bug (here: a stored cell its reader refuses, as a corrupt database gives) is
    a 500 with the envelope and the key's rate-limit headers, logged once with its
    traceback; the keep-alive connection carries the client's next request (uvicorn
    closed it after every 500, so a pooled POST that followed failed)."""
    from glowing_fiesta.aggregate import VALUES_TAG

    key = cli(gf_env, "keys", "create", "bug").stdout.strip()
    auth = f"Authorization: Bearer {key}\r\n".encode()
    with httpx.Client(base_url=server.url, timeout=10) as http:
        headers = {"Authorization": f"Bearer {key}"}
        assert http.post("/api/metrics/value", json={"metric": "v", "value": 3}, headers=headers)
        day = int(time.time()) // 86400 * 86400
        query = f"/api/metrics/v?interval=day&from={day}&to={day + 86400}"
        r = http.get(f"{query}&agg=count", headers=headers)  # rolled up by now
        assert [p["value"] for p in r.json()["points"]] == [1]
    database = gf_env["GF_DATABASE_URL"].removeprefix("sqlite:///")
    with sqlite3.connect(database) as db:
        changed = db.execute(
            "UPDATE rollups SET sketch = ? WHERE res = 86400", (bytes([VALUES_TAG, 1, 2]),)
        ).rowcount
    assert changed == 1
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(f"GET {query}&agg=p99 HTTP/1.1\r\nHost: t\r\n".encode() + auth + b"\r\n")
        failed = _responses(sock, 1)[0]
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
        after = _responses(sock, 1)[0]
    head, _, body = failed.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 500 ")
    assert b"x-ratelimit-remaining: " in head
    assert json.loads(body)["error"]["code"] == "internal_error"
    assert after.startswith(b"HTTP/1.1 200 OK\r\n")
    assert server.log is not None
    log = server.log.read_text()
    assert log.count("unhandled_error") == 1
    assert "ValueError: corrupt stored values" in log
    assert "Exception in ASGI application" not in log
