"""Plan time per request for fleets of 10, 100 and 1000 simulated agents.

Each fleet carries 5 deployments of one model (float32, float16, int8 variants and
two more partitions), 4 stages each, 3 replicas per stage drawn from the fleet; the
agents have random batteries, links and power figures. Goal (issue 5): under 1 ms per
plan at 100 agents.

    .venv/bin/python benchmarks/bench_planner.py [--quick]
"""

from __future__ import annotations

import functools
import random
import sys

from _report import Row, median_time_s, report

from splitmq.coordinator.planner import AgentView, DeploymentView, StageView, plan
from splitmq.wire import EnergyLevel, Plan, PlanRequest


def random_agents(size: int, rng: random.Random) -> dict[str, AgentView]:
    """``size`` agents with figures drawn from ``rng`` (also bench_task_choice's fleet)."""
    return {
        f"agent-{i}": AgentView(
            f"agent-{i}",
            battery_pct=rng.uniform(10, 100),
            plugged=rng.random() < 0.3,
            active_w=rng.uniform(2, 20),
            radio_j_per_mb=rng.uniform(0.05, 1.0),
            bandwidth_mbps=rng.choice([10.0, 100.0, 1000.0]),
            link_latency_ms=rng.uniform(0.1, 10),
        )
        for i in range(size)
    }


def fleet_and_deployments(
    size: int, seed: int = 0
) -> tuple[dict[str, AgentView], list[DeploymentView]]:
    rng = random.Random(seed)
    agents = random_agents(size, rng)
    names = list(agents)
    deployments = []
    for k, (variant, fidelity) in enumerate(
        [("float32", 1.0), ("float16", 0.999), ("int8", 0.97), ("float32", 1.0), ("int8", 0.97)]
    ):
        stages = []
        for s in range(4):
            replicas = tuple(rng.sample(names, min(3, len(names))))
            stages.append(
                StageView(s, replicas, {a: rng.uniform(2, 30) for a in replicas}, 200_000, 200_000)
            )
        deployments.append(DeploymentView(f"d{k}", 1, "m", "v1", variant, fidelity, tuple(stages)))
    return agents, deployments


def main() -> None:
    rows = []
    figures: dict[str, float] = {}
    request = PlanRequest(
        "r", "c", "m", max_latency_ms=200.0, min_fidelity=0.95, energy_level=EnergyLevel.BALANCED
    )
    for size in (10, 100, 1000):
        agents, deployments = fleet_and_deployments(size)
        if not isinstance(plan(request, deployments, agents), Plan):
            raise SystemExit(f"no plan for the {size}-agent fleet")
        call = functools.partial(plan, request, deployments, agents)
        quick = "--quick" in sys.argv
        seconds = median_time_s(call, repeat=5 if quick else 15, number=40 if quick else 200)
        ms = seconds * 1e3
        goal = size == 100
        rows.append(
            Row(
                "5 fleet",
                f"planner, {size} agents: plan time",
                f"{ms:.3f} ms",
                "< 1 ms" if goal else "",
                ms < 1.0 if goal else None,
                ms,
            )
        )
        figures[f"plan_ms_{size}"] = seconds * 1e3
    report("per-request planner", rows, figures)


if __name__ == "__main__":
    main()
