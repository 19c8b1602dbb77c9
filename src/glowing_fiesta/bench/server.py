"""An embedded server for the benchmark: the real `glowing-fiesta serve` on a temp SQLite
file, and what it costs: peak memory of its process tree and bytes on disk."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

EXE = str(Path(sys.executable).with_name("glowing-fiesta"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _tree(pid: int) -> list[int]:
    """`pid` and its descendants (uvicorn workers), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def _status_kb(pid: int, field_name: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


@dataclass
class MemorySampler:
    """Peak resident memory of a process tree, sampled every 100 ms."""

    pid: int
    peak_kb: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> MemorySampler:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self.peak_kb = max(self.peak_kb, sum(_status_kb(p, "VmRSS") for p in _tree(self.pid)))

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        # VmHWM is the kernel's own high-water mark: catches peaks between samples.
        self.peak_kb = max(self.peak_kb, sum(_status_kb(p, "VmHWM") for p in _tree(self.pid)))


@dataclass
class EmbeddedServer:
    workers: int = 1
    synchronous: str = "NORMAL"
    port: int = field(default_factory=_free_port)
    tmp: tempfile.TemporaryDirectory[str] = field(default_factory=tempfile.TemporaryDirectory)
    proc: subprocess.Popen[bytes] | None = None
    key: str = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def db_path(self) -> Path:
        return Path(self.tmp.name) / "bench.db"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GF_")}
        env.update(
            GF_DATABASE_URL=f"sqlite:///{self.db_path}",
            GF_LOG_LEVEL="WARNING",
            GF_RATE_LIMIT_PER_MINUTE="100000000",
            GF_SQLITE_SYNCHRONOUS=self.synchronous,
        )
        return env

    def start(self) -> None:
        env = self.env()
        self.key = subprocess.run(  # noqa: S603 - our own program
            [EXE, "keys", "create", "bench"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout.strip()
        log = (Path(self.tmp.name) / "serve.log").open("ab")
        self.proc = subprocess.Popen(  # noqa: S603
            [EXE, "serve", "--port", str(self.port), "--workers", str(self.workers)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=1):  # noqa: S310
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("the embedded server did not start")

    def disk(self) -> tuple[int, int]:
        """(database bytes after a WAL checkpoint, bytes of raw point blocks)."""
        with sqlite3.connect(self.db_path, timeout=30) as db:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            raw = db.execute("SELECT coalesce(sum(length(data)), 0) FROM metric_points").fetchone()[
                0
            ]
        total = sum(p.stat().st_size for p in Path(self.tmp.name).glob("bench.db*"))
        return total, int(raw)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                # Reaped now, not by a later Popen: a `wrk` run's, whose CPU share
                # (children's usage) would count this server's.
                self.proc.wait()
        self.tmp.cleanup()
