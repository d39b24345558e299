"""Plan time for a request naming a task, against one naming a model, side by side.

A fleet of 100 simulated agents carries a task of three members in float32 and int8
(six deployments, 3 stages each, 3 replicas per stage drawn from the fleet). A request
naming the task weighs the routes of all six; one naming a member weighs that member's
two. Both are timed in interleaved rounds in one run; the ratio says what choosing the
model costs on top of choosing the route (about the number of candidates).

    .venv/bin/python benchmarks/bench_task_choice.py [--quick]
"""

from __future__ import annotations

import functools
import random
import sys

from _report import Row, median_time_s, report
from bench_planner import random_agents

from splitmq.coordinator.planner import AgentView, DeploymentView, StageView, plan
from splitmq.wire import EnergyLevel, Plan, PlanRequest

MEMBERS = {"small": (0.79, 1.0), "medium": (0.94, 5.0), "large": (0.97, 20.0)}
"""member -> (accuracy, compute ms of a stage on a 1 GFLOP/s agent)."""


def fleet_and_members(
    size: int, seed: int = 0
) -> tuple[dict[str, AgentView], list[DeploymentView]]:
    rng = random.Random(seed)
    agents = random_agents(size, rng)
    names = list(agents)
    views = []
    for epoch, (member, (accuracy, stage_ms)) in enumerate(MEMBERS.items(), start=1):
        for variant, factor, loss in (("float32", 1.0, 0.0), ("int8", 0.6, 0.005)):
            stages = []
            for s in range(3):
                replicas = tuple(rng.sample(names, 3))
                times = {a: factor * stage_ms * rng.uniform(0.5, 2.0) for a in replicas}
                stages.append(StageView(s, replicas, times, 20_000, 20_000))
            views.append(
                DeploymentView(
                    f"{member}-{variant}",
                    epoch,
                    member,
                    "v1",
                    variant,
                    1.0 - loss,
                    tuple(stages),
                    task="digits",
                    accuracy=accuracy - loss,
                )
            )
    return agents, views


def main() -> None:
    quick = "--quick" in sys.argv
    agents, views = fleet_and_members(100)
    level = EnergyLevel.BALANCED
    by_task = PlanRequest("r", "c", "", energy_level=level, task="digits", min_accuracy=0.9)
    by_model = PlanRequest("r", "c", "medium", energy_level=level)
    rows = []
    times = {}
    for name, request in (("task (6 candidates)", by_task), ("model (2 variants)", by_model)):
        if not isinstance(plan(request, views, agents), Plan):
            raise SystemExit(f"no plan for the {name} request")
        call = functools.partial(plan, request, views, agents)
        times[name] = median_time_s(call, repeat=5 if quick else 15, number=40 if quick else 200)
        rows.append(
            Row(
                "21 tasks",
                f"plan time, request naming a {name}",
                f"{times[name] * 1e3:.3f} ms",
                value=times[name] * 1e3,
            )
        )
    ratio = times["task (6 candidates)"] / times["model (2 variants)"]
    rows.append(Row("21 tasks", "task / model plan time", f"{ratio:.2f}x", value=ratio))
    report(
        "choosing a task's member",
        rows,
        {"task_plan_ms": times["task (6 candidates)"] * 1e3, "ratio": ratio},
    )


if __name__ == "__main__":
    main()
