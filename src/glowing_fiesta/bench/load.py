"""Load loops against a running Glowing Fiesta (aiohttp keep-alive clients, and wrk).

Every loop is bounded in count and in time. Latencies of the open loop are measured
from each request's scheduled send time, so a stalled server cannot hide its stall by
slowing the client down (no coordinated omission).
"""

from __future__ import annotations

import asyncio
import gc
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


@dataclass(frozen=True, slots=True)
class Ingest:
    points: int
    seconds: float
    errors: int
    error_sample: str

    @property
    def rate(self) -> float:
        return self.points / self.seconds if self.seconds else 0.0


@dataclass(frozen=True, slots=True)
class Rate:
    requests: int
    seconds: float
    errors: int
    p50_ms: float
    p99_ms: float
    tool: str

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


@dataclass(frozen=True, slots=True)
class Latency:
    requests: int
    errors: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    achieved_rate: float
    client_late_ms: float  # the most any request was sent after its scheduled time


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where a load loop POSTs, with what headers, and the status that means accepted.

    The loops below are the same for Glowing Fiesta and for the peers it is compared
    with (`bench/compare/`); only the endpoint differs.
    """

    url: str
    headers: dict[str, str]
    accepted: int = 202
    retry: tuple[int, ...] = (429, 503)


class BenchError(Exception):
    """The benchmark cannot go on (a refused key, a failed query): said to the user."""


# The key itself was refused: retrying or waiting cannot help.
_REFUSED = (401, 403)


def gf_endpoint(url: str, key: str, path: str) -> Endpoint:
    return Endpoint(
        f"{url}{path}", {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    )


def _session(headers: dict[str, str], connections: int) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=connections),
        headers=headers,
        timeout=aiohttp.ClientTimeout(total=60),
    )


async def ingest(
    to: Endpoint, bodies: list[tuple[int, bytes]], *, connections: int, deadline: float
) -> Ingest:
    """POST every (points, body) over `connections` keep-alive connections."""
    queue = list(reversed(bodies))
    errors = 0
    sample = ""
    accepted = 0
    async with _session(to.headers, connections) as http:

        async def worker() -> None:
            nonlocal errors, sample, accepted
            while queue and time.monotonic() < deadline:
                n, body = queue.pop()
                for _ in range(5):  # refused under load: retry as a client should
                    async with http.post(to.url, data=body) as r:
                        text = await r.read()
                        if r.status == to.accepted:
                            accepted += n
                            break
                        errors += 1
                        sample = sample or f"{r.status} {text[:200]!r}"
                        if r.status in _REFUSED:
                            queue.clear()
                            raise BenchError(f"the service refused the key: {sample}")
                        if r.status not in to.retry:
                            break
                        await asyncio.sleep(float(r.headers.get("Retry-After", "1")))

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.perf_counter() - started
    return Ingest(accepted, elapsed, errors, sample)


async def wait_visible(
    url: str,
    key: str,
    metric: str,
    expected: int,
    *,
    start: float,
    end: float,
    give_up_after: float = 60.0,
) -> float:
    """Seconds until a count query over [start, end) sees `expected` points (inf if never)."""
    started = time.perf_counter()
    params = {"from": str(start), "to": str(end + 1), "interval": "day", "agg": "count"}
    async with _session({"Authorization": f"Bearer {key}"}, 1) as http:
        while time.perf_counter() - started < give_up_after:
            async with http.get(f"{url}/api/series", params={"metric": metric, **params}) as r:
                if r.status in _REFUSED:
                    raise BenchError(
                        f"the service refused the key's read: {r.status} {await r.text()}"
                    )
                if r.status == 200:
                    body: Any = await r.json()
                    if sum(p["value"] or 0 for p in body["points"]) >= expected:
                        return time.perf_counter() - started
            await asyncio.sleep(0.01)
    return float("inf")


def gf_single_body(i: int) -> bytes:
    return b'{"metric": "single.m%d"}' % (i % 100)


async def single_max_aiohttp(
    to: Endpoint, body: Callable[[int], bytes], seconds: float, connections: int
) -> Rate:
    """Closed-loop maximum of one-point writes (used where wrk is not installed)."""
    latencies: list[float] = []
    errors = 0
    deadline = time.monotonic() + seconds
    async with _session(to.headers, connections) as http:

        async def worker(w: int) -> None:
            nonlocal errors
            i = w
            while time.monotonic() < deadline:
                t = time.perf_counter()
                async with http.post(to.url, data=body(i)) as r:
                    await r.read()
                    if r.status != to.accepted:
                        errors += 1
                latencies.append(time.perf_counter() - t)
                i += connections

        started = time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(connections)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return Rate(
        len(latencies),
        elapsed,
        errors,
        percentile(latencies, 0.5) * 1000,
        percentile(latencies, 0.99) * 1000,
        "aiohttp",
    )


GF_WRK_LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %s"
local counter = 0
request = function()
  counter = counter + 1
  return wrk.format(nil, "/api/metrics/counter", nil,
                    '{"metric": "single.m' .. (counter %% 100) .. '"}')
end
"""


