"""The per-request planner and the Plan 2 optimizer agree: the ``fork`` and ``heads``
stage graphs placed by :func:`parallel_partition`, seen as the planner sees a deployment
(its stages' edges and tensors), predict the optimizer's latency and energy; and the
planner's prediction is below the chain sum it used to make."""

from __future__ import annotations

from dataclasses import replace

import pytest

from splitmq.converter import open_entry
from splitmq.coordinator.partition import PartitionConfig, PartitionRequest, parallel_partition
from splitmq.coordinator.planner import AgentView, DeploymentView, StageView, route_cost
from splitmq.coordinator.views import edge_bytes

from .conftest import GraphModel
from .models import POOL

FLEET = (
    AgentView("fast", speed_gflops=4.0, bandwidth_mbps=100.0, link_latency_ms=2.0),
    AgentView("mid", speed_gflops=2.0, bandwidth_mbps=50.0, link_latency_ms=1.0),
    AgentView("slow", speed_gflops=0.5, bandwidth_mbps=20.0, link_latency_ms=3.0, hop_ms=1.5),
    AgentView("pi", speed_gflops=1.0, bandwidth_mbps=10.0, active_w=4.0, plugged=False),
    AgentView("phone", speed_gflops=1.5, active_w=3.0, radio_j_per_mb=0.5),
)
# a stage overhead that dwarfs the tiny models' FLOPs would hide a wrong term
CONFIG = PartitionConfig(stage_overhead_ms=0.05, join_ms=0.3)


@pytest.mark.parametrize("name", ["fork", "heads"])
def test_the_planner_predicts_what_the_optimizer_placed(
    name: str, fork: GraphModel, heads: GraphModel
) -> None:
    model = fork if name == "fork" else heads
    variant = open_entry(POOL, name).manifest.variants["float32"]
    placed = parallel_partition(variant, FLEET, PartitionRequest(), CONFIG)
    assert len(placed.stages) == len(model.shards)
    stages = []
    for plan, shard, (sources, targets) in zip(
        placed.stages, model.shards, model.edges, strict=True
    ):
        stages.append(
            StageView(
                plan.stage,
                plan.replicas,
                dict(zip(plan.replicas, plan.compute_ms, strict=True)),
                edge_bytes(sources, shard.inputs),  # type: ignore[attr-defined]
                edge_bytes(targets, shard.outputs),  # type: ignore[attr-defined]
                sources=tuple(e.stage for e in sources),
                targets=tuple(e.stage for e in targets),
            )
        )
    view = DeploymentView("d", 1, name, "v", "float32", 1.0, tuple(stages))
    fleet = {a.agent_id: a for a in FLEET}
    primaries = [s.replicas[0] for s in placed.stages]
    cost = route_cost(view, primaries, fleet, CONFIG.planner)
    assert cost.latency_ms == pytest.approx(placed.predicted_latency_ms)
    assert cost.energy_j == pytest.approx(placed.energy_j)
    assert cost.weighted_energy_j == pytest.approx(placed.weighted_energy_j)
    as_chain = tuple(replace(s, sources=None, targets=None) for s in stages)
    chain = DeploymentView("d", 1, name, "v", "float32", 1.0, as_chain)
    assert cost.latency_ms < route_cost(chain, primaries, fleet, CONFIG.planner).latency_ms
