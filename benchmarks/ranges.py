"""One table from several runs of the suite: each figure with its range over the runs.

Each run directory holds the ``<script>.json`` files a run wrote (``run_all.py`` with
``SPLITMQ_BENCH_RESULTS`` set, or the scripts run one by one). A row's *measured* text
gives each of its numbers as its range over the runs when the runs' texts differ in
their numbers only (else the median run's text, by the row's value, or the first
run's); *range* gives the lowest and highest value of the row's figure; *met* how many
runs met the goal.

    .venv/bin/python benchmarks/ranges.py results/run1 results/run2 results/run3 \\
        --markdown table.md
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from _report import describe_machine
from run_all import SCRIPTS


def load(run: Path) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """The rows of every script in ``run``, in file order, and the machine they ran on."""
    rows: list[dict[str, Any]] = []
    machine = None
    order = {name: index for index, name in enumerate(SCRIPTS)}
    paths = sorted(run.glob("bench_*.json"), key=lambda p: (order.get(p.stem, len(order)), p.stem))
    for path in paths:
        data = json.loads(path.read_text())
        machine = machine or data.get("machine")
        rows += [{**row, "script": path.stem} for row in data["rows"]]
    return rows, machine


_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_NAMES = re.compile(r"[A-Za-z]-\d|\[\d")
"""Numbers that name things (``agent-2``, ``[0,57)``): not spanned."""


def spanned(texts: Sequence[str]) -> str | None:
    """The runs' texts as one, each number as its range (``7.5-8.4 ms``), when they
    differ in their numbers only; else None."""
    skeletons = {_NUMBER.sub("#", text) for text in texts}
    if len(skeletons) != 1 or any(_NAMES.search(text) for text in texts):
        return None
    columns = zip(*(_NUMBER.findall(text) for text in texts), strict=True)
    pieces = iter(_spanned_number(column) for column in columns)
    return _NUMBER.sub(lambda _match: next(pieces), texts[0])


def _spanned_number(column: Sequence[str]) -> str:
    low = min(column, key=float)
    high = max(column, key=float)
    return low if float(low) == float(high) else f"{low} to {high}"


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
        if len(same) > 1:
            measured = spanned([r["measured"] for r in same]) or measured
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
    head = f"| scenario | figure | measured ({runs} runs) | the figure's range | goal | met |"
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
