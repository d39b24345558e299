"""Shared output of the benchmark scripts: a table for people, a JSON line for machines."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


def median_time_s(func: Callable[[], object], *, repeat: int, number: int) -> float:
    """The median over ``repeat`` rounds of the mean time of ``number`` calls."""
    func()  # warm-up, excluded
    rounds = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            func()
        rounds.append((time.perf_counter() - start) / number)
    return statistics.median(rounds)


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def report(name: str, rows: list[tuple[str, str, str]], figures: dict[str, Any]) -> None:
    """Print ``rows`` (what, measured, goal) as a table and ``figures`` as JSON."""
    widths = [max(len(r[i]) for r in [("what", "measured", "goal"), *rows]) for i in range(3)]
    line = "  ".join("-" * w for w in widths)
    print(f"\n{name}  ({machine()})")
    print(line)
    for row in [("what", "measured", "goal"), *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
    print(line)
    out = Path(sys.argv[0]).with_suffix(".json").name
    results = Path("benchmarks/results")
    results.mkdir(parents=True, exist_ok=True)
    (results / out).write_text(json.dumps({"benchmark": name, **figures}, indent=2) + "\n")
    print(f"figures written to {results / out}")
