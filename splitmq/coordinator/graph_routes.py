"""The per-request planner's cost model for a stage graph (Plan 2: fan-out, branches in
parallel, fan-in), with the chain's terms (:mod:`splitmq.coordinator.planner`).

For a route (an agent per stage), every stage's times follow its edges:

- the input reaches every stage that reads it (the requester among its ``sources``)
  after the client's send: a broker hop, the bridges to its site, and the client's link
  carrying every entry stage its input (none for stages on the client's own agent);
- a stage starts once its **last** input arrived, waits (a join: ``join_ms``, merging
  the branches; and behind the requests its agent had queued for it, unless every
  input came from stages on the same agent: in-process), then computes;
- it sends its output once (its link and a broker hop) unless every target runs on its
  own agent; each target receives it after the bridges between their sites;
- the latency is when the last share reaches the requester (``join_ms`` more when the
  requester joins several), so a parallel section costs its slowest branch (transfer +
  queueing + compute) plus the join, as :mod:`~splitmq.coordinator.partition.parallel`
  models it; energy (and weighted energy) is the **sum** over every stage.

:func:`graph_routes` weighs every combination of the stages' eligible replicas (a
stage graph has a few stages and few replicas each) and keeps the Pareto set;
:func:`graph_stage_predictions` gives each stage's parts as a trace measures them
(:func:`splitmq.client.kpi.stage_times`): the stages in the order they finish (a
trace's order), each one's transfer from the previous one's finish to the arrival of
its last input -- negative for a branch that runs alongside the one before it -- so
the parts add up to the latency, as a chain's do.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from splitmq.coordinator.planner import (
    MB,
    AgentView,
    Candidate,
    Cost,
    DeploymentView,
    PlannerConfig,
    StageView,
    _at_client,
    _pareto_filter,
    battery_weight,
    bridge_ms,
    eligible,
    hop_ms,
    queueing_ms,
)
from splitmq.wire import REQUESTER, StagePrediction

__all__ = ["graph_route_cost", "graph_routes", "graph_stage_predictions"]

MAX_ROUTES = 256
"""Combinations weighed at most: beyond, each stage keeps only its fastest replicas."""


@dataclass(frozen=True)
class _Timeline:
    cost: Cost
    predictions: tuple[StagePrediction, ...]
    final_hop_ms: float


def _edges(deployment: DeploymentView) -> tuple[list[tuple[int, ...]], list[tuple[int, ...]]]:
    """Per stage position: the positions of its sources and targets (REQUESTER kept);
    a stage without edges is chained to its neighbours."""
    position = {s.stage: i for i, s in enumerate(deployment.stages)}
    last = len(deployment.stages) - 1

    def at(stage: int) -> int:
        return REQUESTER if stage == REQUESTER else position[stage]

    sources = [
        tuple(at(e) for e in s.sources) if s.sources is not None else (i - 1 if i else REQUESTER,)
        for i, s in enumerate(deployment.stages)
    ]
    targets = [
        tuple(at(e) for e in s.targets)
        if s.targets is not None
        else (i + 1 if i < last else REQUESTER,)
        for i, s in enumerate(deployment.stages)
    ]
    return sources, targets


def _timeline(
    deployment: DeploymentView,
    agents: Sequence[str],
    fleet: Mapping[str, AgentView],
    config: PlannerConfig,
    client: AgentView | None,
) -> _Timeline:
    stages = deployment.stages
    sources, targets = _edges(deployment)
    position = {s.stage: i for i, s in enumerate(stages)}
    views = [fleet[a] for a in agents]
    entries = [i for i, s in enumerate(sources) if REQUESTER in s]
    link_bytes = sum(stages[i].input_bytes for i in entries if not _at_client(client, agents[i]))
    link_ms = client.send_ms(link_bytes) if client is not None and link_bytes else 0.0
    input_sent_ms = link_ms + hop_ms(client, config)
    done = [0.0] * len(stages)  # when each stage finished computing
    sent = [0.0] * len(stages)  # when its output left (= done when it stays in-process)
    energy = weighted = 0.0
    parts: list[tuple[float, int, float, float, float]] = []
    for i in _order(sources):
        stage, agent = stages[i], views[i]
        arrivals = [
            input_sent_ms + bridge_ms("", agent.site, config)
            if s == REQUESTER
            else sent[s] + bridge_ms(views[s].site, agent.site, config)
            if agents[s] != agents[i]
            else done[s]
            for s in sources[i]
        ]
        ready = max(arrivals)
        in_process = all(s != REQUESTER and agents[s] == agents[i] for s in sources[i])
        wait = (config.join_ms if len(sources[i]) > 1 else 0.0) + (
            0.0 if in_process else queueing_ms(stage, agent)
        )
        compute = stage.compute_ms[agents[i]]
        done[i] = ready + wait + compute
        remote = any(t == REQUESTER or agents[t] != agents[i] for t in targets[i])
        sent[i] = done[i] + (
            agent.send_ms(stage.output_bytes) + hop_ms(agent, config) if remote else 0.0
        )
        received = not in_process and not (
            sources[i] == (REQUESTER,) and _at_client(client, agents[i])
        )
        radio_bytes = (stage.input_bytes if received else 0) + (stage.output_bytes if remote else 0)
        joules = agent.active_w * compute / 1e3 + agent.radio_j_per_mb * radio_bytes / MB
        energy += joules
        weighted += joules * battery_weight(agent, config)
        parts.append((done[i], stage.stage, ready, wait, compute))
    finals = [i for i, t in enumerate(targets) if REQUESTER in t]
    end = max(sent[i] + bridge_ms(views[i].site, "", config) for i in finals)
    end += config.join_ms if len(finals) > 1 else 0.0
    predictions = []
    previous = 0.0  # in the order a trace lists them: by finish
    for finished, index, ready, wait, compute in sorted(parts):
        predictions.append(
            StagePrediction(index, agents[position[index]], ready - previous, wait, compute)
        )
        previous = finished
    return _Timeline(Cost(end, weighted, energy), tuple(predictions), end - previous)


def _order(sources: Sequence[tuple[int, ...]]) -> list[int]:
    """The stage positions in an order where every stage comes after its sources."""
    placed: list[int] = []
    left = list(range(len(sources)))
    while left:
        ready = [i for i in left if all(s == REQUESTER or s in placed for s in sources[i])]
        if not ready:
            raise ValueError(f"the stage graph has a cycle among stages {left}")
        placed.extend(ready)
        left = [i for i in left if i not in ready]
    return placed


def graph_route_cost(
    deployment: DeploymentView,
    agents: Sequence[str],
    fleet: Mapping[str, AgentView],
    config: PlannerConfig,
    client: AgentView | None = None,
) -> Cost:
    """The cost of one route through a stage graph (the module's model)."""
    return _timeline(deployment, agents, fleet, config, client).cost


def graph_stage_predictions(
    deployment: DeploymentView,
    agents: Sequence[str],
    fleet: Mapping[str, AgentView],
    config: PlannerConfig,
    client: AgentView | None = None,
) -> tuple[tuple[StagePrediction, ...], float]:
    """Per stage, in the order they finish (as a trace lists them): from the previous
    one's finish to the arrival of its last input, its wait (a join's ``join_ms``
    included) and its compute; then the way from the last finish to the requester (a
    requester's join included). They add up to the latency."""
    timeline = _timeline(deployment, agents, fleet, config, client)
    return timeline.predictions, timeline.final_hop_ms


def _options(stage: StageView, fleet: Mapping[str, AgentView], config: PlannerConfig) -> list[str]:
    return [a for a in stage.replicas if eligible(fleet.get(a), config) and a in stage.compute_ms]


def graph_routes(
    deployment: DeploymentView,
    fleet: Mapping[str, AgentView],
    config: PlannerConfig,
    client: AgentView | None = None,
) -> list[Candidate]:
    """Every route through a stage graph not dominated in (latency, weighted energy,
    energy): each combination of the stages' eligible replicas, weighed. Beyond
    :data:`MAX_ROUTES` combinations each stage keeps only its fastest replicas."""
    options = [_options(stage, fleet, config) for stage in deployment.stages]
    if not all(options):
        return []
    keep = max(1, math.floor(MAX_ROUTES ** (1 / len(options))))
    if math.prod(len(o) for o in options) > MAX_ROUTES:
        options = [
            sorted(o, key=stage.compute_ms.__getitem__)[:keep]
            for o, stage in zip(options, deployment.stages, strict=True)
        ]
    routes = [
        Candidate(deployment, agents, graph_route_cost(deployment, agents, fleet, config, client))
        for agents in itertools.product(*options)
    ]
    return _pareto_filter(routes)
