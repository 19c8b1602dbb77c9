"""The service's own Prometheus metrics, defined in one place.

Each `Telemetry` has its own registry object so that tests and several in-process apps
do not share counters; `/metrics` renders the registry of the process that answers.

Except under `serve --workers N`: a scrape reaches whichever process accepts the
connection, so there the processes keep their values in files in one directory
(prometheus_client's multiprocess mode, chosen by `PROMETHEUS_MULTIPROC_DIR`) and
`/metrics` renders the sums over all of them. `serve` makes that directory and names it
in both that variable and `GF_METRICS_SHARED_DIR` for its processes; only the latter
turns the sums on, so a `PROMETHEUS_MULTIPROC_DIR` set for other programs never adds
their counts to ours.
"""

from __future__ import annotations

import os
from array import array
from collections import Counter as Tally
from pathlib import Path

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from glowing_fiesta.model import MetricType, PointBatch

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


SHARED_DIR_ENV = "GF_METRICS_SHARED_DIR"
PROMETHEUS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"


class Telemetry:
    def __init__(self, *, shared_queue: bool = False) -> None:
        """`shared_queue`: the processes write to one queue (Redis), whose depth each
        sees whole; otherwise each has a queue of its own."""
        # prometheus_client reads its variable when it is imported, to decide where
        # values live: this process must have had both from its start (`serve` sets
        # them before it starts its processes).
        self.shared_dir = os.environ.get(SHARED_DIR_ENV) or None
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "gf_http_requests",
            "HTTP requests by route and status.",
            ["route", "status"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "gf_http_request_duration_seconds",
            "HTTP request latency by route.",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.points_ingested = Counter(
            "gf_points_ingested", "Points acknowledged, by metric type.", ["type"], registry=r
        )
        # Labelled children kept: `labels()` looks them up under a lock, and three lookups
        # were ~4 µs of the ~40 µs a single write costs the app. Routes, statuses and
        # types are few, so these stay small.
        self._points_children: dict[MetricType, Counter] = {}
        self._request_children: dict[tuple[str, int], tuple[Counter, Histogram]] = {}
        self.queue_depth = Gauge(
            "gf_queue_depth",
            "Batches waiting for a writer.",
            registry=r,
            # Summed over processes' own queues; a shared queue's latest reading.
            multiprocess_mode="livemostrecent" if shared_queue else "livesum",
        )
        self.writer_batch_points = Histogram(
            "gf_writer_batch_points",
            "Points per writer commit.",
            buckets=(1, 10, 100, 1000, 5000, 10000, 20000, 50000),
            registry=r,
        )
        self.writer_seconds = Histogram(
            "gf_writer_commit_seconds",
            "Writer commit latency.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.writer_errors = Counter("gf_writer_errors", "Writer commits that failed.", registry=r)
        self.rate_limited = Counter(
            "gf_rate_limited", "Requests rejected by the rate limiter.", registry=r
        )
        self.limiter_errors = Counter(
            "gf_rate_limiter_errors",
            "Rate limiter backend failures (requests let through).",
            registry=r,
        )
        self.retention_deleted = Counter(
            "gf_retention_deleted_blocks", "Raw point blocks deleted by retention.", registry=r
        )
        self.statsd_lines = Counter(
            "gf_statsd_lines", "StatsD lines received, by outcome.", ["outcome"], registry=r
        )

    def exposition(self) -> bytes:
        """The metrics in Prometheus' text format: this registry's, or, with a shared
        directory, the totals over every process that writes there."""
        if self.shared_dir is None:
            return generate_latest(self.registry)
        forget_dead_processes(self.shared_dir)
        totals = CollectorRegistry()
        multiprocess.MultiProcessCollector(totals, self.shared_dir)  # type: ignore[no-untyped-call]
        return generate_latest(totals)

    def close(self) -> None:
        """A process that stops takes its gauges out of the totals; its counters stay
        counted."""
        if self.shared_dir is not None:
            multiprocess.mark_process_dead(os.getpid(), self.shared_dir)  # type: ignore[no-untyped-call]

    def count_points(self, batch: PointBatch) -> None:
        """Count acknowledged points by type (one increment per type, not per point),
        from the batch's columns, tallied in C: a generator reading each point's
        `type.value` was ~10% of `serve`'s event loop under bulk ingest."""
        columns = batch.columns
        kinds = columns.kinds
        if len(kinds) == 1:  # one metric: no tally
            self._points_of(kinds[0]).inc(len(columns))
            return
        index = array("i")
        index.frombytes(columns.index)
        per_kind: dict[MetricType, int] = {}
        for k, n in Tally(index).items():
            per_kind[kinds[k]] = per_kind.get(kinds[k], 0) + n
        for mtype, n in per_kind.items():
            self._points_of(mtype).inc(n)

    def request_done(self, route: str, status: int, seconds: float) -> None:
        """Count an answered request and time it."""
        children = self._request_children.get((route, status))
        if children is None:
            children = self._request_children[(route, status)] = (
                self.requests.labels(route, str(status)),
                self.request_seconds.labels(route),
            )
        children[0].inc()
        children[1].observe(seconds)

    def _points_of(self, mtype: MetricType) -> Counter:
        child = self._points_children.get(mtype)
        if child is None:
            child = self._points_children[mtype] = self.points_ingested.labels(mtype.value)
        return child


def forget_dead_processes(shared_dir: str) -> None:
    """Take the gauges of processes that are gone out of the totals: one that stopped
    cleanly did so itself (`Telemetry.close`), but one that was killed (SIGKILL, the
    OOM killer, uvicorn replacing a worker that stopped answering) could not."""
    for path in Path(shared_dir).glob("gauge_live*_*.db"):
        pid = int(path.stem.rsplit("_", 1)[1])
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            multiprocess.mark_process_dead(pid, shared_dir)  # type: ignore[no-untyped-call]
        except PermissionError:
            pass  # alive: another user's process
