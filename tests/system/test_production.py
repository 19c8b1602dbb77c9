"""The production layout on real engines: two `serve` and two `worker` processes sharing
one database and one Redis; a worker is killed mid-load and restarted; the stored sum
equals the acknowledged points exactly."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from tests.services import MARIADB_URL, PG_URL, redis_prefix, server_database
from tests.system.conftest import Server, Worker, cli, free_port

pytestmark = pytest.mark.system


@pytest.fixture(params=["postgresql", "mariadb"])
def prod_env(request: pytest.FixtureRequest, gf_env: dict[str, str]) -> Iterator[dict[str, str]]:
    admin = PG_URL if request.param == "postgresql" else MARIADB_URL
    with server_database(admin) as db_url, redis_prefix() as (redis_url, prefix):
        env = dict(gf_env)
        env.update(
            GF_DATABASE_URL=db_url,
            GF_REDIS_URL=redis_url,
            GF_REDIS_PREFIX=prefix,
            GF_QUEUE_CLAIM_IDLE_SECONDS="2",
        )
        yield env


def test_two_servers_two_workers_one_killed_nothing_lost_nothing_twice(
    prod_env: dict[str, str], tmp_path: Path
) -> None:
    key = cli(prod_env, "keys", "create", "load", "--rate-limit", "1000000").stdout.strip()
    servers = [Server(prod_env, log=tmp_path / f"serve{i}.log") for i in range(2)]
    workers = [Worker(prod_env, log=tmp_path / f"worker{i}.log") for i in range(2)]
    workers[1].metrics_port = free_port()
    for s in servers:
        s.start()
    for w in workers:
        w.start()
    base = int(time.time()) - 600
    acked = [0] * 4
    failures: list[str] = []

    def client(n: int) -> None:
        auth = {"Authorization": f"Bearer {key}"}
        with httpx.Client(headers=auth, timeout=10) as http:
            for i in range(60):
                batch = [
                    {
                        "metric": "orders",
                        "type": "counter",
                        "value": 1,
                        "timestamp": base + (i * 7 + j) % 300,
                    }
                    for j in range(50)
                ]
                url = servers[(n + i) % 2].url
                r = http.post(f"{url}/api/metrics/batch", json={"points": batch})
                if r.status_code == 202:
                    acked[n] += 50
                else:
                    failures.append(r.text)

    try:
        threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        time.sleep(0.5)
        workers[0].kill()  # mid-load: whatever it had claimed stays pending in Redis
        time.sleep(0.5)
        workers[0].start()
        for t in threads:
            t.join(120)
        assert not failures, failures[:3]
        assert sum(acked) == 4 * 60 * 50

        stream = redis.Redis.from_url(prod_env["GF_REDIS_URL"])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if stream.xlen(f"{prod_env['GF_REDIS_PREFIX']}:points") == 0:
                break
            time.sleep(0.2)
        stream.close()
        with httpx.Client(
            base_url=servers[1].url, headers={"Authorization": f"Bearer {key}"}, timeout=10
        ) as http:
            got = http.get(
                "/api/metrics/orders",
                params={"from": base - 60, "to": base + 3600, "interval": "day", "agg": "sum"},
            ).json()
            ready = http.get("/ready").json()
        assert sum(p["value"] for p in got["points"]) == sum(acked)
        assert ready["checks"] == {"database": "ok", "redis": "ok"}
        # The surviving worker shows what it wrote on its own Prometheus endpoint.
        scraped = httpx.get(f"http://127.0.0.1:{workers[1].metrics_port}/metrics").text
        commits = [
            line
            for line in scraped.splitlines()
            if line.startswith("gf_writer_batch_points_count ")
        ]
        assert float(commits[0].split()[1]) > 0
    finally:
        for w in workers:
            w.stop()
        for s in servers:
            s.stop()
