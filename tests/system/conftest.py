"""Start the real `glowing-fiesta` program on a free loopback port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

EXE = str(Path(sys.executable).with_name("glowing-fiesta"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run the real CLI; raise with its stderr if it fails."""
    done = subprocess.run(
        [EXE, *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    if done.returncode != 0:
        raise AssertionError(f"glowing-fiesta {' '.join(args)} failed: {done.stderr}")
    return done


def terminate(proc: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM (a graceful stop, so coverage data is written), SIGKILL if it hangs."""
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


class Process:
    """A started program that tests stop gracefully or kill outright."""

    proc: subprocess.Popen[bytes] | None

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        terminate(self.proc)


@dataclass
class Server(Process):
    env: dict[str, str]
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    log: Path | None = None
    args: tuple[str, ...] = ()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        assert self.log is not None
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [EXE, "serve", "--host", "127.0.0.1", "--port", str(self.port), *self.args],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"serve exited early:\n{self.log.read_text()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"serve did not come up:\n{self.log.read_text()}")


@pytest.fixture
def gf_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GF_")}
    env["GF_DATABASE_URL"] = f"sqlite:///{tmp_path / 'system.db'}"
    env["GF_LOG_FORMAT"] = "console"
    return env


@pytest.fixture
def server(gf_env: dict[str, str], tmp_path: Path) -> Iterator[Server]:
    srv = Server(gf_env, log=tmp_path / "serve.log")
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@dataclass
class Worker(Process):
    """A real `glowing-fiesta worker` process."""

    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    metrics_port: int = 0

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [EXE, "worker", "--metrics-port", str(self.metrics_port)],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
