"""bench/compare: Glowing Fiesta's one-run reports merged over rounds, and the ratios
each round gives (the peers' own runs need their binaries: not run here)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from glowing_fiesta.bench.runner import Run, summarise

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench" / "compare"))

import compare


def gf_report(ingest: float, rss: float, load_after: float) -> dict[str, Any]:
    """What `glowing-fiesta bench --runs 1 --json` writes, trimmed to what is merged."""
    return {
        "environment": {"options": {"runs": 1, "points": 1000}, "load_average_after": load_after},
        "summary": {},
        "runs": [
            {"figures": {"ingest_points_per_s": ingest, "server_peak_rss_mb": rss}, "notes": {}}
        ],
        "command": ["glowing-fiesta", "bench", "--runs", "1"],
    }


def peer_report(ingests: list[float], rounds: int | None) -> dict[str, Any]:
    runs = [{"figures": {"ingest_points_per_s": v}, "notes": {}} for v in ingests]
    summary = summarise([Run(**r) for r in runs])
    report: dict[str, Any] = {"environment": {}, "summary": summary, "runs": runs}
    if rounds is not None:
        report["rounds"] = rounds
    return report


def test_rounds_merge_into_one_report_with_medians_and_spread() -> None:
    merged = compare.merge_gf(
        [gf_report(500.0, 200.0, 0.5), gf_report(700.0, 210.0, 0.7), gf_report(600.0, 205.0, 0.9)]
    )

    assert merged["rounds"] == 3
    assert merged["environment"]["options"] == {"runs": 3, "points": 1000}
    assert merged["environment"]["load_average_after"] == 0.9
    assert [r["figures"]["ingest_points_per_s"] for r in merged["runs"]] == [500.0, 700.0, 600.0]
    assert merged["summary"]["ingest_points_per_s"] == {
        "median": 600.0,
        "min": 500.0,
        "max": 700.0,
        "runs": 3,
    }


def test_each_round_is_compared_with_the_peer_run_beside_it() -> None:
    gf = compare.merge_gf([gf_report(v, 200.0, 0.0) for v in (500.0, 700.0, 600.0)])
    peer = peer_report([1000.0, 700.0, 500.0], rounds=3)

    assert compare.round_ratios(gf, peer, "ingest_points_per_s") == [0.5, 1.0, 1.2]
    # The ratio of the medians (600 / 700), then the rounds' own ratios' spread.
    assert compare.ratio_cell(gf, peer, "ingest_points_per_s") == "0.86 (0.50 .. 1.20)"
    table = compare.markdown(gf, {"influxdb": peer})
    assert (
        "| ingest_points_per_s ↑ | 600 (500 .. 700) | 700 (500 .. 1,000) | 0.86 (0.50 .. 1.20) |"
        in table
    )


def test_runs_not_made_in_rounds_are_not_paired() -> None:
    gf = compare.merge_gf([gf_report(v, 200.0, 0.0) for v in (500.0, 700.0)])
    # A peer run on its own (compare.py --gf-json): its runs are no round's.
    alone = peer_report([1000.0, 700.0], rounds=None)

    assert compare.round_ratios(gf, alone, "ingest_points_per_s") == []
    assert compare.ratio_cell(gf, alone, "ingest_points_per_s") == "0.71"


def test_a_round_without_the_figure_gives_no_spread() -> None:
    gf = compare.merge_gf([gf_report(v, 200.0, 0.0) for v in (500.0, 700.0)])
    peer = peer_report([1000.0, 700.0], rounds=2)
    del peer["runs"][1]["figures"]["ingest_points_per_s"]

    assert compare.round_ratios(gf, peer, "ingest_points_per_s") == []
