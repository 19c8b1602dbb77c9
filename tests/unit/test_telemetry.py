"""The service's own metrics across `serve --workers N` processes (telemetry.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from glowing_fiesta.telemetry import forget_dead_processes


def test_the_gauges_of_a_killed_process_leave_the_totals(tmp_path: Path) -> None:
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead = int(gone.stdout)
    files = {
        "dead_gauge": tmp_path / f"gauge_livesum_{dead}.db",
        "dead_latest": tmp_path / f"gauge_livemostrecent_{dead}.db",
        "dead_counter": tmp_path / f"counter_{dead}.db",  # counts stay counted
        "live_gauge": tmp_path / f"gauge_livesum_{os.getpid()}.db",
    }
    for path in files.values():
        path.write_bytes(b"")
    forget_dead_processes(str(tmp_path))
    assert {name for name, path in files.items() if path.exists()} == {
        "dead_counter",
        "live_gauge",
    }
