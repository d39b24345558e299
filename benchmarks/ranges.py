"""One table from several runs of the suite: each figure with its range over the runs.

Each run directory holds the ``<script>.json`` files a run wrote (``run_all.py`` with
``SPLITMQ_BENCH_RESULTS`` set, or the scripts run one by one). A row's *measured* text
is the median run's (by the row's value); *range* gives the lowest and highest value
over the runs; *met* how many runs met the goal.

    .venv/bin/python benchmarks/ranges.py results/run1 results/run2 results/run3 \\
        --markdown table.md
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from _report import describe_machine


def load(run: Path) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """The rows of every script in ``run``, in file order, and the machine they ran on."""
    rows: list[dict[str, Any]] = []
    machine = None
    for path in sorted(run.glob("bench_*.json")):
        data = json.loads(path.read_text())
        machine = machine or data.get("machine")
        rows += [{**row, "script": path.stem} for row in data["rows"]]
    return rows, machine


def number(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"


def _key(row: dict[str, Any]) -> tuple[str, str, str]:
    return row["script"], row["scenario"], row["figure"]


def merged(runs: Sequence[list[dict[str, Any]]]) -> list[dict[str, str]]:
    """Rows of the first run, each with the range of its value over every run."""
    table = []
    for row in runs[0]:
        key = _key(row)
        same = [
            r for rows in runs for r in rows if (r["script"], r["scenario"], r["figure"]) == key
        ]
        values = [r["value"] for r in same if isinstance(r.get("value"), int | float)]
        measured = row["measured"]
        spread = ""
        if len(values) == len(same) and values:
            middle = statistics.median_low(values)
            measured = next(r["measured"] for r in same if r["value"] == middle)
            low, high = min(values), max(values)
            spread = number(low) if low == high else f"{number(low)} to {number(high)}"
        met = ""
        if row.get("goal"):
            met = f"{sum(1 for r in same if r.get('met'))} of {len(same)}"
        table.append(
            {
                "scenario": row["scenario"],
                "figure": row["figure"],
                "measured": measured,
                "range": spread,
                "goal": row.get("goal", ""),
                "met": met,
            }
        )
    return table


def markdown(table: list[dict[str, str]], runs: int) -> str:
    head = f"| scenario | figure | measured (median run) | range over {runs} runs | goal | met |"
    lines = [head, "|---|---|---|---|---|---|"]
    for row in table:
        cells = [row[k].replace("|", "/") for k in ("scenario", "figure", "measured")]
        cells += [row["range"], row["goal"].replace("|", "/"), row["met"]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("runs", nargs="+", type=Path, help="run directories")
    parser.add_argument("--markdown", type=Path, help="also write the table here")
    args = parser.parse_args()
    loaded = [load(run) for run in args.runs]
    table = markdown(merged([rows for rows, _ in loaded]), len(loaded))
    machine = next((m for _, m in loaded if m), None)
    if machine:
        print(f"on {describe_machine(machine)}")
    print(table)
    if args.markdown:
        args.markdown.write_text(table)


if __name__ == "__main__":
    main()
