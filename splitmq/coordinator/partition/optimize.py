"""``partition(variant, agents, request, config)``: the entry point, which runs the
searches, compares stage counts and evaluates the partition found."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import replace

from splitmq.coordinator.partition.arrays import _Fleet, _Intervals
from splitmq.coordinator.partition.kernels import _SLACK, _Found
from splitmq.coordinator.partition.reference import evaluate
from splitmq.coordinator.partition.refusal import _check_pins, _most_telling, _stage_counts, _usable
from splitmq.coordinator.partition.search import _Search
from splitmq.coordinator.partition.types import (
    FEWER_STAGES_TOLERANCE,
    Partition,
    PartitionConfig,
    PartitionRefused,
    PartitionRequest,
    StagePlan,
)
from splitmq.coordinator.planner import (
    AgentView,
)
from splitmq.wire import Objective, PlanShape
from splitmq.wire.manifest import Variant

# --- The entry points ----------------------------------------------------------------


def partition(
    variant: Variant,
    agents: Sequence[AgentView],
    request: PartitionRequest = PartitionRequest(),
    config: PartitionConfig = PartitionConfig(),
) -> Partition:
    """The best partition of ``variant`` over ``agents`` for ``request``. Pure: no I/O.

    Raises:
        PartitionRefused: no partition meets the request; ``constraint`` says why.
        ConfigError: two agents share an id.
    """
    usable = _usable(agents, config)
    _check_pins(request, agents, usable, config)
    intervals = _Intervals.of(variant, request.max_shard_bytes)
    fleet = _Fleet.of(usable, config)
    searches = []
    for scoped, local in _scopes(request, usable):
        counts = _stage_counts(variant, intervals, scoped, len(usable))
        search = _Search(
            intervals,
            fleet,
            scoped,
            config,
            depth=max(counts),
            source=request.source,
            source_runs_first=local,
        )
        searches.append((search, counts))
    found: list[Partition] = []
    refusals: list[PartitionRefused] = []
    for stages in sorted({count for _, counts in searches for count in counts}):
        kept: Partition | None = None  # of this stage count, the better search's
        for search, counts in searches:
            if stages not in counts:
                continue
            if found and search.least(stages) > min(map(_objective_value, found)) * (1 + _SLACK):
                continue  # more stages cannot do better than fewer already do
            try:
                candidate = _partition(variant, search, search.solve(stages), request.source)
            except PartitionRefused as refusal:
                refusals.append(refusal)
                continue
            if kept is None or _objective_value(candidate) < _objective_value(kept):
                kept = candidate
        if kept is not None:
            found.append(kept)
    if not found:
        raise _most_telling(refusals)
    best = min(_objective_value(p) for p in found)
    return next(
        p for p in found if _objective_value(p) <= best * (1 + FEWER_STAGES_TOLERANCE) + 1e-12
    )


def _scopes(
    request: PartitionRequest, usable: Sequence[AgentView]
) -> list[tuple[PartitionRequest, bool]]:
    """The searches that together cover every partition exactly, with whether the source
    runs the first stage in each.

    When the source is an agent that may run the first stage, the partitions where it
    does are searched apart, pinned to it with no input transfer; the other search
    charges the source's link to every partition, which is exact for all but those.
    """
    source = request.source
    if source is None or source.agent_id not in {a.agent_id for a in usable}:
        return [(request, False)]
    local = (replace(request, source=None, pin_first=source.agent_id), True)
    if request.pin_first == source.agent_id:
        return [local]
    if request.pin_first is not None:
        return [(request, False)]
    return [(request, False), local]


def _objective_value(partition: Partition) -> float:
    if partition.objective is Objective.THROUGHPUT:
        return partition.bottleneck_ms
    if partition.objective is Objective.ENERGY:
        return partition.weighted_energy_j
    return partition.predicted_latency_ms


def _partition(
    variant: Variant, search: _Search, found: _Found, source: AgentView | None
) -> Partition:
    """The partition ``found`` by ``search``, its figures evaluated from ``source``."""
    iv = search.intervals
    agents = search.fleet.agents
    overhead_ms = search.config.stage_overhead_ms
    stages = []
    for index, (start, end) in enumerate(itertools.pairwise((0, *found.ends))):
        flops = iv.flops_before[end] - iv.flops_before[start]
        replicas = search.replicas(start, end, found.agents[index])
        stages.append(
            StagePlan(
                stage=index,
                start_op=iv.positions[start],
                end_op=iv.positions[end],
                flops=flops,
                param_bytes=iv.params_before[end] - iv.params_before[start],
                input_bytes=iv.frontier[start],
                output_bytes=iv.frontier[end],
                replicas=tuple(agents[a].agent_id for a in replicas),
                compute_ms=tuple(agents[a].compute_ms(flops, overhead_ms) for a in replicas),
            )
        )
    cut_points = tuple(iv.positions[end] for end in found.ends[:-1])
    primaries = tuple(stage.primary for stage in stages)
    by_id = {a.agent_id: a for a in agents}
    figures = evaluate(variant, cut_points, primaries, by_id, config=search.config, source=source)
    return Partition(
        variant=variant.name,
        objective=search.request.objective,
        cut_points=cut_points,
        stages=tuple(stages),
        predicted_latency_ms=figures.latency_ms,
        bottleneck_ms=figures.bottleneck_ms,
        throughput_rps=1e3 / figures.bottleneck_ms if figures.bottleneck_ms > 0 else float("inf"),
        energy_j=figures.energy_j,
        weighted_energy_j=figures.weighted_energy_j,
    )


def choose(
    variant: Variant,
    agents: Sequence[AgentView],
    request: PartitionRequest = PartitionRequest(),
    config: PartitionConfig = PartitionConfig(),
    plans: PlanShape = PlanShape.CHAIN,
) -> Partition:
    """The best partition among the placements ``plans`` names: a chain
    (:func:`partition`), a Plan 2 placement
    (:func:`~splitmq.coordinator.partition.parallel.parallel_partition`), or (``auto``)
    whichever of the two the objective prefers -- the chain on a tie, and whenever the
    branches are too light to pay for their extra hops.

    Raises:
        PartitionRefused: nothing of what ``plans`` names meets the request.
    """
    from splitmq.coordinator.partition.parallel import parallel_partition

    if plans is PlanShape.CHAIN:
        return partition(variant, agents, request, config)
    if plans is PlanShape.PARALLEL:
        return parallel_partition(variant, agents, request, config)
    found: list[Partition] = []
    refusals: list[PartitionRefused] = []
    for search in (partition, parallel_partition):
        try:
            found.append(search(variant, agents, request, config))
        except PartitionRefused as refusal:
            refusals.append(refusal)
    if not found:
        raise refusals[0]
    return min(found, key=lambda p: (_objective_value(p), p.section is not None))
