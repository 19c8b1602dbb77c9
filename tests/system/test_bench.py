"""The benchmark's smoke test: a tiny workload end to end, and the report's shape.

Speed is never asserted here; `glowing-fiesta bench` measures it.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from glowing_fiesta.bench.dataset import HOT, Dataset, line_protocol
from tests.system.conftest import EXE, Server, cli, free_port

pytestmark = pytest.mark.system


def test_bench_runs_a_tiny_workload_and_reports_every_figure(
    gf_env: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "report.json"
    done = cli(
        gf_env,
        "bench",
        "--runs",
        "2",
        "--points",
        "3000",
        "--single-seconds",
        "1",
        "--open-rate",
        "50",
        "--open-seconds",
        "1",
        "--query-repeats",
        "2",
        "--json",
        str(out),
    )
    report = json.loads(out.read_text())
    summary = report["summary"]
    for figure in [
        "ingest_points_per_s",
        "last_202_to_queryable_s",
        "disk_bytes_per_point",
        "server_peak_rss_mb",
        "single_max_req_per_s",
        "single_client_cpu_pct",  # wrk's too, when it is the client
        "open_loop_p99_ms",
        "open_loop_client_late_ms",
        "query_7d_hour_median_ms",
        "query_1d_minute_median_ms",
        "query_7d_hour_p99_median_ms",
    ]:
        assert summary[figure]["runs"] == 2, figure
        assert summary[figure]["min"] <= summary[figure]["median"] <= summary[figure]["max"]
    assert summary["ingest_errors"]["max"] == 0
    assert summary["open_loop_errors"]["max"] == 0
    assert summary["last_202_to_queryable_s"]["max"] < 60  # every point became visible
    env = report["environment"]
    assert {"date", "glowing_fiesta", "python", "sqlite", "machine", "load_average"} <= set(env)
    assert "ingest_points_per_s" in done.stdout  # the table


def test_the_data_set_is_deterministic_and_shaped_as_documented() -> None:
    a = list(Dataset(points=3000, end=1_700_000_000).batches())
    b = list(Dataset(points=3000, end=1_700_000_000).batches())
    assert a == b
    points = [p for batch in a for p in batch]
    assert len(points) == 3000
    assert all(len(batch) == 1000 for batch in a)
    assert sum(1 for p in points if p[0] == HOT) == 1000
    assert {p[1] for p in points if p[0] != HOT} == {"counter", "value"}
    assert all(1_700_000_000 - 7 * 86400 <= p[3] < 1_700_000_000 for p in points)
    first = line_protocol(a[0][:1]).decode()
    assert first.startswith("hot value=")
    assert first.endswith(str(round(a[0][0][3] * 1000) * 1_000_000))


def _refused(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [EXE, "bench", *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode != 0
    assert "Traceback" not in done.stderr, done.stderr
    assert done.stdout == ""
    return done.stderr


def test_bench_says_why_it_cannot_run_and_stops(
    gf_env: dict[str, str], server: Server, tmp_path: Path
) -> None:
    tiny = ("--runs", "1", "--points", "1000", "--workload", "ingest")
    # A key the service refuses: said at once, not after a minute of waiting.
    started = time.monotonic()
    stderr = _refused(gf_env, "--url", server.url, "--key", "gf_nope_xx", *tiny)
    assert "refused the key: 401" in stderr
    assert time.monotonic() - started < 30
    # A write-only key can ingest but not read what it wrote.
    writer = cli(gf_env, "keys", "create", "w", "--scopes", "write").stdout.strip()
    assert "read: 403" in _refused(gf_env, "--url", server.url, "--key", writer, *tiny)
    # Nothing listening, or not a URL.
    assert "cannot reach" in _refused(
        gf_env, "--url", f"http://127.0.0.1:{free_port()}", "--key", writer, *tiny
    )
    assert "--url" in _refused(gf_env, "--url", "notaurl", "--key", writer, *tiny)
    # The query workload reads what ingest writes.
    assert "choose ingest too" in _refused(gf_env, "--workload", "query")