def run_wrk(url: str, lua: str, seconds: float, connections: int) -> Rate | None:
    """The maximum rate wrk reaches with the request that `lua` builds; None without wrk."""
    wrk = shutil.which("wrk")
    if wrk is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "load.lua"
        script.write_text(lua)
        out = subprocess.run(  # noqa: S603 - wrk from PATH, arguments built here
            [
                wrk,
                "-t2",
                f"-c{connections}",
                f"-d{max(1, round(seconds))}s",
                "--latency",
                "-s",
                str(script),
                url,
            ],
            capture_output=True,
            text=True,
            timeout=seconds + 60,
            check=True,
        ).stdout
    return parse_wrk(out)


def parse_wrk(out: str) -> Rate:
    """wrk's summary as a Rate."""
    requests = re.search(r"(\d+) requests in", out)
    elapsed = re.search(r"requests in ([\d.]+)(ms|s|m)\b", out)
    if requests is None or elapsed is None:
        raise RuntimeError(f"unexpected wrk output: {out[:500]}")
    seconds = float(elapsed.group(1)) * {"ms": 0.001, "s": 1.0, "m": 60.0}[elapsed.group(2)]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(bad.group(1)) if bad else 0) + (sum(map(int, sock.groups())) if sock else 0)

    def ms(label: str) -> float:
        m = re.search(rf"{label}\s+([\d.]+)(us|ms|s)\b", out)
        if m is None:
            return float("nan")
        return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]

    return Rate(int(requests.group(1)), seconds, errors, ms("50%"), ms("99%"), "wrk")


async def open_loop(
    to: Endpoint, body: Callable[[int], bytes], rate: float, seconds: float
) -> Latency:
    """`rate` one-point writes a second for `seconds`, each timed from its schedule.

    Each request's task is made when it is due, not all up front: 10,000 tasks made
    before the first send left this client up to 90 ms late on its first requests on a
    slow machine, and lateness counts as the server's latency. How late the client was
    is reported (`client_late_ms`), so a client that cannot keep up is seen. Measured
    there (bench `single`): p95/p99 134/329 ms with tasks made up front; 76/162 ms made
    when due (client up to 63 ms late); 25-28/31-42 ms with its collector off as well
    (9-12 ms late) and the pause of `runner.single_writes`."""
    total = int(rate * seconds)
    latencies: list[float] = []
    errors = 0
    late = 0.0
    async with _session(to.headers, 256) as http:
        loop = asyncio.get_running_loop()

        async def one(i: int, scheduled: float) -> None:
            nonlocal errors
            try:
                async with http.post(to.url, data=body(i)) as r:
                    await r.read()
                    if r.status != to.accepted:
                        errors += 1
            except aiohttp.ClientError:
                errors += 1
            latencies.append(loop.time() - scheduled)

        running: set[asyncio.Task[None]] = set()
        # The client's own collector paused it for tens of ms at a time. Reference
        # counting frees a run's garbage; the few cycles it leaves wait for the end.
        collecting = gc.isenabled()
        gc.collect()
        gc.disable()
        try:
            started = time.perf_counter()
            begin = loop.time() + 0.1
            for i in range(total):
                scheduled = begin + i / rate
                delay = scheduled - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                late = max(late, loop.time() - scheduled)
                task = loop.create_task(one(i, scheduled))
                running.add(task)
                task.add_done_callback(running.discard)
            await asyncio.gather(*running)
            elapsed = time.perf_counter() - started
        finally:
            if collecting:
                gc.enable()
    latencies.sort()
    return Latency(
        total,
        errors,
        percentile(latencies, 0.5) * 1000,
        percentile(latencies, 0.95) * 1000,
        percentile(latencies, 0.99) * 1000,
        latencies[-1] * 1000 if latencies else float("nan"),
        total / elapsed,
        late * 1000,
    )


async def query_latency(
    url: str, key: str, metric: str, params: dict[str, str], repeats: int
) -> list[float]:
    """Seconds per query, `repeats` times after two warm-ups."""
    out: list[float] = []
    async with _session({"Authorization": f"Bearer {key}"}, 1) as http:
        for i in range(repeats + 2):
            t = time.perf_counter()
            async with http.get(f"{url}/api/series", params={"metric": metric, **params}) as r:
                await r.read()
                if r.status != 200:
                    raise BenchError(f"a query failed: {r.status} {await r.text()}")
            if i >= 2:
                out.append(time.perf_counter() - t)
    return sorted(out)
