"""Run the benchmark's workloads N times and report medians and spreads.

Each run of the embedded mode starts a fresh server on a fresh SQLite file, so runs do
not see each other's data. Against a given URL, each run writes under its own metric
name prefix instead.
"""

from __future__ import annotations

import asyncio
import os
import platform
import resource
import sqlite3
import statistics
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from glowing_fiesta import __version__
from glowing_fiesta.bench import load
from glowing_fiesta.bench.dataset import HOT, Dataset, json_body
from glowing_fiesta.bench.server import EmbeddedServer, MemorySampler

WORKLOADS = ("ingest", "single", "query")


@dataclass
class Options:
    url: str | None = None
    key: str | None = None
    workloads: tuple[str, ...] = WORKLOADS
    runs: int = 3
    points: int = 3_000_000
    metrics: int = 100
    connections: int = 4
    single_seconds: float = 10.0
    single_connections: int = 64
    open_rate: float = 1000.0
    open_seconds: float = 10.0
    query_repeats: int = 30
    server_workers: int = 1
    synchronous: str = "NORMAL"
    max_seconds: float = 900.0


# Seconds between the max-rate run and the open loop (see `single_writes`).
OPEN_LOOP_PAUSE_S = 5.0


@dataclass
class Target:
    """Where one run sends its load, and the embedded server behind it, if any."""

    url: str
    key: str
    data: Dataset
    server: EmbeddedServer | None = None


@dataclass
class Run:
    figures: dict[str, float] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)


class ClientCpu:
    """Share of the machine's CPU the load client used while in the block: this process
    and the children it waited for there (wrk). The server it may have started is
    waited for only once every workload is done."""

    def __enter__(self) -> ClientCpu:
        self.share = 0.0
        self._cpu, self._wall = self._now(), time.perf_counter()
        return self

    @staticmethod
    def _now() -> float:
        used = 0.0
        for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
            r = resource.getrusage(who)
            used += r.ru_utime + r.ru_stime
        return used

    def __exit__(self, *exc: object) -> None:
        wall = time.perf_counter() - self._wall
        self.share = 100 * (self._now() - self._cpu) / wall / (os.cpu_count() or 1)


def ingest(opts: Options, target: Target, out: Run) -> None:
    data = target.data
    bodies = [(len(b), json_body(b)) for b in data.batches()]  # before the clock starts
    server = target.server
    sampler = MemorySampler(server.proc.pid) if server and server.proc else None
    with ClientCpu() as cpu:
        if sampler:
            sampler.__enter__()
        deadline = time.monotonic() + opts.max_seconds
        batches = load.gf_endpoint(target.url, target.key, "/api/metrics/batch")
        result = asyncio.run(
            load.ingest(batches, bodies, connections=opts.connections, deadline=deadline)
        )
        visible = asyncio.run(
            load.wait_visible(
                target.url,
                target.key,
                data.prefix + HOT,
                data.expected_hot_count(),
                start=data.start,
                end=data.end,
            )
        )
        if sampler:
            sampler.__exit__()
            out.figures["server_peak_rss_mb"] = sampler.peak_kb / 1024
    out.figures["ingest_points_per_s"] = result.rate
    out.figures["ingest_errors"] = result.errors
    out.figures["last_202_to_queryable_s"] = visible
    out.figures["ingest_client_cpu_pct"] = cpu.share
    if result.error_sample:
        out.notes["ingest_error_sample"] = result.error_sample
    if server is not None:
        total, raw = server.disk()
        out.figures["disk_bytes_per_point"] = total / max(1, result.points)
        out.figures["raw_block_bytes_per_point"] = raw / max(1, result.points)


def query(opts: Options, target: Target, out: Run) -> None:
    end = target.data.end
    week = {"from": str(end - 7 * 86400), "to": str(end), "interval": "hour"}
    queries = {
        "query_7d_hour": week,
        "query_1d_minute": {"from": str(end - 86400), "to": str(end), "interval": "minute"},
        "query_7d_hour_p99": {**week, "agg": "p99"},
    }
    for name, params in queries.items():
        lat = asyncio.run(
            load.query_latency(
                target.url, target.key, target.data.prefix + HOT, params, opts.query_repeats
            )
        )
        out.figures[f"{name}_median_ms"] = statistics.median(lat) * 1000
        out.figures[f"{name}_p95_ms"] = load.percentile(lat, 0.95) * 1000


def single(opts: Options, target: Target, out: Run) -> None:
    counters = load.gf_endpoint(target.url, target.key, "/api/metrics/counter")
    single_writes(
        opts,
        out,
        base_url=target.url,
        lua=load.GF_WRK_LUA % target.key,
        to=counters,
        body=load.gf_single_body,
    )


