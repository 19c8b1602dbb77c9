"""The `glowing-fiesta bench` workloads against two peers: InfluxDB 1.x and VictoriaMetrics.

Each run starts the peer's own binary (from Debian's packages, not its system service) on
a fresh temp data dir and a loopback port, sends it the same deterministic data set as
line protocol, measures the same figures under the same names as the Glowing Fiesta bench
(see glowing_fiesta.bench.runner), and stops it in `finally`.

    .venv/bin/python bench/compare/peers.py --peer influxdb --points 30000 --runs 1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, ClassVar

import aiohttp

from glowing_fiesta.bench import load
from glowing_fiesta.bench.dataset import HOT, Dataset, line_protocol
from glowing_fiesta.bench.runner import Options as BenchOptions
from glowing_fiesta.bench.runner import Run, single_writes, summarise, table
from glowing_fiesta.bench.server import MemorySampler

DB = "bench"
# Glowing Fiesta's single-write workload posts a counter increment to one of 100 metrics
# with the server's clock; the peers get the same as one line without a timestamp.
SINGLE_METRICS = 100


@dataclass
class Options(BenchOptions):
    """The knobs of `glowing-fiesta bench`, with the same defaults, plus the peers' own."""

    settle_seconds: float = 10.0  # InfluxDB: wait this long after the last write, then du


# ---------------------------------------------------------------------------- servers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def disk_usage(path: Path) -> tuple[int, int]:
    """(bytes allocated on disk, apparent bytes) of the regular files under `path`.

    Allocated is what `du -sB1` counts (sparse files count only their written blocks);
    apparent is what `du -sb` counts, less the directory entries themselves.
    """
    allocated = apparent = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                st = os.lstat(os.path.join(root, name))
            except OSError:  # a part merged away while we walk
                continue
            allocated += st.st_blocks * 512
            apparent += st.st_size
    return allocated, apparent


def package_version(package: str) -> str:
    dpkg = shutil.which("dpkg-query")
    if dpkg is None:
        return "unknown"
    out = subprocess.run(  # noqa: S603 - dpkg-query from PATH, fixed arguments
        [dpkg, "-W", "-f=${Version}", package], capture_output=True, text=True, check=False
    )
    return out.stdout.strip() or "unknown"


def _http(
    method: str, url: str, data: bytes | None = None, timeout: float = 5.0
) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - loopback
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:  # noqa: S310
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@dataclass
class Query:
    """One query: GET path?params."""

    path: str
    params: dict[str, str]


