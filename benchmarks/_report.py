"""Shared output of the benchmark scripts: one table for people, the same figures as JSON.

Every script ends with :func:`report`: rows of (scenario, figure, measured, goal, met?)
printed as a table, and written with the raw figures to
``benchmarks/results/<script>.json``, which ``run_all.py`` gathers into one table.

The machine is shared and noisy: comparisons are measured side by side in the same run,
in interleaved rounds, and quoted as medians over the rounds (:func:`rounds_median`).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from splitmq import compiled

RESULTS = Path(__file__).resolve().parent / "results"


def results_dir() -> Path:
    """Where figures go: ``benchmarks/results``, or ``$SPLITMQ_BENCH_RESULTS`` when set."""
    return Path(os.environ.get("SPLITMQ_BENCH_RESULTS") or RESULTS)


@dataclass(frozen=True)
class Row:
    """One line of the table.

    Attributes:
        scenario: which issue goal or part it belongs to (``1 split latency``, ...).
        figure: what is measured.
        measured: the figure as people read it (``1.12x``, ``0.85 ms``).
        goal: the goal as people read it, or ``""`` for a figure given for context.
        met: whether the goal is met; ``None`` without a goal.
        value: the figure as a number, for machines.
    """

    scenario: str
    figure: str
    measured: str
    goal: str = ""
    met: bool | None = None
    value: float | None = None


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
    """The ``q``-th percentile (nearest rank) of ``values``."""
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def rounds_median(per_round: Sequence[float]) -> float:
    return statistics.median(per_round)


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import psutil

        memory_gb = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        memory_gb = None
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gb": memory_gb,
        "system": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "splitmq": compiled.describe(),
    }


def describe_machine(info: dict[str, Any] | None = None) -> str:
    info = info or machine()
    return (
        f"{info['cpu']}, {info['cores']} cores, {info['memory_gb']} GiB, "
        f"{info['system']}, Python {info['python']}, splitmq {info.get('splitmq', 'pure Python')}"
    )


HEADER = ("scenario", "figure", "measured", "goal", "met?")


def met_text(met: bool | None) -> str:
    return "" if met is None else ("yes" if met else "NO")


def table(rows: Sequence[Row]) -> str:
    """The rows as a plain-text table."""
    cells = [HEADER] + [(r.scenario, r.figure, r.measured, r.goal, met_text(r.met)) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(HEADER))]
    rule = "  ".join("-" * w for w in widths)
    lines = [rule]
    for i, row in enumerate(cells):
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if i == 0:
            lines.append(rule)
    lines.append(rule)
    return "\n".join(lines)


def report(name: str, rows: Sequence[Row], figures: dict[str, Any]) -> Path:
    """Print ``rows`` as a table; write them and ``figures`` to ``results/<script>.json``."""
    info = machine()
    print(f"\n{name}  ({describe_machine(info)})")
    print(table(rows))
    out = results_dir() / Path(sys.argv[0]).with_suffix(".json").name
    out.parent.mkdir(parents=True, exist_ok=True)
    data = {
        "benchmark": name,
        "machine": info,
        "quick": "--quick" in sys.argv,
        "rows": [asdict(r) for r in rows],
        "figures": figures,
    }
    out.write_text(json.dumps(data, indent=2) + "\n")
    print(f"figures written to {out}")
    return out