def single_writes(
    opts: Options,
    out: Run,
    *,
    base_url: str,
    lua: str,
    to: load.Endpoint,
    body: Callable[[int], bytes],
) -> None:
    """The single-write workload against any target: the maximum rate (wrk running `lua`,
    else aiohttp posting `body(i)` to `to`), then the open loop."""
    with ClientCpu() as cpu:
        rate = load.run_wrk(base_url, lua, opts.single_seconds, opts.single_connections)
        if rate is None:
            rate = asyncio.run(
                load.single_max_aiohttp(to, body, opts.single_seconds, opts.single_connections)
            )
    out.figures["single_client_cpu_pct"] = cpu.share
    out.notes["single_tool"] = rate.tool
    out.figures["single_max_req_per_s"] = rate.rate
    out.figures["single_max_errors"] = rate.errors
    out.figures["single_max_p99_ms"] = rate.p99_ms
    # The open loop measures a server at 1,000 writes/s, not the aftermath of the
    # max-rate run: started right after it, on a slow machine, its first ~2.5 s had
    # p50s of 20-30 ms against ~8 ms from then on (the cause not traced; the server's
    # processes were idle between the two). Peers get the same pause.
    time.sleep(min(OPEN_LOOP_PAUSE_S, opts.single_seconds / 2))
    with ClientCpu() as cpu:
        lat = asyncio.run(load.open_loop(to, body, opts.open_rate, opts.open_seconds))
    out.figures["open_loop_client_cpu_pct"] = cpu.share
    out.figures["open_loop_rate"] = lat.achieved_rate
    out.figures["open_loop_errors"] = lat.errors
    out.figures["open_loop_p50_ms"] = lat.p50_ms
    out.figures["open_loop_p95_ms"] = lat.p95_ms
    out.figures["open_loop_p99_ms"] = lat.p99_ms
    out.figures["open_loop_max_ms"] = lat.max_ms
    out.figures["open_loop_client_late_ms"] = lat.client_late_ms


def one_run(opts: Options) -> Run:
    """One pass over the chosen workloads; figures are flat name -> number."""
    out = Run()
    end = float(int(time.time()) // 60 * 60 - 60)
    server: EmbeddedServer | None = None
    if opts.url is None or opts.key is None:
        server = EmbeddedServer(workers=opts.server_workers, synchronous=opts.synchronous)
        server.start()
        target = Target(
            server.url,
            server.key,
            Dataset(points=opts.points, metrics=opts.metrics, end=end),
            server,
        )
    else:
        prefix = f"bench{uuid.uuid4().hex[:6]}."
        target = Target(
            opts.url,
            opts.key,
            Dataset(points=opts.points, metrics=opts.metrics, end=end, prefix=prefix),
        )
    try:
        # Ingest first: the query workload reads the hot metric it wrote.
        for name, workload in (("ingest", ingest), ("query", query), ("single", single)):
            if name in opts.workloads:
                workload(opts, target, out)
    finally:
        if server is not None:
            server.stop()
    return out


def environment(opts: Options) -> dict[str, Any]:
    import aiohttp
    import uvicorn

    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "glowing_fiesta": __version__,
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "uvicorn": uvicorn.__version__,
        "aiohttp": aiohttp.__version__,
        "machine": f"{platform.machine()} {os.cpu_count()} cores, {platform.platform()}",
        "load_average": os.getloadavg(),
        "options": {k: v for k, v in asdict(opts).items() if k != "key"},
    }


def summarise(runs: list[Run]) -> dict[str, dict[str, float]]:
    """For each figure: median and spread (min, max) over the runs."""
    names = sorted({k for r in runs for k in r.figures})
    out: dict[str, dict[str, float]] = {}
    for name in names:
        values = [r.figures[name] for r in runs if name in r.figures]
        out[name] = {
            "median": statistics.median(values),
            "min": min(values),
            "max": max(values),
            "runs": len(values),
        }
    return out


def table(summary: dict[str, dict[str, float]]) -> str:
    lines = [f"{'figure':<34} {'median':>14} {'min':>14} {'max':>14}"]
    for name, s in summary.items():
        lines.append(f"{name:<34} {s['median']:>14,.2f} {s['min']:>14,.2f} {s['max']:>14,.2f}")
    return "\n".join(lines)


def run(opts: Options) -> dict[str, Any]:
    env = environment(opts)
    runs = [one_run(opts) for _ in range(opts.runs)]
    env["load_average_after"] = os.getloadavg()
    return {"environment": env, "summary": summarise(runs), "runs": [asdict(r) for r in runs]}
