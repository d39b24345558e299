"""Plan 2 placements: a parallel section's branches on agents of their own, at once.

For a parallel section ``[start, end)`` of the variant (the converter's
``parallel_sections``) a Plan 2 placement has, in order, the *prefix* stage (the
operators before ``start``, when there are any: it fans out), one stage per branch, and
the *suffix* stage (the operators from ``end`` on, when there are any: it joins; else
the requester joins the branches' outputs). Every stage has its own primary, distinct
agents (as in a chain). Its figures, with the chain's terms (compute = overhead +
FLOPs / speed; a send = the agent's link + a broker hop; energy = active power x
compute + radio J/MB x MB received and sent, weighted by battery):

- latency = the input's way to the first stages + the prefix's compute and send (its
  send carries every branch its tensors) + the **slowest branch** (compute and send)
  + the join's wait (``PartitionConfig.join_ms``) + the suffix's compute and send;
- energy = the **sum** over every stage;
- bottleneck = the busiest agent's time per request (compute + send): with distinct
  primaries every agent runs one stage, so the largest stage time.

:func:`evaluate_parallel` writes these plainly (the reference); :func:`parallel_partition`
finds the best placement exactly: per stage it keeps the agents that fewer than ``m``
others (``m`` stages) match or beat on both the stage's time and its energy -- any
other could be swapped for one of those the other stages leave free without costing
more on any objective -- then searches those depth first, bounded by the best found.
``tests/coordinator/test_parallel_partition.py`` checks it against brute force.

Pins: ``pin_first`` is the prefix's primary and ``pin_last`` the suffix's; a section
without a prefix (or suffix) is not placed under that pin. Memory, replicas, the shard
limit and the latency gate are the chain's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from splitmq.coordinator.partition.reference import _frontier_bytes
from splitmq.coordinator.partition.refusal import _check_pins, _usable
from splitmq.coordinator.partition.types import (
    Constraint,
    Figures,
    Partition,
    PartitionConfig,
    PartitionRefused,
    PartitionRequest,
    StagePlan,
)
from splitmq.coordinator.planner import MB, AgentView, battery_weight, hop_ms
from splitmq.wire import Objective
from splitmq.wire.manifest import ParallelSection, Variant

__all__ = ["GraphStage", "evaluate_parallel", "graph_stages", "parallel_partition"]


@dataclass(frozen=True)
class GraphStage:
    """One stage of a Plan 2 placement, before it has agents.

    Attributes:
        role: ``prefix`` (fans out), ``branch`` or ``suffix`` (joins).
        operators: the variant's live operators it runs.
        flops, param_bytes: sums over them.
        input_bytes: what it receives; output_bytes: what it sends (the prefix sends
            every branch its tensors).
    """

    role: str
    operators: tuple[int, ...]
    flops: int
    param_bytes: int
    input_bytes: int
    output_bytes: int

    @property
    def need_bytes(self) -> int:
        return self.param_bytes + self.input_bytes + self.output_bytes


def graph_stages(variant: Variant, section: ParallelSection) -> tuple[GraphStage, ...]:
    """The stages of the Plan 2 placement around ``section``: prefix, branches, suffix."""
    ops = variant.operators
    count = len(ops)

    def span(first: int, last: int) -> tuple[tuple[int, ...], int, int]:
        live = tuple(i for i in range(first, last) if not ops[i].constant)
        return (
            live,
            sum(ops[i].flops for i in live),
            sum(ops[i].param_bytes for i in range(first, last)),
        )

    branch_in = sum(b.input_bytes for b in section.branches)
    branch_out = sum(b.output_bytes for b in section.branches)
    join_in = _frontier_bytes(variant, section.end)
    stages = []
    if section.start > 0:
        live, flops, params = span(0, section.start)
        direct = max(0, join_in - branch_out)  # what the join reads from the prefix itself
        stages.append(
            GraphStage(
                "prefix", live, flops, params, _frontier_bytes(variant, 0), branch_in + direct
            )
        )
    for branch in section.branches:
        stages.append(
            GraphStage(
                "branch",
                branch.operators,
                branch.flops,
                branch.param_bytes,
                branch.input_bytes,
                branch.output_bytes,
            )
        )
    if section.end < count:
        live, flops, params = span(section.end, count)
        stages.append(
            GraphStage("suffix", live, flops, params, join_in, _frontier_bytes(variant, count))
        )
    return tuple(stages)


@dataclass(frozen=True)
class _StageCost:
    latency_ms: float  # compute + send + hop (the prefix: plus the input's link from the source)
    busy_ms: float  # compute + send + hop: the bottleneck's term
    energy_j: float
    weighted_j: float


def _stage_cost(
    stage: GraphStage,
    agent: AgentView,
    config: PartitionConfig,
    source: AgentView | None,
    first: bool,
) -> _StageCost:
    compute = agent.compute_ms(stage.flops, config.stage_overhead_ms)
    busy = compute + agent.send_ms(stage.output_bytes) + hop_ms(agent, config.planner)
    received = stage.input_bytes
    link = 0.0
    if first and stage.role == "prefix":
        here = source is not None and source.agent_id == agent.agent_id
        link = 0.0 if here or source is None else source.send_ms(stage.input_bytes)
        received = 0 if here else received
    energy = (
        agent.active_w * compute / 1e3 + agent.radio_j_per_mb * (received + stage.output_bytes) / MB
    )
    weighted = energy * battery_weight(agent, config.planner)
    return _StageCost(busy + link, busy, energy, weighted)


def _source_ms(
    stages: Sequence[GraphStage], source: AgentView | None, config: PartitionConfig
) -> float:
    """The input's way to the first stages: a broker hop; and, when the branches read
    the input themselves (no prefix), the source's link carrying each its share."""
    hop = hop_ms(source, config.planner)
    if stages[0].role == "prefix" or source is None:
        return hop
    return hop + source.send_ms(sum(s.input_bytes for s in stages if s.role == "branch"))


