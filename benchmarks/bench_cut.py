"""Time to cut a MobileNetV3Large variant into 4 shards (the coordinator does it at deploy time).

The model (224x224, float32 and int8) comes from the benchmark pool (converted once,
cached under ``benchmarks/results/pool``); parsing + cutting, and cutting a parsed graph
alone, are timed per variant: medians over repeats.

    .venv/bin/python benchmarks/bench_cut.py [--quick]
"""

from __future__ import annotations

import statistics
import sys
import time

from _fleet import mobilenet
from _report import Row, report

from splitmq.converter import Graph, cut, cut_graph


def main() -> None:
    repeats = 3 if "--quick" in sys.argv else 10
    entry = mobilenet()
    rows = []
    figures: dict[str, float] = {"repeats": repeats}
    for variant in entry.manifest.variants:
        data = entry.variant_path(variant).read_bytes()
        candidates = entry.manifest.variants[variant].cut_points
        positions = [candidates[len(candidates) * i // 4].position for i in (1, 2, 3)]
        with_parse, cut_only = [], []
        for _ in range(repeats):
            start = time.perf_counter()
            cut(data, positions)
            with_parse.append(time.perf_counter() - start)
            graph = Graph.load(data)
            start = time.perf_counter()
            cut_graph(graph, positions)
            cut_only.append(time.perf_counter() - start)
        parse_ms = 1000 * statistics.median(with_parse)
        only_ms = 1000 * statistics.median(cut_only)
        rows.append(
            Row(
                "coordinator",
                f"cut {variant} ({len(data) / 2**20:.1f} MiB) into 4 shards",
                f"{parse_ms:.0f} ms with parsing, {only_ms:.0f} ms cutting",
                value=parse_ms,
            )
        )
        figures[f"{variant}_cut_and_parse_ms"] = parse_ms
        figures[f"{variant}_cut_only_ms"] = only_ms
    report("cutting MobileNetV3Large 224 into 4 shards", rows, figures)


if __name__ == "__main__":
    main()
