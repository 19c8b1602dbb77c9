"""Glowing Fiesta beside InfluxDB 1.x and VictoriaMetrics, as one markdown table.

    .venv/bin/python bench/compare/compare.py [--points N] [--runs N] [--gf-json FILE]
                                              [--out FILE]

Runs `glowing-fiesta bench` (embedded SQLite) unless --gf-json names a report it wrote,
then each peer in turn (peers.py: fresh data dir and fresh server per run), and prints
one table of the figures all three share, with Glowing Fiesta / peer ratios of medians.
Everything, per-run figures included, also goes to --out as JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import peers

GF = "glowing-fiesta"
Summary = dict[str, dict[str, float]]


def direction(figure: str) -> str:
    """'higher' or 'lower' is better, or 'context' (the load client's own CPU)."""
    if figure.endswith(("_per_s", "_rate")):
        return "higher"
    if figure.endswith("_cpu_pct"):
        return "context"
    return "lower"  # latencies (ms, s), bytes, MB, errors


ARROW = {"higher": "↑", "lower": "↓", "context": "·"}


def fmt(v: float) -> str:
    if math.isinf(v) or math.isnan(v):
        return str(v)
    a = abs(v)
    if a >= 1000 or v == 0:
        return f"{v:,.0f}"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def cell(s: dict[str, float]) -> str:
    if s["runs"] > 1 and s["min"] != s["max"]:
        return f"{fmt(s['median'])} ({fmt(s['min'])} .. {fmt(s['max'])})"
    return fmt(s["median"])


def ratio(gf: float, peer: float) -> str:
    if peer == 0 or math.isinf(peer) or math.isnan(peer) or math.isnan(gf):
        return "—" if gf == peer or math.isnan(gf) or math.isnan(peer) else "∞"
    r = gf / peer
    if r >= 100:
        return f"{r:,.0f}"
    return f"{r:.2f}" if r >= 0.1 else f"{r:.2g}"


def markdown(gf: dict[str, Any], others: dict[str, dict[str, Any]]) -> str:
    """The table of every figure Glowing Fiesta and all the peers share."""
    summaries: dict[str, Summary] = {name: r["summary"] for name, r in others.items()}
    shared = [f for f in gf["summary"] if all(f in s for s in summaries.values())]
    shared.sort(key=lambda f: (ORDER[_group(f)], f))
    head = ["figure", "Glowing Fiesta median (spread)"]
    for name in others:
        label = LABELS.get(name, name)
        head += [f"{label} median (spread)", f"GF/{SHORT.get(name, label)}"]
    lines = [
        "Ratios are Glowing Fiesta ÷ peer, of the medians; spread is (min .. max) over the runs. "
        "↑ higher is better (rates): a ratio above 1 means Glowing Fiesta is ahead. "
        "↓ lower is better (latencies in ms and s, bytes, MB, errors): a ratio below 1 "
        "means Glowing Fiesta is ahead. · the load client's own CPU, for context only.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|",
    ]
    for f in shared:
        g = gf["summary"][f]
        row = [f"{f} {ARROW[direction(f)]}", cell(g)]
        for s in summaries.values():
            row += [cell(s[f]), ratio(g["median"], s[f]["median"])]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


# Rows in workload order: ingest (and its visibility delay), its costs, queries, writes.
ORDER = {"ingest": 0, "last": 0, "disk": 1, "server": 2, "query": 3, "single": 4, "open": 5}
LABELS = {"influxdb": "InfluxDB", "victoria-metrics": "VictoriaMetrics"}
SHORT = {"influxdb": "InfluxDB", "victoria-metrics": "VM"}


def _group(figure: str) -> str:
    head = figure.split("_", 1)[0]
    return head if head in ORDER else "ingest"


def run_gf(points: int, runs: int, synchronous: str) -> dict[str, Any]:
    """`glowing-fiesta bench` (embedded SQLite), its table to stderr, its JSON back."""
    exe = Path(sys.executable).with_name(GF)
    found = str(exe) if exe.exists() else shutil.which(GF)
    if found is None:
        raise SystemExit(f"{GF} not found: run this with the project's venv Python")
    with tempfile.TemporaryDirectory(prefix="gf-bench-") as tmp:
        path = Path(tmp) / "gf.json"
        cmd = [
            found,
            "bench",
            "--runs",
            str(runs),
            "--points",
            str(points),
            "--synchronous",
            synchronous,
            "--json",
            str(path),
        ]
        print("$ " + " ".join(cmd), file=sys.stderr, flush=True)
        # Its own session: if we are stopped, the whole tree (bench and its embedded
        # server) is stopped with us, by process group id.
        proc = subprocess.Popen(cmd, stdout=sys.stderr, start_new_session=True)  # noqa: S603
        try:
            code = proc.wait(timeout=runs * 3600)
        finally:
            if proc.poll() is None:
                stop_group(proc)
        if code != 0:
            raise SystemExit(f"glowing-fiesta bench failed with exit code {code}")
        report: dict[str, Any] = json.loads(path.read_text())
    report["command"] = cmd
    return report


def stop_group(proc: subprocess.Popen[bytes]) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(30)
            return
        except subprocess.TimeoutExpired:
            continue


@dataclass
class Args:
    points: int
    runs: int
    gf_json: Path | None
    out: Path
    peers: list[str]
    synchronous: str


def parse(argv: list[str] | None) -> Args:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument(
        "--points", type=int, default=None, help="default: the --gf-json report's, else 3,000,000"
    )
    p.add_argument("--runs", type=int, default=None, help="default: the --gf-json report's, else 3")
    p.add_argument(
        "--gf-json",
        type=Path,
        default=None,
        help="an existing `glowing-fiesta bench --json` report: do not run it",
    )
    p.add_argument("--out", type=Path, default=Path("bench-compare.json"))
    p.add_argument(
        "--peer",
        action="append",
        choices=sorted(peers.PEERS),
        help="repeat for several; default: all",
    )
    p.add_argument(
        "--gf-synchronous",
        choices=["NORMAL", "FULL"],
        default="NORMAL",
        help="SQLite durability of the Glowing Fiesta run (FULL: fsync each "
        "commit, like InfluxDB's WAL)",
    )
    a = p.parse_args(argv)
    gf_opts: dict[str, Any] = {}
    if a.gf_json is not None:
        gf_opts = json.loads(a.gf_json.read_text())["environment"]["options"]
    points = a.points or gf_opts.get("points", peers.Options.points)
    runs = a.runs or gf_opts.get("runs", peers.Options.runs)
    for key, value in (("points", points), ("runs", runs)):
        if gf_opts and gf_opts.get(key) != value:
            print(
                f"warning: the Glowing Fiesta report has {key}={gf_opts.get(key)}, "
                f"the peers run with {value}",
                file=sys.stderr,
            )
    peer_names = a.peer or list(peers.PEERS)
    return Args(points, runs, a.gf_json, a.out, peer_names, a.gf_synchronous)


def sizes(gf_opts: dict[str, Any], args: Args) -> str:
    peers_size = f"{args.points:,} points, {args.runs} run(s)"
    gf_size = f"{gf_opts.get('points', 0):,} points, {gf_opts.get('runs', '?')} run(s)"
    if gf_size == peers_size:
        return peers_size + " each"
    return f"Glowing Fiesta {gf_size}, peers {peers_size} (NOT the same sizes)"


def main(argv: list[str] | None = None) -> None:
    peers.stop_on_sigterm()
    args = parse(argv)
    started = time.perf_counter()
    if args.gf_json is not None:
        gf = json.loads(args.gf_json.read_text())
        gf["source"] = str(args.gf_json)
    else:
        gf = run_gf(args.points, args.runs, args.synchronous)
    opts = peers.Options(runs=args.runs, points=args.points)
    others = {name: peers.run(peers.PEERS[name], opts) for name in args.peers}
    wall = time.perf_counter() - started
    versions = ", ".join(
        f"{LABELS.get(n, n)} {r['environment']['version']}" for n, r in others.items()
    )
    gf_env = gf["environment"]
    header = (
        f"Glowing Fiesta {gf_env.get('glowing_fiesta', '?')} (embedded SQLite, "
        f"synchronous={gf_env.get('options', {}).get('synchronous', '?')}) vs {versions}; "
        f"{sizes(gf_env.get('options', {}), args)}; {gf_env.get('machine', '')}; "
        f"wall time {wall / 60:.1f} min"
    )
    table = markdown(gf, others)
    print(header + "\n\n" + table)
    report = {
        "header": header,
        "table_markdown": table,
        "wall_seconds": wall,
        "argv": sys.argv,
        "durability": {n: peers.PEERS[n].durability for n in others},
        GF: gf,
        **others,
    }
    args.out.write_text(json.dumps(report, indent=2))
    print(f"report written to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