def _combine(
    stages: Sequence[GraphStage], costs: Sequence[_StageCost], source_ms: float, join_ms: float
) -> Figures:
    latency = source_ms
    branches = [c.latency_ms for s, c in zip(stages, costs, strict=True) if s.role == "branch"]
    for stage, cost in zip(stages, costs, strict=True):
        if stage.role != "branch":
            latency += cost.latency_ms
    latency += max(branches) + join_ms
    return Figures(
        latency,
        max(c.busy_ms for c in costs),
        sum(c.energy_j for c in costs),
        sum(c.weighted_j for c in costs),
    )


def evaluate_parallel(
    variant: Variant,
    section: ParallelSection,
    primaries: Sequence[str],
    agents: Mapping[str, AgentView],
    *,
    config: PartitionConfig = PartitionConfig(),
    source: AgentView | None = None,
) -> Figures:
    """The figures of one Plan 2 placement, written plainly: the reference."""
    stages = graph_stages(variant, section)
    costs = [
        _stage_cost(stage, agents[agent_id], config, source, first=i == 0)
        for i, (stage, agent_id) in enumerate(zip(stages, primaries, strict=True))
    ]
    return _combine(stages, costs, _source_ms(stages, source, config), config.join_ms)


def _key(figures: Figures, objective: Objective) -> tuple[float, float]:
    if objective is Objective.THROUGHPUT:
        return (figures.bottleneck_ms, figures.latency_ms)
    if objective is Objective.ENERGY:
        return (figures.weighted_energy_j, figures.latency_ms)
    return (figures.latency_ms, 0.0)


def parallel_partition(
    variant: Variant,
    agents: Sequence[AgentView],
    request: PartitionRequest = PartitionRequest(),
    config: PartitionConfig = PartitionConfig(),
) -> Partition:
    """The best Plan 2 placement of ``variant`` over ``agents`` (over every parallel
    section). Pure: no I/O.

    Raises:
        PartitionRefused: no section, or none that can be placed; ``constraint`` says why.
    """
    usable = _usable(agents, config)
    _check_pins(request, agents, usable, config)
    if not variant.parallel_sections:
        raise PartitionRefused(
            "stages",
            f"variant {variant.name} has no parallel section (no independent branches): "
            "deploy it as a chain (--plans chain)",
        )
    best: tuple[tuple[float, float], Partition] | None = None
    refusals: list[PartitionRefused] = []
    for section in variant.parallel_sections:
        try:
            found = _place(variant, section, usable, request, config)
        except PartitionRefused as refusal:
            refusals.append(refusal)
            continue
        key = _key(_figures_of(found), request.objective)
        if best is None or key < best[0]:
            best = (key, found)
    if best is None:
        raise refusals[-1]
    return best[1]


