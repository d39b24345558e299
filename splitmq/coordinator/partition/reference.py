"""The reference evaluation: a partition's figures computed with the planner's own
``route_cost``, term by term (the search's arrays must agree with it)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from splitmq.coordinator.partition.types import Figures, PartitionConfig
from splitmq.coordinator.planner import (
    AgentView,
    DeploymentView,
    StageView,
    hop_ms,
    route_cost,
)
from splitmq.wire.manifest import Variant

# --- The reference cost: written plainly, on the planner's own functions ------------


def boundaries(variant: Variant) -> tuple[int, ...]:
    """``0``, the variant's candidate cut positions in order, and the operator count."""
    count = len(variant.operators)
    if not variant.cuttable:
        return (0, count)
    cuts = sorted({c.position for c in variant.cut_points if 0 < c.position < count})
    return (0, *cuts, count)


def _frontier_bytes(variant: Variant, position: int) -> int:
    if position == 0:
        return sum(t.size_bytes for t in variant.inputs)
    if position == len(variant.operators):
        return sum(t.size_bytes for t in variant.outputs)
    point = variant.cut_point(position)
    if point is None:
        raise ValueError(f"{position} is not a cut point of variant {variant.name}")
    return point.frontier_bytes


def _stage_views(
    variant: Variant,
    edges: Sequence[int],
    primaries: Sequence[str],
    agents: Mapping[str, AgentView],
    config: PartitionConfig,
) -> tuple[StageView, ...]:
    """Stage ``i`` covers operators ``[edges[i], edges[i + 1])``, on its primary."""
    views = []
    for i, agent_id in enumerate(primaries):
        start, end = edges[i], edges[i + 1]
        flops = sum(op.flops for op in variant.operators[start:end])
        compute_ms = agents[agent_id].compute_ms(flops, config.stage_overhead_ms)
        views.append(
            StageView(
                i,
                (agent_id,),
                {agent_id: compute_ms},
                _frontier_bytes(variant, start),
                _frontier_bytes(variant, end),
            )
        )
    return tuple(views)


def evaluate(
    variant: Variant,
    cut_points: Sequence[int],
    primaries: Sequence[str],
    agents: Mapping[str, AgentView],
    *,
    config: PartitionConfig = PartitionConfig(),
    source: AgentView | None = None,
) -> Figures:
    """The figures of one partition, by the planner's ``route_cost``: the reference.

    ``cut_points`` are positions; ``primaries`` one agent id per stage.
    """
    edges = (0, *cut_points, len(variant.operators))
    views = _stage_views(variant, edges, primaries, agents, config)
    deployment = DeploymentView("partition", 0, variant.name, "", variant.name, 1.0, views)
    cost = route_cost(deployment, primaries, agents, config.planner, client=source)
    bottleneck = max(
        view.compute_ms[agent_id]
        + agents[agent_id].send_ms(view.output_bytes)
        + hop_ms(agents[agent_id], config.planner)
        for view, agent_id in zip(views, primaries, strict=True)
    )
    return Figures(cost.latency_ms, bottleneck, cost.energy_j, cost.weighted_energy_j)