class Peer(ABC):
    """A peer server on a temp dir: start, the requests of each workload, stop."""

    name: ClassVar[str]
    package: ClassVar[str]
    binary: ClassVar[str]
    durability: ClassVar[str]

    def __init__(self) -> None:
        self.port = free_port()
        self.tmp = tempfile.TemporaryDirectory(prefix=f"gf-peer-{self.name}-")
        self.root = Path(self.tmp.name)
        self.store = self.root / "store"  # all the peer's data, and nothing else
        self.store.mkdir()
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError(f"{self.name} is not started")
        return self.proc.pid

    @abstractmethod
    def command(self) -> list[str]: ...

    @abstractmethod
    def ready(self) -> bool: ...

    @abstractmethod
    def after_start(self) -> None:
        """Anything to do once the server answers (create the database)."""

    def start(self) -> None:
        exe = shutil.which(self.binary)
        if exe is None:
            raise RuntimeError(f"{self.binary} not found: apt-get install -y {self.package}")
        self._log = (self.root / "server.log").open("ab")
        self.proc = subprocess.Popen(  # noqa: S603 - the peer's binary, arguments built here
            [exe, *self.command()], stdout=self._log, stderr=subprocess.STDOUT, cwd=self.root
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited at start-up: {self.log_tail()}")
            try:
                if self.ready():
                    self.after_start()
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not start: {self.log_tail()}")

    def log_tail(self) -> str:
        try:
            return (self.root / "server.log").read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def stop(self) -> None:
        try:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(60)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(10)
        finally:
            if self._log is not None:
                self._log.close()
            self.tmp.cleanup()

    # -- workloads

    @property
    @abstractmethod
    def write_path(self) -> str:
        """Path and query string of a line-protocol write."""

    @abstractmethod
    def count_query(self, start: float, end: float) -> Query:
        """A query whose answer `count()` reads: points of the hot metric in [start, end)."""

    @abstractmethod
    def count(self, body: Any) -> int: ...

    @abstractmethod
    def queries(self, end: float) -> dict[str, Query]:
        """The three timed queries, by figure name."""

    @abstractmethod
    def buckets(self, body: Any) -> int:
        """Buckets in a query answer (to check it is not empty or an error)."""

    def flush(self, settle_seconds: float, last_write: float) -> dict[str, Any]:
        """Bring the data to disk the peer's own way before `disk()`; notes on how."""
        return {}

    def disk(self) -> tuple[int, int]:
        return disk_usage(self.store)

    def disk_breakdown(self) -> dict[str, int]:
        """Allocated bytes per top-level folder of the store (for the notes)."""
        return {p.name: disk_usage(p)[0] for p in sorted(self.store.iterdir()) if p.is_dir()}


class InfluxDB(Peer):
    """InfluxDB 1.x (`influxd run -config`), TSM engine, WAL fsync on every write."""

    name = "influxdb"
    package = "influxdb"
    binary = "influxd"
    durability = (
        "durable: every write is in the WAL and fsynced before the 204 "
        '(wal-fsync-delay = "0s", the default)'
    )

    def __init__(self, compact_after: str | None = None) -> None:
        super().__init__()
        self.compact_after = compact_after
        self.rpc_port = free_port()
        self.config = self.root / "influxdb.conf"
        self.config.write_text(self._config())

    def _config(self) -> str:
        s = self.store
        # Defaults everywhere except: loopback ports, temp dirs, no phoning home, no
        # _internal monitor database (it would write into the same dir every 10 s), and
        # no per-request HTTP log or query log (Glowing Fiesta logs at WARNING in the
        # bench, and 10^4 log lines a second would bench the terminal, not the engine).
        return f"""\
reporting-disabled = true
bind-address = "127.0.0.1:{self.rpc_port}"

[meta]
  dir = "{s / "meta"}"

[data]
  dir = "{s / "data"}"
  wal-dir = "{s / "wal"}"
  wal-fsync-delay = "0s"
  query-log-enabled = false
{self._compaction()}

[monitor]
  store-enabled = false

[http]
  enabled = true
  bind-address = "127.0.0.1:{self.port}"
  auth-enabled = false
  log-enabled = false
  pprof-enabled = false

[logging]
  level = "warn"
"""

    def _compaction(self) -> str:
        if self.compact_after is None:
            return ""  # the defaults: 10m0s and 4h0m0s
        return (
            f'  cache-snapshot-write-cold-duration = "{self.compact_after}"\n'
            f'  compact-full-write-cold-duration = "{self.compact_after}"'
        )

    def command(self) -> list[str]:
        return ["run", "-config", str(self.config)]

    def ready(self) -> bool:
        return _http("GET", f"{self.url}/ping")[0] == 204

    def after_start(self) -> None:
        body = urllib.parse.urlencode({"q": f"CREATE DATABASE {DB}"}).encode()
        status, text = _http("POST", f"{self.url}/query", body)
        if status != 200 or b'"error"' in text:
            raise RuntimeError(f"CREATE DATABASE failed: {status} {text[:200]!r}")

    @property
    def write_path(self) -> str:
        return f"/write?db={DB}&precision=ns"

    @staticmethod
    def _select(agg: str, start_ms: int, end_ms: int, group: str = "") -> Query:
        """`SELECT agg FROM hot WHERE time in [start, end)`, grouped by `group`."""
        q = f"SELECT {agg} FROM {HOT} WHERE time >= {start_ms}ms AND time < {end_ms}ms"  # noqa: S608 - InfluxQL from constants and integers
        if group:
            q += f" GROUP BY time({group})"
        return Query("/query", {"db": DB, "q": q, "epoch": "s"})

    def count_query(self, start: float, end: float) -> Query:
        return self._select("count(value)", round(start * 1000), round(end * 1000))

    @staticmethod
    def _series(body: Any) -> list[Any]:
        result = body["results"][0]
        if "error" in result:
            raise RuntimeError(f"InfluxQL error: {result['error']}")
        series = result.get("series") or [{"values": []}]
        values: list[Any] = series[0]["values"]
        return values

    def count(self, body: Any) -> int:
        return sum(int(v[1] or 0) for v in self._series(body))

    def queries(self, end: float) -> dict[str, Query]:
        e = int(end) * 1000
        week, day = e - 7 * 86400 * 1000, e - 86400 * 1000
        return {
            "query_7d_hour": self._select("mean(value)", week, e, "1h"),
            "query_1d_minute": self._select("mean(value)", day, e, "1m"),
            "query_7d_hour_p99": self._select("percentile(value, 99)", week, e, "1h"),
        }

    def buckets(self, body: Any) -> int:
        return len(self._series(body))

    def flush(self, settle_seconds: float, last_write: float) -> dict[str, Any]:
        # No API forces a snapshot or compaction in 1.x: the cache goes to TSM at 25 MB
        # or after 10 min without writes, so what is still in the WAL is counted too.
        time.sleep(max(0.0, last_write + settle_seconds - time.monotonic()))
        return {"disk_measured_after_s": round(time.monotonic() - last_write, 1)}


class VictoriaMetrics(Peer):
    """VictoriaMetrics single-node, Influx line protocol on /write, PromQL/MetricsQL reads."""

    name = "victoria-metrics"
    package = "victoria-metrics"
    binary = "victoria-metrics"
    durability = (
        "not synchronously durable: the 204 comes when the rows are in memory; they go "
        "to in-memory parts within about 1 s and to files 5-10 s later (no fsync per "
        "write), so a crash loses up to the last ~10 s"
    )

    def after_start(self) -> None:
        """Nothing to create: metrics appear on first write."""

    def command(self) -> list[str]:
        return [
            f"-storageDataPath={self.store}",
            f"-httpListenAddr=127.0.0.1:{self.port}",
            "-retentionPeriod=100y",
            "-search.disableCache",
            "-loggerLevel=WARN",
        ]

    def ready(self) -> bool:
        return _http("GET", f"{self.url}/health")[0] == 200

    @property
    def write_path(self) -> str:
        # Line protocol: measurement `hot`, field `value` → metric `hot_value`.
        return "/write?precision=ns"

    def count_query(self, start: float, end: float) -> Query:
        # (t - window, t]: a minute of slack so the data set's first point, at `start`
        # exactly, is inside (there is nothing before it).
        window = round(end - start) + 60
        return Query(
            "/api/v1/query",
            {"query": f"sum(count_over_time({HOT}_value[{window}s]))", "time": f"{end:.3f}"},
        )

    @staticmethod
    def _result(body: Any) -> list[Any]:
        if body.get("status") != "success":
            raise RuntimeError(f"MetricsQL error: {body}")
        result: list[Any] = body["data"]["result"]
        return result

    def count(self, body: Any) -> int:
        return sum(int(float(r["value"][1])) for r in self._result(body))

    def queries(self, end: float) -> dict[str, Query]:
        # query_range evaluates at start, start+step, ..., end over the window (t-w, t]:
        # starting one step in gives the same 168 (resp. 1440) buckets as [start, end).
        e = int(end)

        def rng(expr: str, days: int, step: int) -> Query:
            return Query(
                "/api/v1/query_range",
                {
                    "query": expr,
                    "start": str(e - days * 86400 + step),
                    "end": str(e),
                    "step": f"{step}s",
                },
            )

        hot = f"{HOT}_value"
        return {
            "query_7d_hour": rng(f"avg_over_time({hot}[1h])", 7, 3600),
            "query_1d_minute": rng(f"avg_over_time({hot}[1m])", 1, 60),
            "query_7d_hour_p99": rng(f"quantile_over_time(0.99, {hot}[1h])", 7, 3600),
        }

    def buckets(self, body: Any) -> int:
        result = self._result(body)
        return len(result[0]["values"]) if result else 0

    def flush(self, settle_seconds: float, last_write: float) -> dict[str, Any]:
        # In 1.79 force_flush turns the pending rows into in-memory parts and returns;
        # those reach files when at least 5 s old, on a 5 s ticker. So: flush, then wait
        # until the store has not changed for longer than that.
        status, text = _http("GET", f"{self.url}/internal/force_flush", timeout=120)
        if status != 200:
            raise RuntimeError(f"force_flush failed: {status} {text[:200]!r}")
        waited = wait_stable(self, limit=120.0, quiet=12.0)
        return {
            "disk_measured_after": "/internal/force_flush, then 12 s without a size change",
            "disk_measured_after_s": round(time.monotonic() - last_write, 1),
            "disk_flush_wait_s": round(waited, 1),
        }


PEERS: dict[str, type[Peer]] = {p.name: p for p in (InfluxDB, VictoriaMetrics)}


# ------------------------------------------------------------------------- load loops


def _session(connections: int) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=connections),
        headers={"Content-Type": "text/plain; charset=utf-8"},
        timeout=aiohttp.ClientTimeout(total=60),
    )