def _figures_of(partition: Partition) -> Figures:
    return Figures(
        partition.predicted_latency_ms,
        partition.bottleneck_ms,
        partition.energy_j,
        partition.weighted_energy_j,
    )


def _place(
    variant: Variant,
    section: ParallelSection,
    usable: Sequence[AgentView],
    request: PartitionRequest,
    config: PartitionConfig,
) -> Partition:
    stages = graph_stages(variant, section)
    m = len(stages)
    where = f"section [{section.start}, {section.end})"
    if request.pin_first is not None and stages[0].role != "prefix":
        raise PartitionRefused(
            "pin_first", f"{where} starts with its branches: no first stage to pin"
        )
    if request.pin_last is not None and stages[-1].role != "suffix":
        raise PartitionRefused("pin_last", f"{where} ends with its branches: no stage to pin")
    if len(usable) < m:
        raise PartitionRefused(
            "agents",
            f"{where} needs {m} agents (one per stage), {len(usable)} can host stages",
        )
    headroom = config.memory_headroom

    def room(agent: AgentView) -> float:
        free = agent.mem_free_bytes
        return math.inf if free is None else free * headroom

    candidates: list[list[tuple[int, _StageCost]]] = []
    for index, stage in enumerate(stages):
        if request.max_shard_bytes is not None and stage.param_bytes > request.max_shard_bytes:
            raise PartitionRefused(
                "max_shard_bytes",
                f"{where}: its {stage.role} stage holds {stage.param_bytes / MB:.2f} MB of "
                f"parameters, above max_shard_bytes ({request.max_shard_bytes / MB:.2f} MB)",
            )
        fits = [a for a, agent in enumerate(usable) if stage.need_bytes <= room(agent)]
        if len(fits) < request.replicas:
            raise PartitionRefused(
                "memory" if not fits else "replicas",
                f"{where}: its {stage.role} stage needs {stage.need_bytes / MB:.2f} MB; "
                f"{len(fits)} agents have room for it, {request.replicas} replicas were asked",
            )
        pin = (
            request.pin_first
            if index == 0 and stage.role == "prefix"
            else request.pin_last
            if index == m - 1 and stage.role == "suffix"
            else None
        )
        if pin is not None:
            fits = [a for a in fits if usable[a].agent_id == pin]
            if not fits:
                constraint: Constraint = "pin_first" if index == 0 else "pin_last"
                raise PartitionRefused(
                    constraint, f"{constraint} agent {pin} has no room for {where}"
                )
        costs = [
            (a, _stage_cost(stage, usable[a], config, request.source, first=index == 0))
            for a in fits
        ]
        candidates.append(_undominated(costs, m))
    source_ms = _source_ms(stages, request.source, config)
    chosen = _search(stages, candidates, source_ms, request, config)
    if chosen is None:
        raise PartitionRefused(
            "max_latency_ms" if request.max_latency_ms is not None else "agents",
            f"no placement of {where} gives every stage its own agent"
            + (
                f" within max_latency_ms ({request.max_latency_ms:g} ms)"
                if request.max_latency_ms is not None
                else ""
            ),
        )
    primaries, figures = chosen
    return _partition(
        variant,
        section,
        stages,
        usable,
        primaries=primaries,
        figures=figures,
        request=request,
        config=config,
    )


