"""The per-request planner: a pure function from a request and the fleet to a route.

``plan(request, deployments, fleet, config)`` returns a :class:`~splitmq.wire.Plan` —
for every stage of the chosen deployment an ordered list of agents, the chosen one
first, then its fallbacks — or a :class:`~splitmq.wire.PlanRefused` naming the
constraint that failed. No I/O: the coordinator's service shell gathers the views and
publishes what this returns.

The cost model (docs/architecture.md, "Energy model"), for a route ``a_0 .. a_{S-1}``:

- latency = the client's send of the input (one broker hop, plus its link when the
  client is an agent other than the first stage's: when the client's own agent runs
  the first stage the input never crosses the client's link) + for every stage its
  queueing and compute time on its agent + the agent's send of the stage's output
  (link latency + bytes / bandwidth, plus one broker hop: what the agent measured it to
  cost, its broker round trip, else ``hop_ms``; the bandwidth its emulated link's, else
  what its probes measured, ``Telemetry.hop_mbps``), except when the next stage runs on the
  same agent (in-process: neither a send nor a queue);
- + the client's own work, as it measured it and says it in its plan request
  (``PlanRequest.client_ms``: building and sending the input, reading the result):
  the same for every route, so it moves budgets and the prediction, not the choice;
- queueing = the requests waiting for the stage on the agent when its telemetry was
  taken (``queue_depth``) x the time each holds the stage's worker: its compute, then
  its send (a worker sends its output before it takes the next request, and an agent's
  radio sends one message at a time). An idle fleet queues nothing; a busy one shows
  in the prediction, and :func:`stage_predictions` gives the parts (transfer, queueing,
  compute per stage, then the final hop) that a request's trace measures;
- a hop between brokers (an agent behind a site broker and one of another site, or the
  client on the central broker) adds ``bridge_ms`` per bridge it crosses, so that
  between equal replicas a route that stays within a site wins;
- a stage graph (Plan 2) is timed as a graph (:mod:`splitmq.coordinator.graph_routes`):
  a stage starts when its last input arrives, a join waits ``join_ms`` more;
- energy (J) = for every stage, active power x compute time + radio J/MB x MB sent and
  received by the agent (the input is not received over the radio by the client's own
  agent);
- weighted energy = each agent's energy times ``1 + low_battery_weight * (1 - pct/100)^2``
  when it runs on battery (1 when plugged): energy drawn from a low battery weighs more.

Agents offline, or below the battery floor and unplugged, are left out; a stage left
with no replica online is refused as ``unavailable`` (passing: the deployment heals),
one whose replicas are all below the floor as ``battery``. The variant
comes from the deployments whose fidelity meets ``min_fidelity``. The energy level
picks the objective among routes that meet the latency and energy budgets:
``performance`` the lowest latency, ``saver`` the lowest weighted energy, ``balanced``
the lowest sum of both, each divided by its best value over the feasible routes.

The search keeps, per stage and agent, the Pareto set of partial routes over
(latency, weighted energy, energy): exact for any of these objectives under the two
budgets, and small in practice. ``tests/coordinator/test_planner.py`` checks it against
brute force on random fleets.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import NamedTuple

from splitmq.wire import (
    PLAN_UNAVAILABLE,
    EnergyLevel,
    Plan,
    PlanRefused,
    PlanRequest,
    StagePrediction,
)

MB = 1_000_000
MAX_CLIENT_MS = 60_000.0
"""The most a client's own work per request is taken to be (a larger figure is not a
measurement: it is ignored)."""


@dataclass(frozen=True)
class AgentView:
    """What the planner knows of one agent (from its status and telemetry).

    Attributes:
        agent_id: the agent.
        online: alive by its last telemetry.
        battery_pct: battery charge, 0-100.
        plugged: on mains power.
        active_w: power drawn while computing (W).
        radio_j_per_mb: radio energy per MB sent or received (J/MB).
        bandwidth_mbps: its link's bandwidth (Mbit/s).
        link_latency_ms: its link's one-way latency (ms).
        speed_gflops: effective compute speed (GFLOP/s), for shards not measured yet.
        mem_free_bytes: memory free for shards and their tensors; ``None``: unknown,
            taken as unlimited.
        hop_ms: what one hop through the broker costs this agent, as it measured it (its
            broker round trip, from telemetry); ``None``: ``PlannerConfig.hop_ms``.
        runtime: its runtime's name (``ai-edge-litert``, ``litert.js``), from its status.
        tensor_dtypes: the tensor dtypes its runtime can pass at a shard's boundary, as
            it declared them; ``None``: any.
        site: the site broker it sits behind (its status's ``site``); '': the central one.
    """

    agent_id: str
    online: bool = True
    battery_pct: float = 100.0
    plugged: bool = True
    active_w: float = 5.0
    radio_j_per_mb: float = 0.1
    bandwidth_mbps: float = 1000.0
    link_latency_ms: float = 0.0
    speed_gflops: float = 1.0
    mem_free_bytes: int | None = None
    hop_ms: float | None = None
    runtime: str = ""
    tensor_dtypes: tuple[str, ...] | None = None
    site: str = ""

    def send_ms(self, size_bytes: int) -> float:
        return self.link_latency_ms + size_bytes * 8 / (self.bandwidth_mbps * 1e3)

    def compute_ms(self, flops: int, overhead_ms: float = 0.0) -> float:
        """Predicted time to run ``flops`` at ``speed_gflops``, plus a fixed overhead."""
        return overhead_ms + flops / (self.speed_gflops * 1e6)


@dataclass(frozen=True)
class StageView:
    """One stage of a deployment as the planner sees it.

    Attributes:
        stage: index in the chain.
        replicas: agents that host it (in the deployment's preference order).
        compute_ms: measured compute time of the stage's shard, per agent.
        input_bytes: bytes of the tensors entering the stage.
        output_bytes: bytes of the tensors leaving it.
        queue_depth: requests waiting for the stage, per agent, as its last telemetry
            said (an agent not listed: none).
        sources, targets: in a stage graph (Plan 2), the stages that feed it and those it
            feeds (:data:`~splitmq.wire.REQUESTER` for the requester); ``None`` in a chain.
    """

    stage: int
    replicas: tuple[str, ...]
    compute_ms: Mapping[str, float]
    input_bytes: int
    output_bytes: int
    queue_depth: Mapping[str, int] = field(default_factory=dict)
    sources: tuple[int, ...] | None = None
    targets: tuple[int, ...] | None = None


@dataclass(frozen=True)
class DeploymentView:
    """A deployment of one variant of a model.

    ``task``, ``accuracy`` and ``agreement`` come from the model's manifest: the task it
    is a member of, the variant's measured accuracy, its agreement with the task's
    reference member on unlabelled data (None: unknown). A request naming a task is
    planned by :mod:`splitmq.coordinator.task_choice`.
    """

    deployment: str
    epoch: int
    model: str
    version: str
    variant: str
    fidelity: float
    stages: tuple[StageView, ...]
    task: str | None = None
    accuracy: float | None = None
    agreement: float | None = None


@dataclass(frozen=True)
class PlannerConfig:
    """Planner settings.

    Attributes:
        battery_floor_pct: agents below this charge are left out unless plugged.
        low_battery_weight: how much more energy from an empty battery weighs.
        hop_ms: the cost of one hop through the broker, for agents that have not measured
            their own (``AgentView.hop_ms``).
        max_fallbacks: fallbacks listed per stage after the chosen agent.
        bridge_ms: what a hop adds per bridge it crosses between a site broker and the
            central one (``AgentView.site``; docs/scaling.md): between two agents of one
            site none, between a site and the central broker (the client) one, between
            two sites two. The default is the measured median on loopback
            (``benchmarks/bench_bridge.py``); between real sites set the link's latency.
        join_ms: what a stage graph's join adds once its slowest branch arrived
            (as ``PartitionConfig.join_ms``).
    """

    battery_floor_pct: float = 15.0
    low_battery_weight: float = 3.0
    hop_ms: float = 0.5
    max_fallbacks: int = 2
    bridge_ms: float = 0.08
    join_ms: float = 0.2


class Cost(NamedTuple):
    """What a (partial) route costs. A named tuple: the search adds millions of these."""

    latency_ms: float
    weighted_energy_j: float
    energy_j: float

    def __add__(self, other: tuple[object, ...]) -> Cost:
        if not isinstance(other, Cost):
            return NotImplemented
        return make_cost(
            self.latency_ms + other.latency_ms,
            self.weighted_energy_j + other.weighted_energy_j,
            self.energy_j + other.energy_j,
        )

    def dominates(self, other: Cost) -> bool:
        return (
            self.latency_ms <= other.latency_ms
            and self.weighted_energy_j <= other.weighted_energy_j
            and self.energy_j <= other.energy_j
        )


_TUPLE_NEW = tuple.__new__


def make_cost(latency_ms: float, weighted_energy_j: float, energy_j: float) -> Cost:
    """``Cost(latency_ms, weighted_energy_j, energy_j)`` made without the named tuple's
    generated ``__new__``, which is a Python function even where the planner is
    compiled: the search makes about a thousand costs per plan."""
    return _TUPLE_NEW(Cost, (latency_ms, weighted_energy_j, energy_j))


ZERO = Cost(0.0, 0.0, 0.0)


@dataclass(frozen=True)
class Candidate:
    """A complete route through one deployment, with its cost."""

    deployment: DeploymentView
    agents: tuple[str, ...]
    cost: Cost = field(compare=False)


def battery_weight(agent: AgentView, config: PlannerConfig) -> float:
    if agent.plugged:
        return 1.0
    empty = 1.0 - min(100.0, max(0.0, agent.battery_pct)) / 100.0
    return 1.0 + config.low_battery_weight * empty * empty


def eligible(agent: AgentView | None, config: PlannerConfig) -> bool:
    return (
        agent is not None
        and agent.online
        and (agent.plugged or agent.battery_pct >= config.battery_floor_pct)
    )


def queueing_ms(stage: StageView, agent: AgentView) -> float:
    """The wait behind the requests queued for ``stage`` on ``agent``: each holds the
    stage's worker for its compute and its send."""
    depth = stage.queue_depth.get(agent.agent_id, 0)
    if depth <= 0:
        return 0.0
    return depth * (stage.compute_ms[agent.agent_id] + agent.send_ms(stage.output_bytes))


def _compute(
    stage: StageView, agent: AgentView, config: PlannerConfig, *, queued: bool = True
) -> Cost:
    """Queueing (unless the previous stage ran on the same agent: ``queued`` False, the
    request goes on in-process) and compute; energy for the compute only."""
    compute_ms = stage.compute_ms[agent.agent_id]
    energy = agent.active_w * compute_ms / 1e3
    wait_ms = queueing_ms(stage, agent) if queued else 0.0
    return make_cost(wait_ms + compute_ms, energy * battery_weight(agent, config), energy)


def _radio(agent: AgentView, size_bytes: int, latency_ms: float, config: PlannerConfig) -> Cost:
    energy = agent.radio_j_per_mb * size_bytes / MB
    return make_cost(latency_ms, energy * battery_weight(agent, config), energy)


def hop_ms(agent: AgentView | None, config: PlannerConfig) -> float:
    """One hop through the broker from ``agent``: as it measured it, else the default."""
    return agent.hop_ms if agent is not None and agent.hop_ms is not None else config.hop_ms


def crossings(here: str, there: str) -> int:
    """Bridges a hop from site ``here`` to site ``there`` crosses ('': the central broker)."""
    return 0 if here == there else (here != "") + (there != "")


def bridge_ms(here: str, there: str, config: PlannerConfig) -> float:
    """What the bridges add to a hop from site ``here`` to site ``there``."""
    return crossings(here, there) * config.bridge_ms


def _bridge(here: str, there: str, config: PlannerConfig) -> Cost:
    return make_cost(bridge_ms(here, there, config), 0.0, 0.0)


def _send(agent: AgentView, size_bytes: int, config: PlannerConfig) -> Cost:
    return _radio(agent, size_bytes, agent.send_ms(size_bytes) + hop_ms(agent, config), config)


def _receive(agent: AgentView, size_bytes: int, config: PlannerConfig) -> Cost:
    return _radio(agent, size_bytes, 0.0, config)


def _at_client(client: AgentView | None, agent_id: str) -> bool:
    """Whether ``agent_id`` is the client's own agent: the input is already there."""
    return client is not None and client.agent_id == agent_id


def _client_send(
    deployment: DeploymentView,
    client: AgentView | None,
    first: str,
    config: PlannerConfig,
    site: str = "",
) -> Cost:
    """The input's way to the first stage's agent ``first`` (at ``site``): a broker hop,
    the bridges from the central broker the client publishes on, and the client's link
    unless ``first`` is the client's own agent."""
    input_bytes = deployment.stages[0].input_bytes
    link_ms = 0.0 if client is None or _at_client(client, first) else client.send_ms(input_bytes)
    return Cost(link_ms + hop_ms(client, config) + bridge_ms("", site, config), 0.0, 0.0)


def route_cost(
    deployment: DeploymentView,
    agents: Sequence[str],
    fleet: Mapping[str, AgentView],
    config: PlannerConfig,
    client: AgentView | None = None,
) -> Cost:
    """The cost of one complete route, written plainly: the reference for the search.

    Stage i on agent a_i computes; it receives its input unless a_(i-1) is a_i (then the
    tensors stay in-process), and sends its output unless a_(i+1) is a_i, through the
    bridges between their sites (the client's: the central broker).
    """
    if is_graph(deployment):
        from splitmq.coordinator.graph_routes import graph_route_cost

        return graph_route_cost(deployment, agents, fleet, config, client)
    total = _client_send(deployment, client, agents[0], config, fleet[agents[0]].site)
    for i, (stage, agent_id) in enumerate(zip(deployment.stages, agents, strict=True)):
        agent = fleet[agent_id]
        if (i == 0 and not _at_client(client, agent_id)) or (i > 0 and agents[i - 1] != agent_id):
            total = total + _receive(agent, stage.input_bytes, config)
        total = total + _compute(stage, agent, config, queued=i == 0 or agents[i - 1] != agent_id)
        if i == len(agents) - 1 or agents[i + 1] != agent_id:
            there = fleet[agents[i + 1]].site if i < len(agents) - 1 else ""
            total = total + _send(agent, stage.output_bytes, config)
            total = total + _bridge(agent.site, there, config)
    return total


def is_graph(deployment: DeploymentView) -> bool:
    """Whether ``deployment`` is a stage graph (Plan 2) rather than a chain."""
    return any(s.sources is not None for s in deployment.stages)


def join_waits_ms(deployment: DeploymentView, config: PlannerConfig) -> float:
    """What a stage graph's join stages add to their stages' queueing parts."""
    return config.join_ms * sum(len(s.sources or ()) > 1 for s in deployment.stages)


def stage_predictions(
    deployment: DeploymentView,
    agents: Sequence[str],
    fleet: Mapping[str, AgentView],
    config: PlannerConfig,
    client: AgentView | None = None,
) -> tuple[tuple[StagePrediction, ...], float]:
    """The parts of a route's latency, as a trace measures them: per stage the transfer
    of its input, its queueing and its compute, then the final hop to the client. They
    add up to :func:`route_cost`'s latency. In a stage graph they follow the graph
    (:func:`splitmq.coordinator.graph_routes.graph_stage_predictions`)."""
    if is_graph(deployment):
        from splitmq.coordinator.graph_routes import graph_stage_predictions

        return graph_stage_predictions(deployment, agents, fleet, config, client)
    predictions = []
    transfer_ms = _client_send(
        deployment, client, agents[0], config, fleet[agents[0]].site
    ).latency_ms
    for i, (stage, agent_id) in enumerate(zip(deployment.stages, agents, strict=True)):
        agent = fleet[agent_id]
        in_process = i > 0 and agents[i - 1] == agent_id
        predictions.append(
            StagePrediction(
                stage=stage.stage,
                agent_id=agent_id,
                transfer_ms=transfer_ms,
                queueing_ms=0.0 if in_process else queueing_ms(stage, agent),
                compute_ms=stage.compute_ms[agent_id],
            )
        )
        stays = i < len(agents) - 1 and agents[i + 1] == agent_id
        there = fleet[agents[i + 1]].site if i < len(agents) - 1 else ""
        transfer_ms = (
            0.0
            if stays
            else _send(agent, stage.output_bytes, config).latency_ms
            + bridge_ms(agent.site, there, config)
        )
    return tuple(predictions), transfer_ms


Front = list[tuple[Cost, tuple[str, ...]]]


def _pareto_insert(
    front: Front, latency: float, weighted: float, energy: float, path: tuple[str, ...]
) -> None:
    # The hot loop of the search: dominance spelled out on the fields, and no Cost
    # built for a route that is dominated.
    for existing, _ in front:
        if existing[0] <= latency and existing[1] <= weighted and existing[2] <= energy:
            return
    if any(latency <= c[0] and weighted <= c[1] and energy <= c[2] for c, _ in front):
        front[:] = [
            (c, p)
            for c, p in front
            if not (latency <= c[0] and weighted <= c[1] and energy <= c[2])
        ]
    front.append((make_cost(latency, weighted, energy), path))


def pareto_routes(
    deployment: DeploymentView,
    fleet: Mapping[str, AgentView],
    config: PlannerConfig,
    client: AgentView | None = None,
) -> list[Candidate]:
    """Every route through ``deployment`` not dominated in (latency, weighted energy, energy).

    Whether a stage sends its output depends on who runs the next stage, so partial
    routes are kept per last agent, with that agent's send settled one step later.
    A stage graph's routes come from :func:`splitmq.coordinator.graph_routes.graph_routes`.
    """
    if is_graph(deployment):
        from splitmq.coordinator.graph_routes import graph_routes

        return graph_routes(deployment, fleet, config, client)
    fronts: dict[str | None, Front] = {None: [(ZERO, ())]}
    previous_stage: StageView | None = None
    for stage in deployment.stages:
        options = [
            a for a in stage.replicas if eligible(fleet.get(a), config) and a in stage.compute_ms
        ]
        new: dict[str | None, Front] = {}
        sends = {
            last: _send(fleet[last], previous_stage.output_bytes, config)
            for last in fronts
            if last is not None and previous_stage is not None
        }
        for agent_id in options:
            agent = fleet[agent_id]
            here = _compute(stage, agent, config)
            moved = _receive(agent, stage.input_bytes, config) + here
            in_process = _compute(stage, agent, config, queued=False)
            front: Front = []
            for last, partials in fronts.items():
                if last is None:  # the first stage: the input comes from the client
                    arrive = here if _at_client(client, agent_id) else moved
                    step = _client_send(deployment, client, agent_id, config, agent.site) + arrive
                elif last == agent_id:
                    step = in_process
                else:
                    step = moved + sends[last] + _bridge(fleet[last].site, agent.site, config)
                step_latency, step_weighted, step_energy = step
                for (latency, weighted, energy), path in partials:
                    _pareto_insert(
                        front,
                        latency + step_latency,
                        weighted + step_weighted,
                        energy + step_energy,
                        (*path, agent_id),
                    )
            new[agent_id] = front
        if not new:
            return []
        fronts = new
        previous_stage = stage
    routes: list[Candidate] = []
    for last, partials in fronts.items():
        if last is None or previous_stage is None:
            continue
        final = _send(fleet[last], previous_stage.output_bytes, config)
        final = final + _bridge(fleet[last].site, "", config)
        routes.extend(Candidate(deployment, path, cost + final) for cost, path in partials)
    return _pareto_filter(routes)


def _pareto_filter(candidates: list[Candidate]) -> list[Candidate]:
    kept: list[Candidate] = []
    for candidate in sorted(candidates, key=lambda c: c.cost):
        if not any(k.cost.dominates(candidate.cost) for k in kept):
            kept.append(candidate)
    return kept


def objective(
    level: EnergyLevel, cost: Cost, best_latency: float, best_energy: float
) -> tuple[float, float]:
    """The key a route is ranked by (lower is better), with a tie-breaker."""
    if level is EnergyLevel.PERFORMANCE:
        return (cost.latency_ms, cost.weighted_energy_j)
    if level is EnergyLevel.SAVER:
        return (cost.weighted_energy_j, cost.latency_ms)
    latency_part = cost.latency_ms / best_latency if best_latency > 0 else 0.0
    energy_part = cost.weighted_energy_j / best_energy if best_energy > 0 else 0.0
    return (latency_part + energy_part, cost.latency_ms)


def client_work_ms(request: PlanRequest) -> float:
    """The client's own work per request, as it said it (0 when it did not, or said
    something that is not a time)."""
    own = request.client_ms
    return own if own is not None and 0.0 <= own < MAX_CLIENT_MS else 0.0


def with_client_work(routes: Sequence[Candidate], request: PlanRequest) -> list[Candidate]:
    """``routes`` with the client's own work in their latency: every figure a request is
    planned, refused or told by is then what the client will measure."""
    own = client_work_ms(request)
    if not own:
        return list(routes)
    extra = Cost(own, 0.0, 0.0)
    return [replace(r, cost=r.cost + extra) for r in routes]


def within_budgets(cost: Cost, request: PlanRequest) -> bool:
    return (request.max_latency_ms is None or cost.latency_ms <= request.max_latency_ms) and (
        request.energy_j is None or cost.energy_j <= request.energy_j
    )


def choose(candidates: Sequence[Candidate], level: EnergyLevel) -> Candidate:
    best_latency = min(c.cost.latency_ms for c in candidates)
    best_energy = min(c.cost.weighted_energy_j for c in candidates)
    return min(candidates, key=lambda c: objective(level, c.cost, best_latency, best_energy))


def plan(
    request: PlanRequest,
    deployments: Sequence[DeploymentView],
    fleet: Mapping[str, AgentView],
    config: PlannerConfig = PlannerConfig(),
    *,
    client: AgentView | None = None,
) -> Plan | PlanRefused:
    """The route for ``request``, or the reason there is none. Pure: no I/O."""
    if request.task is not None:  # a member and variant to choose first
        from splitmq.coordinator.task_choice import plan_task

        return plan_task(request, deployments, fleet, config, client=client)

    def refuse(constraint: str, message: str) -> PlanRefused:
        return PlanRefused(request.request_id, request.model, constraint, message)

    of_model = [
        d
        for d in deployments
        if d.model == request.model and (request.version is None or d.version == request.version)
    ]
    if not of_model:
        return refuse("model", _no_deployment(request, deployments))
    if request.min_fidelity is not None:
        good = [d for d in of_model if d.fidelity >= request.min_fidelity]
        if not good:
            best_variant = max(of_model, key=lambda d: d.fidelity)
            return refuse(
                "min_fidelity",
                f"the most faithful deployed variant of {request.model} "
                f"({best_variant.variant}) has fidelity {best_variant.fidelity:.4f}, below "
                f"the {request.min_fidelity:.4f} asked for: ask for less, or deploy a more "
                f"faithful variant (`splitmq deploy {request.model} --variant float32`)",
            )
        of_model = good
    routes = with_client_work(
        [r for d in of_model for r in pareto_routes(d, fleet, config, client)], request
    )
    if not routes:
        return refuse(*_no_route(of_model, fleet, config))
    feasible = [r for r in routes if within_budgets(r.cost, request)]
    if not feasible:
        return refuse(*_over_budget(request, routes, fleet, config, client))
    best = choose(feasible, request.energy_level)
    parts, final_hop_ms = stage_predictions(best.deployment, best.agents, fleet, config, client)
    return Plan(
        request_id=request.request_id,
        deployment=best.deployment.deployment,
        epoch=best.deployment.epoch,
        model=best.deployment.model,
        version=best.deployment.version,
        variant=best.deployment.variant,
        route=_with_fallbacks(best, fleet, config),
        predicted_latency_ms=best.cost.latency_ms,
        predicted_energy_j=best.cost.energy_j,
        predicted_stages=parts,
        predicted_final_hop_ms=final_hop_ms,
        predicted_client_ms=client_work_ms(request) if request.client_ms is not None else None,
    )


def figure(value: float) -> str:
    """A figure as a person reads it: three significant digits, whole from 100 on
    (0.01, 0.125, 12.3, 1234)."""
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"


def _no_deployment(request: PlanRequest, deployments: Sequence[DeploymentView]) -> str:
    """Why no deployment serves the model (or version) asked for, and what to do."""
    if request.version is not None:
        versions = sorted({d.version for d in deployments if d.model == request.model})
        if versions:
            return (
                f"no deployment of {request.model} version {request.version} (deployed: "
                f"version {', '.join(versions)}): ask for a deployed version, or deploy this "
                f"one (`splitmq deploy {request.model} --version {request.version}`)"
            )
    models = sorted({d.model for d in deployments})
    deployed = f"deployed: {', '.join(models)}" if models else "nothing is deployed"
    return (
        f"no deployment of {request.model} ({deployed}): check the name, or deploy it "
        f"first (`splitmq deploy {request.model}`)"
    )


def _no_route(
    deployments: Sequence[DeploymentView], fleet: Mapping[str, AgentView], config: PlannerConfig
) -> tuple[str, str]:
    """The constraint and the words when some stage has no replica to run it."""
    for d in deployments:
        for s in d.stages:
            if not any(a in fleet and fleet[a].online for a in s.replicas):
                return (
                    PLAN_UNAVAILABLE,
                    f"stage {s.stage} of {d.deployment} has no replica online "
                    f"({', '.join(s.replicas) or 'none'}): the coordinator re-deploys it "
                    "when an agent can take it; ask again shortly",
                )
    for d in deployments:
        for s in d.stages:
            ready = [a for a in s.replicas if eligible(fleet.get(a), config)]
            if not ready:
                return (
                    "battery",
                    f"stage {s.stage} of {d.deployment} has no replica above the battery "
                    f"floor ({config.battery_floor_pct:g}%) or plugged in "
                    f"({', '.join(s.replicas)}): plug one in or charge it, or let the "
                    "coordinator move the stage",
                )
            if not any(a in s.compute_ms for a in ready):
                break
    return (
        PLAN_UNAVAILABLE,
        "a stage's replicas have not reported their speed yet: ask again shortly",
    )


def _over_budget(
    request: PlanRequest,
    routes: Sequence[Candidate],
    fleet: Mapping[str, AgentView],
    config: PlannerConfig,
    client: AgentView | None,
) -> tuple[str, str]:
    """The budget no route meets, with the figures, and what to do."""
    fastest = min(routes, key=lambda r: r.cost.latency_ms)
    thriftiest = min(r.cost.energy_j for r in routes)
    bound, budget = request.max_latency_ms, request.energy_j
    if bound is not None and fastest.cost.latency_ms > bound:
        parts, _ = stage_predictions(fastest.deployment, fastest.agents, fleet, config, client)
        waiting_ms = sum(p.queueing_ms for p in parts) - join_waits_ms(fastest.deployment, config)
        busy = (
            f" ({figure(waiting_ms)} ms of it waiting behind queued requests: the fleet is busy)"
            if waiting_ms > 1e-9
            else ""
        )
        return (
            "max_latency_ms",
            f"the fastest route takes {figure(fastest.cost.latency_ms)} ms{busy}, above the "
            f"{figure(bound)} ms allowed: allow more time, or deploy on faster agents",
        )
    if budget is not None and thriftiest > budget:
        return (
            "energy_j",
            f"the thriftiest route needs {figure(thriftiest)} J, above the budget of "
            f"{figure(budget)} J: allow more energy, or deploy on thriftier agents",
        )
    return (
        "max_latency_ms+energy_j",
        f"no route meets both budgets: those within {figure(bound or 0.0)} ms need more "
        f"than {figure(budget or 0.0)} J, and those within {figure(budget or 0.0)} J take "
        f"more than {figure(bound or 0.0)} ms: relax one of them",
    )


def _with_fallbacks(
    best: Candidate, fleet: Mapping[str, AgentView], config: PlannerConfig
) -> tuple[tuple[str, ...], ...]:
    """Per stage: the chosen agent, then the other eligible replicas, cheapest first."""
    route = []
    for stage, chosen in zip(best.deployment.stages, best.agents, strict=True):
        others = [
            a
            for a in stage.replicas
            if a != chosen and eligible(fleet.get(a), config) and a in stage.compute_ms
        ]
        others.sort(
            key=lambda a: (
                (
                    _compute(stage, fleet[a], config) + _send(fleet[a], stage.output_bytes, config)
                ).latency_ms
            )
        )
        route.append((chosen, *others[: config.max_fallbacks]))
    return tuple(route)
