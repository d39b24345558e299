"""The benchmark suite still runs: its quick mode, through the runner, into a temporary
results directory. The figures are not asserted (``make bench`` reports them); the rows,
the goals and the outputs checked inside each script are."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUNNER = ROOT / "benchmarks" / "run_all.py"

CHEAP = ("bench_codec", "bench_planner", "bench_partition", "bench_hops", "bench_client")
"""No model: pure functions, three hops through a Mosquitto, a client and a responder."""
FLEET = ("bench_split", "bench_pipeline", "bench_links", "bench_fleet", "bench_steps", "bench_cpu")
"""MobileNetV3Large over real agent processes (converted once, then cached)."""


def run_quick(scripts: tuple[str, ...], results: Path, timeout_s: float) -> dict[str, object]:
    environment = dict(os.environ, SPLITMQ_BENCH_RESULTS=str(results))
    process = subprocess.run(
        [sys.executable, str(RUNNER), "--quick", "--only", ",".join(scripts)],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    assert process.returncode == 0, process.stdout[-3000:] + process.stderr[-3000:]
    summary: dict[str, object] = json.loads((results / "summary.json").read_text())
    assert summary["failures"] == {}
    assert summary["quick"] is True
    for script in scripts:
        assert (results / f"{script}.json").is_file(), script
    return summary


@pytest.mark.integration
def test_the_cheap_benchmarks_run_and_report_their_goals(tmp_path: Path) -> None:
    summary = run_quick(CHEAP, tmp_path, timeout_s=240)
    rows = summary["rows"]
    assert isinstance(rows, list)
    goals = [r for r in rows if r["goal"]]
    assert goals and all(isinstance(r["met"], bool) for r in goals)
    assert all(r["scenario"] and r["figure"] and r["measured"] for r in rows)
    client = {
        (r["scenario"], r["figure"]) for r in rows if r["scenario"] in ("stream", "one at a time")
    }
    assert ("stream", "the caller's thread / the network thread, user + system") in client


@pytest.mark.integration
@pytest.mark.slow
def test_the_fleet_scenarios_run_and_check_their_outputs(tmp_path: Path) -> None:
    summary = run_quick(FLEET, tmp_path, timeout_s=900)
    rows = summary["rows"]
    assert isinstance(rows, list)
    scenarios = {r["scenario"].split()[0] for r in rows}
    assert {"1", "2", "3", "4", "5"} <= scenarios
    checked = [r for r in rows if r["figure"] == "outputs checked in the run"]
    assert len(checked) >= 3 and all(r["met"] for r in checked), checked
    steps = {r["figure"]: r for r in rows if r["scenario"] == "steps"}
    assert "agents: decode (stages in turn)" in steps, "every probe of a request was found"
    assert steps["agents: decode (stages in turn)"]["measured"].count("/") == 2  # 3 stages
    cpu = {r["figure"] for r in rows if r["scenario"] == "cpu"}
    sides = ("splitmq", "splitmq, hop_qos=0", "floor", "floor at QoS 1")
    assert {f"{side}: CPU per request" for side in sides} <= cpu, cpu
    assert {f"{side}: wake-ups per request" for side in sides} <= cpu, cpu
    floors = {r["figure"] for r in rows if r["scenario"] in ("1 split latency", "3 pipeline")}
    assert {
        "p50 splitmq / the floor at QoS 1 (both at least once)",
        "splitmq / the floor at QoS 1 (both at least once)",
    } <= floors, floors
    planner = {r["figure"]: r for r in rows if r["scenario"] == "planner"}
    forecasts = planner["predicted / the next round's measured p50, median over rounds"]
    assert "of 2 rounds within 10%" in forecasts["measured"], forecasts  # 3 rounds, 2 forecasts