@dataclass
class Visible:
    seconds: float  # inf if never within the limit
    probes: int
    first_count: int  # what the first probe saw


async def wait_visible(
    peer: Peer, expected: int, start: float, end: float, give_up_after: float = 60.0
) -> Visible:
    """Until the peer's count query over [start, end] sees `expected` points (polled every
    10 ms from the last write, as load.wait_visible does)."""
    q = peer.count_query(start, end + 1)
    started = time.perf_counter()
    probes, first = 0, -1
    async with _session(1) as http:
        while time.perf_counter() - started < give_up_after:
            async with http.get(peer.url + q.path, params=q.params) as r:
                n = peer.count(await r.json()) if r.status == 200 else -1
            probes += 1
            first = n if probes == 1 else first
            if n >= expected:
                return Visible(time.perf_counter() - started, probes, first)
            await asyncio.sleep(0.01)
    return Visible(float("inf"), probes, first)


async def query_latency(peer: Peer, q: Query, repeats: int) -> tuple[list[float], int]:
    """Sorted seconds per query, `repeats` times after two warm-ups; and the buckets."""
    out: list[float] = []
    buckets = 0
    async with _session(1) as http:
        for i in range(repeats + 2):
            t = time.perf_counter()
            async with http.get(peer.url + q.path, params=q.params) as r:
                body = await r.read()
                if r.status != 200:
                    raise RuntimeError(f"query failed: {r.status} {body[:300]!r}")
            if i >= 2:
                out.append(time.perf_counter() - t)
            else:
                buckets = peer.buckets(json.loads(body))
    if buckets == 0:
        raise RuntimeError(f"{peer.name}: query {q} returned no buckets")
    return sorted(out), buckets