def _undominated(costs: list[tuple[int, _StageCost]], depth: int) -> list[tuple[int, _StageCost]]:
    """The agents fewer than ``depth`` others match or beat on time and energy (both
    weighted and not, and busy time): the only ones an optimum needs."""

    def key(c: _StageCost) -> tuple[float, ...]:
        return (c.latency_ms, c.busy_ms, c.energy_j, c.weighted_j)

    kept = []
    for i, (agent, cost) in enumerate(costs):
        mine = key(cost)
        beaten = sum(
            1
            for j, (_, other) in enumerate(costs)
            if j != i
            and all(o <= s for o, s in zip(key(other), mine, strict=True))
            and (key(other) != mine or j < i)
        )
        if beaten < depth:
            kept.append((agent, cost))
    return sorted(kept, key=lambda item: key(item[1]))


def _search(
    stages: Sequence[GraphStage],
    candidates: Sequence[Sequence[tuple[int, _StageCost]]],
    source_ms: float,
    request: PartitionRequest,
    config: PartitionConfig,
) -> tuple[tuple[int, ...], Figures] | None:
    """Depth first over the candidates with distinct primaries; the best by the
    objective (ties: lower latency), within the latency gate."""
    best: list[tuple[tuple[float, float], tuple[int, ...], Figures]] = []
    bound = request.max_latency_ms
    objective = request.objective
    picked: list[int] = []
    costs: list[_StageCost] = []

    def visit(index: int) -> None:
        if index == len(stages):
            figures = _combine(stages, costs, source_ms, config.join_ms)
            if bound is not None and figures.latency_ms > bound:
                return
            key = _key(figures, objective)
            if not best or key < best[0][0]:
                best[:] = [(key, tuple(picked), figures)]
            return
        for agent, cost in candidates[index]:
            if agent in picked:
                continue
            picked.append(agent)
            costs.append(cost)
            visit(index + 1)
            picked.pop()
            costs.pop()

    visit(0)
    if not best:
        return None
    return best[0][1], best[0][2]


def _partition(
    variant: Variant,
    section: ParallelSection,
    stages: Sequence[GraphStage],
    usable: Sequence[AgentView],
    *,
    primaries: Sequence[int],
    figures: Figures,
    request: PartitionRequest,
    config: PartitionConfig,
) -> Partition:
    plans = []
    for index, (stage, primary) in enumerate(zip(stages, primaries, strict=True)):
        replicas = _replicas(stage, primary, usable, request, config, first=index == 0)
        plans.append(
            StagePlan(
                stage=index,
                start_op=min(stage.operators, default=0),
                end_op=max(stage.operators, default=-1) + 1,
                flops=stage.flops,
                param_bytes=stage.param_bytes,
                input_bytes=stage.input_bytes,
                output_bytes=stage.output_bytes,
                replicas=tuple(usable[a].agent_id for a in replicas),
                compute_ms=tuple(
                    usable[a].compute_ms(stage.flops, config.stage_overhead_ms) for a in replicas
                ),
                operators=stage.operators,
            )
        )
    return Partition(
        variant=variant.name,
        objective=request.objective,
        cut_points=(),
        stages=tuple(plans),
        predicted_latency_ms=figures.latency_ms,
        bottleneck_ms=figures.bottleneck_ms,
        throughput_rps=1e3 / figures.bottleneck_ms if figures.bottleneck_ms > 0 else math.inf,
        energy_j=figures.energy_j,
        weighted_energy_j=figures.weighted_energy_j,
        section=(section.start, section.end),
    )


def _replicas(
    stage: GraphStage,
    primary: int,
    usable: Sequence[AgentView],
    request: PartitionRequest,
    config: PartitionConfig,
    *,
    first: bool,
) -> list[int]:
    """The primary, then fallbacks: other agents with room, cheapest first (ties: id)."""
    if request.replicas == 1:
        return [primary]
    headroom = config.memory_headroom
    others = []
    for a, agent in enumerate(usable):
        free = agent.mem_free_bytes
        if a != primary and (free is None or stage.need_bytes <= free * headroom):
            cost = _stage_cost(stage, agent, config, request.source, first=first)
            lead = cost.weighted_j if request.objective is Objective.ENERGY else cost.latency_ms
            others.append(((lead, cost.latency_ms, agent.agent_id), a))
    others.sort()
    return [primary, *(a for _, a in others[: request.replicas - 1])]
