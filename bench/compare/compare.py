"""Glowing Fiesta beside InfluxDB 1.x and VictoriaMetrics, as one markdown table.

    .venv/bin/python bench/compare/compare.py [--points N] [--runs N] [--gf-json FILE]
                                              [--out FILE]

Runs the three in rounds: in each, one run of `glowing-fiesta bench` (embedded SQLite),
then one of each peer (peers.py: fresh data dir and fresh server per run), never two at
once. A drift in the machine's speed over the ~14 minutes then falls on every side
alike, and each round gives a Glowing Fiesta / peer ratio of its own. With --gf-json
(a report `glowing-fiesta bench` wrote) Glowing Fiesta is not run, and the peers run
one after the other. Prints one table of the figures all three share, with the ratios
of the medians (and of each round's pair, when run in rounds). Everything, per-run
figures included, also goes to --out as JSON.
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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import peers

from glowing_fiesta.bench.runner import Run, summarise

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
    return _fmt_ratio(gf / peer)


def _fmt_ratio(r: float) -> str:
    if r >= 100:
        return f"{r:,.0f}"
    return f"{r:.2f}" if r >= 0.1 else f"{r:.2g}"


def round_ratios(gf: dict[str, Any], peer: dict[str, Any], figure: str) -> list[float]:
    """Glowing Fiesta ÷ peer for `figure` in each round both ran in (reports from
    `rounds`); empty when they did not run in rounds or a round lacks the figure."""
    if not (gf.get("rounds") and peer.get("rounds")) or len(gf["runs"]) != len(peer["runs"]):
        return []
    out = []
    for g, p in zip(gf["runs"], peer["runs"], strict=True):
        a, b = g["figures"].get(figure), p["figures"].get(figure)
        if a is None or b is None or b == 0 or not math.isfinite(a) or not math.isfinite(b):
            return []
        out.append(a / b)
    return out


def ratio_cell(gf: dict[str, Any], peer: dict[str, Any], figure: str) -> str:
    """The ratio of the medians, then the spread of the rounds' own ratios."""
    text = ratio(gf["summary"][figure]["median"], peer["summary"][figure]["median"])
    rs = round_ratios(gf, peer, figure)
    if len(rs) > 1:
        text += f" ({_fmt_ratio(min(rs))} .. {_fmt_ratio(max(rs))})"
    return text


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
        "Ratios are Glowing Fiesta ÷ peer, of the medians; spread is (min .. max) over the runs, "
        "and after a ratio, over the rounds' own ratios (each round runs every side once). "
        "↑ higher is better (rates): a ratio above 1 means Glowing Fiesta is ahead. "
        "↓ lower is better (latencies in ms and s, bytes, MB, errors): a ratio below 1 "
        "means Glowing Fiesta is ahead. · the load client's own CPU, for context only.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|",
    ]
    for f in shared:
        row = [f"{f} {ARROW[direction(f)]}", cell(gf["summary"][f])]
        for peer in others.values():
            row += [cell(peer["summary"][f]), ratio_cell(gf, peer, f)]
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


def merge_gf(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """One-run reports of `glowing-fiesta bench`, in round order, as one report."""
    runs = [run for r in reports for run in r["runs"]]
    env = dict(reports[0]["environment"])
    env["options"] = {**env.get("options", {}), "runs": len(runs)}
    env["load_average_after"] = reports[-1]["environment"].get("load_average_after")
    return {
        "environment": env,
        "summary": summarise([Run(**run) for run in runs]),
        "runs": runs,
        "command": reports[0].get("command"),
        "rounds": len(reports),
    }


def rounds(args: Args, opts: peers.Options) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """`args.runs` rounds: Glowing Fiesta once, then each peer once."""
    one = replace(opts, runs=1)
    envs = {name: peers.environment(peers.PEERS[name], opts) for name in args.peers}
    gf_reports: list[dict[str, Any]] = []
    peer_runs: dict[str, list[Run]] = {name: [] for name in args.peers}
    for i in range(args.runs):
        print(f"[round {i + 1}/{args.runs}]", file=sys.stderr, flush=True)
        gf_reports.append(run_gf(args.points, 1, args.synchronous))
        for name in args.peers:
            print(f"[{name}] round {i + 1}/{args.runs}", file=sys.stderr, flush=True)
            peer_runs[name].append(peers.one_run(peers.PEERS[name], one))
    others = {name: peers.report(envs[name], runs) for name, runs in peer_runs.items()}
    for r in others.values():
        r["rounds"] = args.runs
    return merge_gf(gf_reports), others


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
    opts = peers.Options(runs=args.runs, points=args.points)
    if args.gf_json is not None:
        gf = json.loads(args.gf_json.read_text())
        gf["source"] = str(args.gf_json)
        others = {name: peers.run(peers.PEERS[name], opts) for name in args.peers}
    else:
        gf, others = rounds(args, opts)
    wall = time.perf_counter() - started
    versions = ", ".join(
        f"{LABELS.get(n, n)} {r['environment']['version']}" for n, r in others.items()
    )
    gf_env = gf["environment"]
    header = (
        f"Glowing Fiesta {gf_env.get('glowing_fiesta', '?')} (embedded SQLite, "
        f"synchronous={gf_env.get('options', {}).get('synchronous', '?')}) vs {versions}; "
        f"{sizes(gf_env.get('options', {}), args)}, "
        f"{'in rounds' if gf.get('rounds') else 'one side after the other'}; "
        f"{gf_env.get('machine', '')}; "
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