def single_line(i: int) -> bytes:
    return b"single.m%d value=1" % (i % SINGLE_METRICS)


def writes(peer: Peer) -> load.Endpoint:
    """The peer's line-protocol write endpoint: 204 means written."""
    return load.Endpoint(
        peer.url + peer.write_path, {"Content-Type": "text/plain; charset=utf-8"}, accepted=204
    )


_WRK_LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "text/plain; charset=utf-8"
local counter = 0
request = function()
  counter = counter + 1
  return wrk.format(nil, "%s", nil, "single.m" .. (counter %% %d) .. " value=1")
end
"""


# ---------------------------------------------------------------------------- one run


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _cpu_pct(cpu0: float, wall0: float) -> float:
    return 100 * (_cpu() - cpu0) / (time.perf_counter() - wall0) / (os.cpu_count() or 1)


def run_ingest(peer: Peer, opts: Options, data: Dataset, out: Run, deadline: float) -> None:
    bodies = [(len(b), line_protocol(b)) for b in data.batches()]
    cpu0, wall0 = _cpu(), time.perf_counter()
    with MemorySampler(peer.pid) as sampler:
        result = asyncio.run(
            load.ingest(writes(peer), bodies, connections=opts.connections, deadline=deadline)
        )
        last_write = time.monotonic()
        visible = asyncio.run(wait_visible(peer, data.expected_hot_count(), data.start, data.end))
    out.figures["server_peak_rss_mb"] = sampler.peak_kb / 1024
    out.figures["ingest_points_per_s"] = result.rate
    out.figures["ingest_errors"] = result.errors
    out.figures["last_202_to_queryable_s"] = visible.seconds
    out.notes["visible_probes"] = visible.probes
    out.notes["visible_first_probe_count"] = visible.first_count
    out.figures["ingest_client_cpu_pct"] = _cpu_pct(cpu0, wall0)
    if result.error_sample:
        out.notes["ingest_error_sample"] = result.error_sample
    del bodies
    out.notes.update(peer.flush(opts.settle_seconds, last_write))
    allocated, apparent = peer.disk()
    out.figures["disk_bytes_per_point"] = allocated / max(1, result.points)
    out.figures["disk_apparent_bytes_per_point"] = apparent / max(1, result.points)
    out.notes["disk_allocated_bytes_by_dir"] = peer.disk_breakdown()


def run_queries(peer: Peer, opts: Options, end: float, out: Run) -> None:
    buckets: dict[str, int] = {}
    for name, q in peer.queries(end).items():
        lat, buckets[name] = asyncio.run(query_latency(peer, q, opts.query_repeats))
        out.figures[f"{name}_median_ms"] = statistics.median(lat) * 1000
        out.figures[f"{name}_p95_ms"] = load.percentile(lat, 0.95) * 1000
    out.notes["query_buckets"] = buckets


def run_single(peer: Peer, opts: Options, out: Run) -> None:
    lua = _WRK_LUA % (peer.write_path, SINGLE_METRICS)
    single_writes(opts, out, base_url=peer.url, lua=lua, to=writes(peer), body=single_line)


def one_run(peer_cls: type[Peer], opts: Options) -> Run:
    """A fresh server on a fresh dir: ingest, query, single (the order of the GF bench)."""
    out = Run()
    peer = peer_cls()
    try:
        peer.start()
        deadline = time.monotonic() + opts.max_seconds
        # The data set ends at the same minute boundary as the GF bench's, and the queries
        # use this same `end`, so both cover exactly the data set's seven days.
        end = float(int(time.time()) // 60 * 60 - 60)
        data = Dataset(points=opts.points, metrics=opts.metrics, end=end)
        out.notes["end"] = end
        run_ingest(peer, opts, data, out, deadline)
        run_queries(peer, opts, end, out)
        run_single(peer, opts, out)
    finally:
        peer.stop()
    if peer_cls is InfluxDB:
        influx_compacted(opts, data, out)
    return out


def influx_compacted(opts: Options, data: Dataset, out: Run) -> None:
    """InfluxDB's footprint and query times once the data is in compacted TSM files.

    With the defaults, a shard's cache goes to TSM only at 25 MB or after 10 min without
    writes, and a full compaction after 4 h cold: 10 s after the ingest, most points are
    still in the (snappy-compressed) WAL and the queries read the in-memory cache. A
    second fresh server with those two delays shortened to seconds gets the same ingest;
    then the store is measured once it stops changing, and the queries are timed again.
    Peer-only figures (`*_compacted`): the shared table keeps the brief's defaults.
    """
    peer = InfluxDB(compact_after="5s")
    try:
        peer.start()
        bodies = [(len(b), line_protocol(b)) for b in data.batches()]
        deadline = time.monotonic() + opts.max_seconds
        result = asyncio.run(
            load.ingest(writes(peer), bodies, connections=opts.connections, deadline=deadline)
        )
        del bodies
        waited = wait_stable(peer, limit=180.0)
        allocated, _ = peer.disk()
        out.figures["disk_bytes_per_point_compacted"] = allocated / max(1, result.points)
        out.notes["compacted_after_s"] = round(waited, 1)
        out.notes["compacted_allocated_bytes_by_dir"] = peer.disk_breakdown()
        for name, q in peer.queries(data.end).items():
            lat, _ = asyncio.run(query_latency(peer, q, opts.query_repeats))
            out.figures[f"{name}_median_ms_compacted"] = statistics.median(lat) * 1000
    finally:
        peer.stop()


def wait_stable(peer: Peer, limit: float, quiet: float = 12.0) -> float:
    """Seconds until the store's size has not changed for `quiet` s (at most `limit`)."""
    started = last_change = time.monotonic()
    size = peer.disk()[0]
    while time.monotonic() - started < limit and time.monotonic() - last_change < quiet:
        time.sleep(1.0)
        now = peer.disk()[0]
        if now != size:
            size, last_change = now, time.monotonic()
    return time.monotonic() - started


