"""Partition time for a variant with 60 cut points over 10, 100 and 1000 simulated agents.

The variant has 120 operators with random FLOPs (1-300 MFLOPs) and parameters, and 60
candidate cut points with random frontiers (10 kB - 2 MB). The agents have random
speeds, links, free memory, batteries and power figures. Each objective is timed with
4 stages (the search at full depth) and with ``stages=auto`` (1 to 4 tried; counts that
cannot beat fewer stages are skipped), and the energy objective also under a latency
bound halfway between the fastest and the thriftiest partition (the Pareto search).
Goal (issue): under 1 s for 60 cut points over 100 agents.

    .venv/bin/python benchmarks/bench_partition.py [--quick]
"""

from __future__ import annotations

import functools
import random
import sys

from _report import Row, median_time_s, report

from splitmq.coordinator.partition import PartitionRequest, partition
from splitmq.coordinator.planner import AgentView
from splitmq.wire import Objective, TensorSpec
from splitmq.wire.manifest import CutPoint, Operator, Variant

MB = 1_000_000
OPERATORS = 120
CUT_POINTS = 60


def tensor(name: str, size_bytes: int) -> TensorSpec:
    return TensorSpec(name, (size_bytes // 4,), "float32", size_bytes=size_bytes)


def variant(seed: int = 0) -> Variant:
    rng = random.Random(seed)
    flops = [rng.randint(10**6, 3 * 10**8) for _ in range(OPERATORS)]
    operators = tuple(
        Operator(i, "CONV_2D", False, f, rng.randint(0, 2 * MB)) for i, f in enumerate(flops)
    )
    cut_points = tuple(
        CutPoint(p, (tensor(f"t{p}", size),), size, sum(flops[:p]), None)
        for p in sorted(rng.sample(range(1, OPERATORS), CUT_POINTS))
        for size in [rng.randint(10_000, 2 * MB)]
    )
    return Variant(
        name="float32",
        file="float32.tflite",
        size_bytes=sum(op.param_bytes for op in operators),
        sha256="0" * 64,
        inputs=(tensor("input", 600_000),),
        outputs=(tensor("output", 4_000),),
        operators=operators,
        cut_points=cut_points,
        cuttable=True,
        uncuttable_reason=None,
        fidelity=None,
    )


def fleet(size: int, seed: int = 0) -> list[AgentView]:
    rng = random.Random(seed)
    return [
        AgentView(
            f"agent-{i}",
            battery_pct=rng.uniform(10, 100),
            plugged=rng.random() < 0.3,
            active_w=rng.uniform(2, 20),
            radio_j_per_mb=rng.uniform(0.05, 1.0),
            bandwidth_mbps=rng.choice([10.0, 100.0, 1000.0]),
            link_latency_ms=rng.uniform(0.1, 10),
            speed_gflops=rng.uniform(0.5, 50),
            mem_free_bytes=rng.choice([None, rng.randint(20 * MB, 500 * MB)]),
        )
        for i in range(size)
    ]


def requests(model: Variant, agents: list[AgentView]) -> dict[str, PartitionRequest]:
    """Each objective with 4 stages and with ``stages=auto``; energy under a bound."""
    fastest = partition(model, agents, PartitionRequest(objective=Objective.LATENCY))
    thriftiest = partition(model, agents, PartitionRequest(objective=Objective.ENERGY))
    bound = (fastest.predicted_latency_ms + thriftiest.predicted_latency_ms) / 2
    chosen: dict[str, PartitionRequest] = {}
    for objective in Objective:
        chosen[f"{objective}, 4 stages"] = PartitionRequest(stages=4, objective=objective)
        chosen[f"{objective}, auto"] = PartitionRequest(objective=objective)
    chosen["energy within a bound, auto"] = PartitionRequest(
        objective=Objective.ENERGY, max_latency_ms=bound
    )
    return chosen


def main() -> None:
    quick = "--quick" in sys.argv
    rows = []
    figures: dict[str, float] = {}
    model = variant()
    for size in (10, 100) if quick else (10, 100, 1000):
        agents = fleet(size)
        slowest = ("", 0.0)
        for name, request in requests(model, agents).items():
            call = functools.partial(partition, model, agents, request)
            stages = len(call().stages)
            repeat = 1 if quick else (5 if size < 1000 else 3)
            seconds = median_time_s(call, repeat=repeat, number=1)
            key = name.replace(",", "").replace(" ", "_")
            figures[f"partition_ms_{key}_{size}"] = seconds * 1e3
            figures[f"stages_{key}_{size}"] = stages
            if seconds > slowest[1]:
                slowest = (name, seconds)
        ms = slowest[1] * 1e3
        goal = size == 100
        rows.append(
            Row(
                "5 fleet",
                f"partition, {size} agents: slowest of {len(requests(model, agents))}",
                f"{ms:.0f} ms ({slowest[0]})",
                "< 1 s" if goal else "",
                ms < 1000 if goal else None,
                ms,
            )
        )
    report(f"partition optimizer, {CUT_POINTS} cut points", rows, figures)


if __name__ == "__main__":
    main()
