"""Run the whole benchmark suite and print one table: scenario, figure, measured, goal, met?

Each script runs in a process of its own (``make bench`` runs this file), writes its
figures to ``benchmarks/results/<script>.json`` and its output to ``<script>.log``;
this runner gathers the rows into one table, printed and written to
``benchmarks/results/summary.json`` (and, with ``--markdown FILE``, as a Markdown table).

    .venv/bin/python benchmarks/run_all.py            # the full suite (about 5 minutes)
    .venv/bin/python benchmarks/run_all.py --quick    # a smoke run of every script
    .venv/bin/python benchmarks/run_all.py --only bench_split,bench_pipeline

The exit status is 1 when a script fails, and with ``--strict`` also when a goal is
missed. MobileNetV3Large is converted once (TensorFlow, about 30 s) and cached under
``benchmarks/results/pool``; nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _fleet import mobilenet
from _report import Row, describe_machine, machine, met_text, results_dir, table

HERE = Path(__file__).resolve().parent

SCRIPTS = (
    "bench_split",  # goals 1 and 2, the planner's prediction, messages and agent memory
    "bench_pipeline",  # goal 3
    "bench_replicas",  # replicas that add throughput (rpi4 agents)
    "bench_links",  # goal 4
    "bench_fleet",  # goal 5: deployment and plan requests at scale
    "bench_planner",  # goal 5: plan time
    "bench_task_choice",  # issue 21: choosing a task's member on top of the route
    "bench_partition",  # goal 5: partition time
    "bench_agent",  # what one agent adds to its shard
    "bench_steps",  # where a split request's time goes, step by step (no goal)
    "bench_cpu",  # where the pipeline's CPU goes, process by process (no goal)
    "bench_client",  # the client's own work per request, against an instant responder (no goal)
    "bench_codec",
    "bench_transport",  # our MQTT client vs paho-mqtt on the activation path
    "bench_hops",
    "bench_embedded_broker",
    "bench_cut",
    "bench_web",  # the browser path: relay vs Mosquitto's WebSocket listener, page vs native
    "bench_plan2",  # Plan 2: two heads in parallel against the best chain, rpi4 agents
)
TIMEOUT_S = 900
NEEDS_MODEL = {"bench_split", "bench_pipeline", "bench_links", "bench_fleet", "bench_agent"}
NEEDS_MODEL |= {"bench_replicas"}
NEEDS_MODEL |= {"bench_cut", "bench_web", "bench_steps", "bench_cpu"}


def run(script: str, quick: bool, timeout_s: float) -> tuple[list[Row], float, str | None]:
    """Run one script; its rows, the seconds it took, and what went wrong (or None)."""
    log = results_dir() / f"{script}.log"
    out = results_dir() / f"{script}.json"
    out.unlink(missing_ok=True)
    command = [sys.executable, str(HERE / f"{script}.py"), *(["--quick"] if quick else [])]
    started = time.monotonic()
    with log.open("w") as sink:
        try:
            process = subprocess.run(
                command, stdout=sink, stderr=subprocess.STDOUT, timeout=timeout_s, check=False
            )
        except subprocess.TimeoutExpired:
            return [], time.monotonic() - started, f"timed out after {timeout_s:.0f} s"
    elapsed = time.monotonic() - started
    if process.returncode != 0 or not out.exists():
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
        return [], elapsed, f"exit {process.returncode}: {tail[0][:120]} (see {log})"
    data = json.loads(out.read_text())
    return [Row(**row) for row in data["rows"]], elapsed, None


def markdown(rows: list[Row]) -> str:
    lines = ["| scenario | figure | measured | goal | met? |", "|---|---|---|---|---|"]
    for row in rows:
        cells = (row.scenario, row.figure, row.measured, row.goal, met_text(row.met))
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a smoke run of every script")
    parser.add_argument("--only", help="comma-separated script names (bench_split,...)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a goal is missed")
    parser.add_argument("--markdown", type=Path, help="also write the table as Markdown here")
    parser.add_argument("--timeout", type=float, default=TIMEOUT_S, help="seconds per script")
    args = parser.parse_args()
    scripts = [s.strip() for s in args.only.split(",")] if args.only else list(SCRIPTS)
    unknown = [s for s in scripts if not (HERE / f"{s}.py").is_file()]
    if unknown:
        parser.error(f"no such benchmark: {', '.join(unknown)}")
    results = results_dir()
    results.mkdir(parents=True, exist_ok=True)
    if NEEDS_MODEL & set(scripts):
        mobilenet()  # convert once, up front, outside every timing
    info = machine()
    print(f"splitmq benchmarks{' (quick)' if args.quick else ''} on {describe_machine(info)}")
    rows: list[Row] = []
    failures: dict[str, str] = {}
    timings: dict[str, float] = {}
    started = time.monotonic()
    for script in scripts:
        print(f"  {script} ...", end="", flush=True)
        found, seconds, failure = run(script, args.quick, args.timeout)
        timings[script] = seconds
        print(f" {seconds:.0f} s" + (f"  FAILED: {failure}" if failure else ""), flush=True)
        if failure:
            failures[script] = failure
            rows.append(Row(script, "the script", "failed", "runs", False))
        rows.extend(found)
    total_s = time.monotonic() - started
    print()
    print(table(rows))
    goals = [r for r in rows if r.met is not None]
    missed = [r for r in goals if not r.met]
    print(
        f"{len(goals) - len(missed)} of {len(goals)} goals met; {len(failures)} script(s) "
        f"failed; {total_s / 60:.1f} min"
    )
    summary: dict[str, Any] = {
        "machine": info,
        "quick": args.quick,
        "minutes": total_s / 60,
        "seconds_per_script": timings,
        "failures": failures,
        "rows": [r.__dict__ for r in rows],
    }
    (results / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"figures written to {results / 'summary.json'}")
    if args.markdown:
        args.markdown.write_text(markdown(rows))
    if failures or (args.strict and missed):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