def environment(peer_cls: type[Peer], opts: Options) -> dict[str, Any]:
    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "peer": peer_cls.name,
        "package": peer_cls.package,
        # The Debian build of VictoriaMetrics reports an empty -version: the package's.
        "version": package_version(peer_cls.package),
        "binary": shutil.which(peer_cls.binary),
        "durability": peer_cls.durability,
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "wrk": shutil.which("wrk"),
        "machine": f"{platform.machine()} {os.cpu_count()} cores, {platform.platform()}",
        "load_average": os.getloadavg(),
        "options": asdict(opts),
    }


def run(peer_cls: type[Peer], opts: Options, progress: bool = True) -> dict[str, Any]:
    """`opts.runs` runs against one peer: {environment, summary, runs} like runner.run."""
    env = environment(peer_cls, opts)
    runs: list[Run] = []
    for i in range(opts.runs):
        if progress:
            print(f"[{peer_cls.name}] run {i + 1}/{opts.runs}", file=sys.stderr, flush=True)
        runs.append(one_run(peer_cls, opts))
    return report(env, runs)


def report(env: dict[str, Any], runs: list[Run]) -> dict[str, Any]:
    """Runs made under `env` (from `environment`) as {environment, summary, runs}."""
    env["load_average_after"] = os.getloadavg()
    return {"environment": env, "summary": summarise(runs), "runs": [asdict(r) for r in runs]}


@dataclass
class _Args:
    peers: list[str] = field(default_factory=list)
    opts: Options = field(default_factory=Options)
    json_path: str | None = None


def _parse(argv: list[str] | None) -> _Args:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--peer", action="append", choices=sorted(PEERS), help="repeat for several; default: all"
    )
    p.add_argument("--runs", type=int, default=Options.runs)
    p.add_argument("--points", type=int, default=Options.points)
    p.add_argument("--json", dest="json_path", default=None)
    a = p.parse_args(argv)
    return _Args(a.peer or list(PEERS), Options(runs=a.runs, points=a.points), a.json_path)


def stop_on_sigterm() -> None:
    """SIGTERM raises SystemExit, so every `finally` stops the servers it started."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def main(argv: list[str] | None = None) -> None:
    stop_on_sigterm()
    args = _parse(argv)
    reports = {}
    for name in args.peers:
        reports[name] = run(PEERS[name], args.opts)
        print(f"== {name} {reports[name]['environment']['version']}")
        print(table(reports[name]["summary"]))
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(reports, indent=2))


if __name__ == "__main__":
    main()
