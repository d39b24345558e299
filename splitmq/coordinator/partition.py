"""The partition optimizer: where to cut one variant into stages, and who hosts each.

``partition(variant, agents, request, config)`` returns a :class:`Partition` -- the cut
points, and for every stage its operator range ``[start_op, end_op)``, its figures and
its replicas (the primary first, then the fallbacks cheapest first) -- or raises
:class:`PartitionRefused` naming the constraint that failed. No I/O: the deployer
gathers the agent views and acts on what this returns.

The cost model is the per-request planner's (:mod:`splitmq.coordinator.planner`), for
cut points ``c_1 < .. < c_(S-1)`` taken from ``variant.cut_points`` and distinct
primaries ``a_0 .. a_(S-1)``:

- a stage's compute time on an agent is ``overhead + flops / speed``, its shard is the
  parameter bytes of its operators, and it fits an agent when shard + input + output
  bytes <= ``mem_free_bytes x memory_headroom``;
- latency = the source's send of the input (a broker hop, plus the source's link
  unless the source is an agent that runs the first stage itself) + for every stage the
  compute time on its primary and the primary's send of its output (link latency +
  bytes / bandwidth + a broker hop); the last stage's output goes back to the requester;
- bottleneck = the slowest stage's compute + send: a pipeline delivers one result per
  bottleneck (``throughput_rps = 1000 / bottleneck_ms``);
- energy and weighted energy as in the planner: active power x compute time + radio
  J/MB x MB received and sent, weighted by ``planner.battery_weight``.

:func:`evaluate` computes these with the planner's own ``route_cost``; the search below
uses the same terms in array form, and the tests check the two agree.

Objectives: ``latency`` minimises latency; ``throughput`` the bottleneck, then latency
among partitions with that bottleneck; ``energy`` the weighted energy. ``max_latency_ms``
is a bound for all three: a partition slower than it is not chosen, and when none is
fast enough the request is refused. ``stages=None`` tries 1 .. ``max_stages`` and keeps
the fewest stages whose objective is within 2% of the best.

Primaries of different stages are distinct agents (one agent hosting two stages would
share one CPU; adjacent stages on one agent are one stage). An agent may be a fallback
of one stage and the primary of another, never twice in one stage.

The search is exact -- the optimum brute force finds, up to rounding -- and each step
drops only what cannot be needed. ``S`` is the most stages tried.

1. Agents offline, unplugged below the battery floor (``planner.eligible``), or with no
   speed or bandwidth are left out.
2. An agent that at least ``S`` other agents beat or tie on every figure the objective
   reads (time per FLOP, link latency, time per byte, room; for energy the
   battery-weighted J per FLOP, per byte and per second) is never needed as a primary:
   a partition using it leaves one of those free, and swapping that one in costs no
   more. Pinned agents are kept.
3. Per candidate stage ``[i, j)`` only its ``S`` cheapest primaries are kept (for energy
   under a latency bound: those that fewer than ``S`` others beat on both energy and
   latency), by the same swap argument.
4. A dynamic programme over the boundaries adds one stage at a time. A partial
   partition is a set of primaries with a cost. Per boundary the programme keeps a
   family of them that stays optimal whatever the later stages use: a new one is kept
   only when some set of at most ``q`` agents (``q`` stages are still to place), none
   of its own, meets every kept one at least as cheap -- a small hitting-set test. With
   ``k`` stages placed such a family has at most ``C(k + q, k)`` members (Bollobas):
   six when ``S`` is 4.

Per objective: latency, and energy without a bound, take one run. Throughput takes two:
the least bottleneck (families ranked by the largest stage cost), then the least
latency with only the stage options within that bottleneck. Under a latency bound
that the unbounded optimum breaks, the families become Pareto sets over (objective,
latency), and a partial partition is dropped when lower bounds on what is still to pay
(the programme without distinct primaries) show it cannot finish within the bound, or
below a partition known to meet it. For energy that partition comes from a short walk
along the lower convex hull of (latency, energy) -- minimising energy + w x latency --
whose multiplier ``w`` also gives a Lagrangian bound: finishing within the latency
``B`` left costs at least ``min(energy + w x latency) - w x B`` more energy. With
``stages=None``, a stage count whose lower bound cannot beat what fewer stages already
achieve is skipped.

``tests/coordinator/test_partition.py`` checks the result against brute force on
random variants and fleets; ``benchmarks/bench_partition.py`` times it.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Container, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Literal, NamedTuple

import numpy as np
from numpy.typing import NDArray

from splitmq.coordinator.planner import (
    MB,
    AgentView,
    DeploymentView,
    PlannerConfig,
    StageView,
    battery_weight,
    eligible,
    hop_ms,
    route_cost,
)
from splitmq.errors import ConfigError, SplitMQError
from splitmq.wire import Objective
from splitmq.wire.manifest import Variant

__all__ = [
    "Constraint",
    "Figures",
    "Objective",
    "Partition",
    "PartitionConfig",
    "PartitionRefused",
    "PartitionRequest",
    "StagePlan",
    "boundaries",
    "describe",
    "evaluate",
    "partition",
]

Constraint = Literal[
    "agents",
    "stages",
    "pin_first",
    "pin_last",
    "max_shard_bytes",
    "memory",
    "replicas",
    "max_latency_ms",
]
# Which refusal says most when every stage count fails: the one that got furthest.
_CONSTRAINT_ORDER: tuple[Constraint, ...] = (
    "agents",
    "stages",
    "max_shard_bytes",
    "memory",
    "replicas",
    "pin_first",
    "pin_last",
    "max_latency_ms",
)
FEWER_STAGES_TOLERANCE = 0.02
_SLACK = 1e-9  # relative: bound tests never drop a partition over a rounding error
_HULL_STEPS = 2  # hull steps before the Pareto search: its incumbent and multiplier

Floats = NDArray[np.float64]
Indices = NDArray[np.intp]
Flags = NDArray[np.bool_]


class PartitionRefused(SplitMQError):
    """No partition of the variant meets the request.

    Attributes:
        constraint: what failed (see :data:`Constraint`).
        message: the figures, and what to change.
        predicted_latency_ms: for ``max_latency_ms``, the best latency there is.
    """

    def __init__(
        self, constraint: Constraint, message: str, *, predicted_latency_ms: float | None = None
    ) -> None:
        self.constraint: Constraint = constraint
        self.message = message
        self.predicted_latency_ms = predicted_latency_ms
        super().__init__(message)


@dataclass(frozen=True)
class PartitionRequest:
    """What the deployer asks for.

    Attributes:
        stages: number of stages; ``None`` tries 1 .. ``max_stages`` and keeps the
            fewest within 2% of the best objective.
        replicas: agents per stage, distinct within it: the primary, then fallbacks.
        objective: ``latency``, ``throughput`` (bottleneck) or ``energy`` (weighted); a
            plain string naming one is taken too.
        pin_first: this agent must be the primary of the first stage.
        pin_last: this agent must be the primary of the last stage.
        max_latency_ms: no partition slower than this; refused when none is faster.
        max_shard_bytes: no stage with more parameter bytes than this.
        max_stages: the most stages ``stages=None`` tries.
        source: where the input comes from; ``None``: a client on the broker's
            loopback, with no link cost. When the source is an agent of the fleet, it
            may run the first stage itself, and then the input crosses no link.
    """

    stages: int | None = None
    replicas: int = 1
    objective: Objective = Objective.LATENCY
    pin_first: str | None = None
    pin_last: str | None = None
    max_latency_ms: float | None = None
    max_shard_bytes: int | None = None
    max_stages: int = 4
    source: AgentView | None = None

    def __post_init__(self) -> None:
        try:  # a plain string is taken too: the CLI and the wire carry the names
            object.__setattr__(self, "objective", Objective(self.objective))
        except ValueError:
            names = ", ".join(Objective)
            raise ConfigError(f"unknown objective {self.objective!r}: use one of {names}") from None
        for name in ("replicas", "max_stages", "stages", "max_shard_bytes"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be at least 1, not {value}")
        if self.max_latency_ms is not None and self.max_latency_ms <= 0:
            raise ConfigError(f"max_latency_ms must be positive, not {self.max_latency_ms}")


@dataclass(frozen=True)
class PartitionConfig:
    """Partition optimizer settings.

    Attributes:
        stage_overhead_ms: fixed cost of running one stage (interpreter call, tensor
            (de)serialization), added to its FLOPs over the agent's speed.
        hop_ms: the cost of one hop through the broker for agents that have not measured
            their own (as ``PlannerConfig.hop_ms``).
        memory_headroom: share of an agent's free memory a stage may take.
        battery_floor_pct: agents below this charge are left out unless plugged.
        low_battery_weight: how much more energy from an empty battery weighs.
    """

    stage_overhead_ms: float = 1.0
    hop_ms: float = PlannerConfig.hop_ms
    memory_headroom: float = 0.8
    battery_floor_pct: float = PlannerConfig.battery_floor_pct
    low_battery_weight: float = PlannerConfig.low_battery_weight

    @property
    def planner(self) -> PlannerConfig:
        """The planner settings with the same meaning, for its cost functions."""
        return PlannerConfig(
            battery_floor_pct=self.battery_floor_pct,
            low_battery_weight=self.low_battery_weight,
            hop_ms=self.hop_ms,
        )


@dataclass(frozen=True)
class StagePlan:
    """One stage of a partition.

    Attributes:
        stage: index in the chain.
        start_op, end_op: its operators, the half-open range ``[start_op, end_op)``.
        flops: their FLOPs.
        param_bytes: their parameter bytes (the shard size, estimated).
        input_bytes, output_bytes: bytes of the tensors entering and leaving it.
        replicas: the agents hosting it: the primary, then fallbacks, cheapest first.
        compute_ms: predicted compute time on each replica, in the same order.
    """

    stage: int
    start_op: int
    end_op: int
    flops: int
    param_bytes: int
    input_bytes: int
    output_bytes: int
    replicas: tuple[str, ...]
    compute_ms: tuple[float, ...]

    @property
    def primary(self) -> str:
        return self.replicas[0]

    def view(self) -> StageView:
        """The stage as the per-request planner sees it (predicted compute times)."""
        return StageView(
            self.stage,
            self.replicas,
            dict(zip(self.replicas, self.compute_ms, strict=True)),
            self.input_bytes,
            self.output_bytes,
        )


@dataclass(frozen=True)
class Partition:
    """Where one variant is cut, who hosts each stage, and what it is predicted to cost.

    Attributes:
        variant: the variant's name.
        objective: what was optimised.
        cut_points: the chosen cut positions (between operator ``p - 1`` and ``p``).
        stages: the stages in chain order.
        predicted_latency_ms: one request end to end, on the primaries.
        bottleneck_ms: the slowest stage's compute + send.
        throughput_rps: results per second when requests are pipelined.
        energy_j: energy per request.
        weighted_energy_j: the same, weighted by the primaries' battery levels.
    """

    variant: str
    objective: Objective
    cut_points: tuple[int, ...]
    stages: tuple[StagePlan, ...]
    predicted_latency_ms: float
    bottleneck_ms: float
    throughput_rps: float
    energy_j: float
    weighted_energy_j: float

    @property
    def primaries(self) -> tuple[str, ...]:
        return tuple(stage.primary for stage in self.stages)


class Figures(NamedTuple):
    """What one partition is predicted to cost (see the module docstring)."""

    latency_ms: float
    bottleneck_ms: float
    energy_j: float
    weighted_energy_j: float


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


# --- The search's inputs, in array form ----------------------------------------------


@dataclass(frozen=True)
class _Intervals:
    """Every candidate stage ``[positions[i], positions[j])``, as ``(m, m)`` arrays.

    Attributes:
        positions: the boundaries (see :func:`boundaries`), ``m`` of them.
        flops_before: FLOPs of the operators before each boundary.
        params_before: parameter bytes of the operators before each boundary.
        frontier: bytes crossing each boundary (model inputs at 0, outputs at the end).
        flops, param_bytes: of each candidate stage.
        need_bytes: shard + input + output bytes: the memory a host needs.
        under_shard_limit: ``i < j`` and the shard within ``max_shard_bytes``.
    """

    positions: tuple[int, ...]
    flops_before: tuple[int, ...]
    params_before: tuple[int, ...]
    frontier: tuple[int, ...]
    flops: Floats
    param_bytes: Floats
    need_bytes: Floats
    under_shard_limit: Flags

    @classmethod
    def of(cls, variant: Variant, max_shard_bytes: int | None) -> _Intervals:
        positions = boundaries(variant)
        flops = list(itertools.accumulate((op.flops for op in variant.operators), initial=0))
        params = list(itertools.accumulate((op.param_bytes for op in variant.operators), initial=0))
        flops_before = tuple(flops[p] for p in positions)
        params_before = tuple(params[p] for p in positions)
        frontier = tuple(_frontier_bytes(variant, p) for p in positions)
        f = np.asarray(flops_before, dtype=np.float64)
        p = np.asarray(params_before, dtype=np.float64)
        edge = np.asarray(frontier, dtype=np.float64)
        param_bytes = p[None, :] - p[:, None]
        ordered = np.triu(np.ones((len(positions),) * 2, dtype=np.bool_), k=1)
        limit = np.inf if max_shard_bytes is None else float(max_shard_bytes)
        return cls(
            positions=positions,
            flops_before=flops_before,
            params_before=params_before,
            frontier=frontier,
            flops=f[None, :] - f[:, None],
            param_bytes=param_bytes,
            need_bytes=param_bytes + edge[:, None] + edge[None, :],
            under_shard_limit=ordered & (param_bytes <= limit),
        )

    @property
    def count(self) -> int:
        return len(self.positions)

    def input_bytes(self) -> Floats:
        """Bytes entering a stage that starts at each boundary, as a column."""
        return np.asarray(self.frontier, dtype=np.float64)[:, None, None]

    def output_bytes(self) -> Floats:
        """Bytes leaving a stage that ends at each boundary, as a row."""
        return np.asarray(self.frontier, dtype=np.float64)[None, :, None]


@dataclass(frozen=True)
class _Fleet:
    """The eligible agents' figures as arrays, one entry per agent."""

    agents: tuple[AgentView, ...]
    ms_per_flop: Floats
    link_ms: Floats  # the link's latency and the agent's broker hop
    ms_per_byte: Floats
    capacity_bytes: Floats  # inf when the agent's free memory is unknown
    weight: Floats
    active_w: Floats
    radio_j_per_byte: Floats

    @classmethod
    def of(cls, agents: Sequence[AgentView], config: PartitionConfig) -> _Fleet:
        def column(values: list[float]) -> Floats:
            return np.asarray(values, dtype=np.float64).reshape(-1)

        planner = config.planner
        return cls(
            agents=tuple(agents),
            ms_per_flop=column([a.compute_ms(1) for a in agents]),
            link_ms=column([a.send_ms(0) + hop_ms(a, planner) for a in agents]),
            # send_ms is affine in the bytes: its slope, from the function itself.
            ms_per_byte=column([(a.send_ms(MB) - a.send_ms(0)) / MB for a in agents]),
            capacity_bytes=column(
                [
                    np.inf
                    if a.mem_free_bytes is None
                    else a.mem_free_bytes * config.memory_headroom
                    for a in agents
                ]
            ),
            weight=column([battery_weight(a, planner) for a in agents]),
            active_w=column([a.active_w for a in agents]),
            radio_j_per_byte=column([a.radio_j_per_mb / MB for a in agents]),
        )

    def index(self, agent_id: str | None) -> int | None:
        for i, agent in enumerate(self.agents):
            if agent.agent_id == agent_id:
                return i
        return None

    def holders(self, need_bytes: Floats) -> NDArray[np.int64]:
        """How many agents have room for each entry of ``need_bytes``."""
        ordered = np.sort(self.capacity_bytes)
        return len(ordered) - np.searchsorted(ordered, need_bytes, side="left")


def _latency_ms(
    fleet: _Fleet,
    members: Indices,
    flops: Floats | float,
    output_bytes: Floats | float,
    config: PartitionConfig,
) -> Floats:
    """Compute + send of the output (its hop included), for ``members`` (the last axis)."""
    return (
        flops * fleet.ms_per_flop[members]
        + config.stage_overhead_ms
        + fleet.link_ms[members]
        + output_bytes * fleet.ms_per_byte[members]
    )


def _energy_j(
    fleet: _Fleet,
    members: Indices,
    flops: Floats | float,
    moved_bytes: Floats | float,
    config: PartitionConfig,
) -> Floats:
    """Battery-weighted energy of computing and of receiving and sending ``moved_bytes``."""
    compute_ms = flops * fleet.ms_per_flop[members] + config.stage_overhead_ms
    return fleet.weight[members] * (
        fleet.active_w[members] * compute_ms / 1e3 + fleet.radio_j_per_byte[members] * moved_bytes
    )


def _undominated(attributes: Floats, depth: int) -> Flags:
    """Rows that fewer than ``depth`` other rows beat or tie on every column.

    Lower is better; of identical rows the first listed counts as the better one, so
    the relation is a strict order and a chain of swaps ends.
    """
    count = len(attributes)
    if count <= depth:
        return np.ones(count, dtype=np.bool_)
    no_worse = (attributes[:, None, :] <= attributes[None, :, :]).all(axis=-1)
    earlier = np.arange(count)[:, None] < np.arange(count)[None, :]
    beats = no_worse & (~no_worse.T | earlier)
    result: Flags = beats.sum(axis=0) < depth
    return result


class _Options(NamedTuple):
    """Candidate primaries of every stage ``[i, j)``, best first, ``(m, m, width)``."""

    agent: Indices  # fleet index; -1: none
    latency_ms: Floats  # stage latency (compute + send + hop); inf: none
    energy_j: Floats  # weighted stage energy; inf: none

    def ranked(self, latency_weight: float, depth: int) -> _Options:
        """The ``depth`` best options by energy + ``latency_weight`` x latency (> 0)."""
        chosen, usable = _cheapest(self.energy_j + latency_weight * self.latency_ms, depth)
        return _Options(
            np.where(usable, np.take_along_axis(self.agent, chosen, -1), -1),
            np.where(usable, np.take_along_axis(self.latency_ms, chosen, -1), np.inf),
            np.where(usable, np.take_along_axis(self.energy_j, chosen, -1), np.inf),
        )

    def within(self, latency_ms: float) -> _Options:
        """Only the options whose stage latency is at most ``latency_ms``."""
        keep = self.latency_ms <= latency_ms
        return _Options(
            np.where(keep, self.agent, -1),
            np.where(keep, self.latency_ms, np.inf),
            np.where(keep, self.energy_j, np.inf),
        )


OptionKind = Literal["latency", "energy", "energy+latency"]


class _Labels(NamedTuple):
    """Partial partitions, one per row: ``k`` stages from boundary 0 to ``end``."""

    end: Indices  # (n,)
    ends: Indices  # (n, k): the boundary each stage ends at
    agents: Indices  # (n, k): each stage's primary (fleet index)
    latency_ms: Floats  # (n,): sum of stage latencies
    energy_j: Floats  # (n,): sum of weighted stage energies
    bottleneck_ms: Floats  # (n,): largest stage latency

    @classmethod
    def root(cls) -> _Labels:
        empty = np.zeros((1, 0), dtype=np.intp)
        zero = np.zeros(1)
        return cls(np.zeros(1, dtype=np.intp), empty, empty, zero, zero, zero)

    def take(self, rows: Indices) -> _Labels:
        return _Labels(
            self.end[rows],
            self.ends[rows],
            self.agents[rows],
            self.latency_ms[rows],
            self.energy_j[rows],
            self.bottleneck_ms[rows],
        )


class _Bounds(NamedTuple):
    """Per stages remaining and boundary, lower bounds on what is still to pay."""

    latency: list[Floats]
    key: list[Floats]
    lagrangian: list[Floats]  # energy + multiplier x latency


class _Found(NamedTuple):
    """A complete partition as the search sees it: boundary indices and fleet indices."""

    ends: tuple[int, ...]  # the boundary each stage ends at (the last: the end)
    agents: tuple[int, ...]
    latency_ms: float  # without the source's send
    energy_j: float
    bottleneck_ms: float


Key = Literal["latency_ms", "energy_j", "bottleneck_ms"]


class _Goal(NamedTuple):
    """What one run of the programme minimises.

    Attributes:
        key: the cost minimised.
        latency_weight: rank by ``key + latency_weight x latency`` instead (energy only).
        latency_bound_ms: only partitions within it count; the families are then Pareto
            sets over (key, latency), and partial partitions that cannot finish within
            it are dropped.
        key_bound: partial partitions that cannot finish at or below it are dropped.
        multiplier: a Lagrange multiplier of the latency bound (J/ms), for a stronger
            lower bound on the energy still to pay.
    """

    key: Key
    latency_weight: float = 0.0
    latency_bound_ms: float | None = None
    key_bound: float | None = None
    multiplier: float = 0.0

    def values(self, labels: _Labels) -> Floats:
        values: Floats = getattr(labels, self.key)
        return values + self.latency_weight * labels.latency_ms if self.latency_weight else values


# --- The search ----------------------------------------------------------------------


def _can_meet(
    families: Sequence[Sequence[int]],
    banned: Container[int],
    room: int,
    chosen: frozenset[int] = frozenset(),
) -> bool:
    """Whether at most ``room`` more agents, none ``banned``, meet every one of ``families``."""
    for members in families:
        if chosen.isdisjoint(members):
            if room == 0:
                return False
            return any(
                _can_meet(families, banned, room - 1, chosen | {agent})
                for agent in members
                if agent not in banned
            )
    return True


def _family(
    candidates: Iterable[tuple[int, list[int], float]], room: int, pareto: bool
) -> list[int]:
    """Of ``candidates`` (row, primaries, latency; best first), the rows that some
    future of at most ``room`` agents needs.

    A row is kept when some set of at most ``room`` agents, none of its own, meets every
    kept row at least as good (in Pareto families: as good on latency too): then it is
    the best one that future can extend.
    """
    kept: list[int] = []
    kept_sets: list[list[int]] = []
    kept_latency: list[float] = []
    for row, members, latency_ms in candidates:
        if not pareto:
            if _can_meet(kept_sets, members, room):
                kept.append(row)
                kept_sets.append(members)
                if not _can_meet(kept_sets, (), room):
                    break  # no future avoids them all: the family is complete
            continue
        better = bisect.bisect_right(kept_latency, latency_ms)
        if _can_meet(kept_sets[:better], members, room):
            kept.append(row)
            kept_sets.insert(better, members)
            kept_latency.insert(better, latency_ms)
    return kept


def _rows(
    rows: Indices, labels: _Labels, chunk: int = 64
) -> Iterator[tuple[int, list[int], float]]:
    """``(row, primaries, latency)`` of ``labels`` for ``rows``, converted in chunks: a
    family is often complete after its first few."""
    for first in range(0, len(rows), chunk):
        part = rows[first : first + chunk]
        yield from zip(
            part.tolist(),
            labels.agents[part].tolist(),
            labels.latency_ms[part].tolist(),
            strict=True,
        )


class _Search:
    """The programme for one variant, fleet and request; options built once, lazily."""

    def __init__(
        self,
        intervals: _Intervals,
        fleet: _Fleet,
        request: PartitionRequest,
        config: PartitionConfig,
        depth: int,
        *,
        source: AgentView | None = None,
        source_runs_first: bool = False,
    ) -> None:
        """``source``: where the input comes from (the request's); ``source_runs_first``:
        the first stage is pinned to that agent itself, so the input reaches it over no
        link and no radio."""
        self.intervals = intervals
        self.fleet = fleet
        self.request = request
        self.config = config
        self.depth = depth
        self.pin_first = fleet.index(request.pin_first)
        self.pin_last = fleet.index(request.pin_last)
        self.source_runs_first = source_runs_first
        input_bytes = intervals.frontier[0]
        link_ms = source.send_ms(input_bytes) if source and not source_runs_first else 0.0
        self.source_ms = link_ms + hop_ms(source, config.planner)
        self._options: dict[OptionKind, _Options] = {}

    @cached_property
    def allowed(self) -> Flags:
        """Candidate stages under the shard limit with ``replicas`` agents that fit them."""
        holders = self.fleet.holders(self.intervals.need_bytes)
        return self.intervals.under_shard_limit & (holders >= self.request.replicas)

    @cached_property
    def useful_capacity(self) -> Floats:
        """Each agent's capacity, capped at the largest need: more room changes nothing."""
        needs = self.intervals.need_bytes[self.allowed]
        largest = float(needs.max()) if needs.size else 0.0
        return np.minimum(self.fleet.capacity_bytes, largest)

    def attributes(self, kind: OptionKind) -> Floats:
        """Per agent, what the stage costs of ``kind`` grow with (lower is better)."""
        fleet = self.fleet
        columns = []
        if kind != "energy":
            columns += [fleet.ms_per_flop, fleet.link_ms, fleet.ms_per_byte]
        if kind != "latency":
            per_second = fleet.weight * fleet.active_w
            columns += [per_second * fleet.ms_per_flop, fleet.weight * fleet.radio_j_per_byte]
            if self.config.stage_overhead_ms > 0:
                columns.append(per_second)
        columns.append(-self.useful_capacity)
        return np.stack(columns, axis=1)

    def members(self, kind: OptionKind) -> Indices:
        """The agents that may be needed as primaries (step 2), pinned ones last."""
        pinned = sorted({i for i in (self.pin_first, self.pin_last) if i is not None})
        free = np.setdiff1d(np.arange(len(self.fleet.agents)), pinned)
        keep = _undominated(self.attributes(kind)[free], self.depth)
        return np.concatenate([free[keep], np.asarray(pinned, dtype=np.intp)]).astype(np.intp)

    def roles(self, members: Indices) -> Flags:
        """``(m, m, len(members))``: who may host which stage under the pins."""
        count = self.intervals.count
        first = np.zeros((count, count, 1), dtype=np.bool_)
        first[0] = True
        last = np.zeros((count, count, 1), dtype=np.bool_)
        last[:, count - 1] = True
        ok = np.ones((count, count, len(members)), dtype=np.bool_)
        if self.pin_first is not None:
            ok &= first == (members == self.pin_first)
        if self.pin_last is not None:
            ok &= last == (members == self.pin_last)
        return ok

    def options(self, kind: OptionKind) -> _Options:
        """The candidate primaries of every stage (step 3), built on first use."""
        if kind not in self._options:
            self._options[kind] = self._build_options(kind)
        return self._options[kind]

    def _build_options(self, kind: OptionKind) -> _Options:
        iv = self.intervals
        members = self.members(kind)
        flops = iv.flops[:, :, None]
        latency = _latency_ms(self.fleet, members, flops, iv.output_bytes(), self.config)
        moved = iv.input_bytes() + iv.output_bytes()
        if self.source_runs_first:  # the first stage's input is already on its agent
            moved = moved.copy()
            moved[0] -= iv.frontier[0]
        energy = _energy_j(self.fleet, members, flops, moved, self.config)
        feasible = (
            self.allowed[:, :, None]
            & (iv.need_bytes[:, :, None] <= self.fleet.capacity_bytes[members])
            & self.roles(members)
        )
        latency = np.where(feasible, latency, np.inf)
        energy = np.where(feasible, energy, np.inf)
        if kind == "energy+latency":
            chosen, usable = _pareto_layer(energy, latency, self.depth)
        else:
            chosen, usable = _cheapest(latency if kind == "latency" else energy, self.depth)
        return _Options(
            np.where(usable, members[chosen], -1),
            np.where(usable, np.take_along_axis(latency, chosen, -1), np.inf),
            np.where(usable, np.take_along_axis(energy, chosen, -1), np.inf),
        )

    def run(self, stages: int, options: _Options, goal: _Goal) -> _Labels:
        """Every partial partition worth extending, stage by stage; the complete ones."""
        labels = _Labels.root()
        bounds = self._lower_bounds(options, goal, stages)
        for placed in range(1, stages + 1):
            remaining = stages - placed
            candidates = _extend(labels, options, self.intervals.count, remaining)
            if bounds is not None:
                candidates = candidates.take(self._hopeful(candidates, goal, bounds, remaining))
            kept = _select(candidates, goal, remaining, len(self.fleet.agents))
            labels = candidates.take(kept)
        return labels

    def _lower_bounds(self, options: _Options, goal: _Goal, stages: int) -> _Bounds | None:
        """Per stages remaining and boundary: the least still to pay, ignoring that the
        primaries must differ. ``None`` when the goal sets no bound to test them on."""
        if goal.latency_bound_ms is None and goal.key_bound is None:
            return None
        latency = _relaxed(options.latency_ms.min(axis=-1), stages)
        if goal.key == "energy_j":
            key = _relaxed(options.energy_j.min(axis=-1), stages)
        elif goal.key == "bottleneck_ms":
            key = _relaxed(options.latency_ms.min(axis=-1), stages, bottleneck=True)
        else:
            key = latency
        lagrangian = key
        if goal.multiplier:
            weighted = options.energy_j + goal.multiplier * options.latency_ms
            lagrangian = _relaxed(weighted.min(axis=-1), stages)
        return _Bounds(latency, key, lagrangian)

    def _hopeful(self, labels: _Labels, goal: _Goal, bounds: _Bounds, remaining: int) -> Indices:
        """The rows of ``labels`` that can still finish within the goal's bounds.

        With a multiplier ``w`` and ``B`` the latency left: every way to finish within
        ``B`` costs at least ``min(energy + w x latency) - w x B`` more energy.
        """
        keep = np.ones(len(labels.end), dtype=np.bool_)
        if goal.latency_bound_ms is not None:
            left_ms = goal.latency_bound_ms - self.source_ms - labels.latency_ms
            keep &= bounds.latency[remaining][labels.end] <= left_ms + _slack(left_ms)
        if goal.key_bound is not None:
            limit = goal.key_bound + _slack(goal.key_bound)
            rest = bounds.key[remaining][labels.end]
            own: Floats = getattr(labels, goal.key)
            least = np.maximum(own, rest) if goal.key == "bottleneck_ms" else own + rest
            keep &= least <= limit
            if goal.multiplier and goal.latency_bound_ms is not None:
                rest = bounds.lagrangian[remaining][labels.end] - goal.multiplier * left_ms
                keep &= labels.energy_j + rest <= limit
        return np.flatnonzero(keep)

    def best(self, complete: _Labels, goal: _Goal) -> int | None:
        """The complete partition the goal prefers, as a row of ``complete``."""
        keep = np.ones(len(complete.end), dtype=np.bool_)
        if goal.latency_bound_ms is not None:
            keep &= self.source_ms + complete.latency_ms <= goal.latency_bound_ms
        rows = np.flatnonzero(keep)
        if not rows.size:
            return None
        order = np.lexsort((complete.latency_ms[rows], goal.values(complete)[rows]))
        return int(rows[order[0]])

    def solve(self, stages: int) -> _Found:
        """The best ``stages``-stage partition for the request's objective."""
        objective = self.request.objective
        bound = self.request.max_latency_ms
        if objective is Objective.LATENCY:
            return self._within_gate(
                self.find(stages, self.options("latency"), _Goal("latency_ms"))
            )
        if objective is Objective.THROUGHPUT:
            steady = self.find(stages, self.options("latency"), _Goal("bottleneck_ms"))
            options = self.options("latency").within(steady.bottleneck_ms)
            found = self.find(stages, options, _Goal("latency_ms"))
        else:
            found = self.find(stages, self.options("energy"), _Goal("energy_j"))
        if bound is None or self.source_ms + found.latency_ms <= bound:
            return found
        # The unbounded optimum is too slow: search the Pareto families, cut down by the
        # fastest partition (which is within the bound, or nothing is).
        fastest = self._within_gate(self.find(stages, self.options("latency"), _Goal("latency_ms")))
        if objective is Objective.THROUGHPUT:
            goal = _Goal("bottleneck_ms", latency_bound_ms=bound, key_bound=fastest.bottleneck_ms)
            return self.find(stages, self.options("latency"), goal)
        return self._thriftiest_within(stages, bound, found, fastest)

    def _thriftiest_within(
        self, stages: int, bound: float, thriftiest: _Found, fastest: _Found
    ) -> _Found:
        """The least weighted energy within ``bound``, given the thriftiest partition
        (too slow) and the fastest (within it).

        First a walk along the lower convex hull of (latency, energy): each step
        minimises energy + w x latency, ``w`` the slope between the best partitions found
        either side of the bound, until no partition lies below that line. The best one
        within the bound and the last ``w`` then cut the Pareto programme down.
        """
        options = self.options("energy+latency")
        budget_ms = bound - self.source_ms
        slow, quick = thriftiest, fastest
        for step in itertools.count():
            # Whatever meets the bound costs more than ``slow`` (the thriftiest, or the
            # least energy + w x latency for some w > 0 while slower than the bound).
            if quick.energy_j <= slow.energy_j:
                return quick
            weight = (quick.energy_j - slow.energy_j) / (slow.latency_ms - quick.latency_ms)
            if step == _HULL_STEPS:
                break
            found = self.find(stages, options.ranked(weight, self.depth), _Goal("energy_j", weight))
            line = quick.energy_j + weight * quick.latency_ms
            if found.energy_j + weight * found.latency_ms >= line - _slack(line):
                break
            if found.latency_ms <= budget_ms:
                quick = found
            else:
                slow = found
        goal = _Goal(
            "energy_j", latency_bound_ms=bound, key_bound=quick.energy_j, multiplier=weight
        )
        return self.find(stages, options, goal)

    def least(self, stages: int) -> float:
        """A lower bound on the objective with ``stages`` stages: the programme without
        the rule that primaries differ, over the same options (no bound either)."""
        if self.request.objective is Objective.ENERGY:
            energy = self.options("energy").energy_j.min(axis=-1)
            return float(_relaxed(energy, stages)[stages][0])
        latency = self.options("latency").latency_ms.min(axis=-1)
        if self.request.objective is Objective.THROUGHPUT:
            return float(_relaxed(latency, stages, bottleneck=True)[stages][0])
        return self.source_ms + float(_relaxed(latency, stages)[stages][0])

    def find(self, stages: int, options: _Options, goal: _Goal) -> _Found:
        complete = self.run(stages, options, goal)
        row = self.best(complete, goal)
        if row is None:
            raise self.diagnose(stages)
        return _Found(
            tuple(complete.ends[row].tolist()),
            tuple(complete.agents[row].tolist()),
            float(complete.latency_ms[row]),
            float(complete.energy_j[row]),
            float(complete.bottleneck_ms[row]),
        )

    def _within_gate(self, found: _Found) -> _Found:
        bound = self.request.max_latency_ms
        latency = self.source_ms + found.latency_ms
        if bound is not None and latency > bound:
            stages = len(found.agents)
            names = ", ".join(self.fleet.agents[a].agent_id for a in found.agents)
            raise PartitionRefused(
                "max_latency_ms",
                f"best predicted latency {latency:.1f} ms exceeds the gate of {bound:g} ms "
                f"({stages} stage{'s' if stages > 1 else ''}: {names}): raise "
                "max_latency_ms, or add faster agents or links",
                predicted_latency_ms=latency,
            )
        return found

    def diagnose(self, stages: int) -> PartitionRefused:
        """Why no ``stages``-stage partition exists: the first constraint that fails."""
        iv = self.intervals
        plural = f"{stages} stage{'s' if stages > 1 else ''}"
        shard = np.where(iv.under_shard_limit, iv.param_bytes, np.inf)
        if not np.isfinite(_minimax(shard, stages)):
            ordered = np.where(
                np.triu(np.ones_like(shard, dtype=np.bool_), 1), iv.param_bytes, np.inf
            )
            smallest = _minimax(ordered, stages)
            return PartitionRefused(
                "max_shard_bytes",
                f"with {plural} the largest shard is at least {smallest / MB:.2f} MB, above "
                f"max_shard_bytes ({(self.request.max_shard_bytes or 0) / MB:.2f} MB): allow "
                "more stages or larger shards",
            )
        roomiest = float(self.fleet.capacity_bytes.max())
        need = np.where(iv.under_shard_limit, iv.need_bytes, np.inf)
        largest = _minimax(need, stages)
        if largest > roomiest:
            return PartitionRefused(
                "memory",
                f"with {plural} some stage needs at least {largest / MB:.2f} MB (shard and "
                f"tensors), but the roomiest agent offers {roomiest / MB:.2f} MB "
                f"(free memory x {self.config.memory_headroom:g}): use more stages, a "
                "smaller variant, or agents with more memory",
            )
        holders = self.fleet.holders(iv.need_bytes).astype(np.float64)
        fewest = -_minimax(np.where(need <= roomiest, -holders, np.inf), stages)
        if fewest < self.request.replicas:
            return PartitionRefused(
                "replicas",
                f"with {plural} some stage has room on only {fewest:.0f} eligible "
                f"agent{'s' if fewest != 1 else ''}, fewer than the {self.request.replicas} "
                "replicas asked for: ask for fewer replicas, or add agents with more memory",
            )
        pins: tuple[tuple[Constraint, int | None], ...] = (
            ("pin_first", self.pin_first),
            ("pin_last", self.pin_last),
        )
        for constraint, pin in pins:
            if pin is not None and not self._pin_fits(
                pin, first=constraint == "pin_first", stages=stages
            ):
                agent = self.fleet.agents[pin]
                return PartitionRefused(
                    constraint,
                    f"{constraint} agent {agent.agent_id} cannot hold the "
                    f"{'first' if constraint == 'pin_first' else 'last'} stage of any "
                    f"{plural} partition ({self.fleet.capacity_bytes[pin] / MB:.2f} MB of room): "
                    "pin another agent or free memory on it",
                )
        return PartitionRefused(
            "memory",
            f"no {plural} partition gives every stage its own primary with room for it: "
            "too few agents have the memory; use fewer stages or add agents",
        )

    def replicas(self, start: int, end: int, primary: int) -> list[int]:
        """The primary of stage ``[start, end)``, then the fallbacks: other agents with
        room for it, cheapest first by the objective (ties: by id)."""
        if self.request.replicas == 1:
            return [primary]
        iv = self.intervals
        fleet = self.fleet
        others = np.flatnonzero(fleet.capacity_bytes >= iv.need_bytes[start, end])
        others = others[others != primary]
        flops = iv.flops[start, end]
        latency = _latency_ms(fleet, others, flops, iv.frontier[end], self.config).tolist()
        energy = _energy_j(
            fleet, others, flops, iv.frontier[start] + iv.frontier[end], self.config
        ).tolist()
        first = energy if self.request.objective is Objective.ENERGY else latency
        order = sorted(
            range(len(others)),
            key=lambda k: (first[k], latency[k], fleet.agents[others[k]].agent_id),
        )
        return [primary, *(int(others[k]) for k in order[: self.request.replicas - 1])]

    def _pin_fits(self, pin: int, *, first: bool, stages: int) -> bool:
        hosts = self.allowed.copy()
        fits = self.intervals.need_bytes <= self.fleet.capacity_bytes[pin]
        if first:
            hosts[0] &= fits[0]
        else:
            hosts[:, -1] &= fits[:, -1]
        return bool(np.isfinite(_minimax(np.where(hosts, 0.0, np.inf), stages)))


def _slack(value: Floats | float) -> Floats | float:
    """Room for rounding errors when testing against ``value``."""
    return np.abs(value) * _SLACK + 1e-12


def _cheapest(cost: Floats, depth: int) -> tuple[Indices, Flags]:
    """Per stage, the ``depth`` cheapest agents, cheapest first (of equals, any), and
    which of them can host it at all."""
    width = min(depth, cost.shape[-1])
    if width < cost.shape[-1]:
        chosen = np.argpartition(cost, width - 1, axis=-1)[..., :width]
    else:
        chosen = np.broadcast_to(np.arange(width), cost.shape).copy()
    order = np.argsort(np.take_along_axis(cost, chosen, -1), axis=-1, kind="stable")
    chosen = np.take_along_axis(chosen, order, -1)
    return chosen, np.isfinite(np.take_along_axis(cost, chosen, -1))


def _pareto_layer(first: Floats, second: Floats, depth: int) -> tuple[Indices, Flags]:
    """Per stage, the agents that fewer than ``depth`` others beat or tie on both costs,
    cheapest ``first`` first, padded to a common width (``False`` in the flags).

    Sorted by (first, second, index), an agent is beaten by exactly the earlier ones
    whose second cost is no higher: it stays when the ``depth``-th lowest second cost
    before it is higher than its own.
    """
    shape = first.shape
    count = shape[-1]
    order = np.lexsort((second, first), axis=-1).reshape(-1, count)
    seconds = np.take_along_axis(second.reshape(-1, count), order, 1)
    lowest = np.full((len(seconds), depth), np.inf)
    stays = np.zeros(seconds.shape, dtype=np.bool_)
    for column in range(count):
        value = seconds[:, column]
        stays[:, column] = (lowest[:, -1] > value) & np.isfinite(value)
        lowest = np.sort(np.concatenate([lowest, value[:, None]], axis=1), axis=1)[:, :depth]
    width = max(1, int(stays.sum(axis=1).max()))
    rank = np.argsort(~stays, axis=1, kind="stable")[:, :width]  # staying ones first
    chosen = np.take_along_axis(order, rank, 1).reshape(*shape[:-1], width)
    usable = np.take_along_axis(stays, rank, 1).reshape(*shape[:-1], width)
    return chosen, usable


def _minimax(cost: Floats, stages: int) -> float:
    """The least, over ``stages``-stage paths from the first boundary to the last, of the
    largest ``cost[i, j]`` of their stages (``inf`` marks a stage not allowed)."""
    level = np.full(len(cost), np.inf)
    level[0] = -np.inf
    for _ in range(stages):
        level = np.maximum(level[:, None], cost).min(axis=0)
    return float(level[-1])


def _relaxed(stage_cost: Floats, stages: int, *, bottleneck: bool = False) -> list[Floats]:
    """Per stages remaining ``r`` and boundary ``i``: the least cost of ``r`` stages from
    ``i`` to the end, ignoring that primaries must differ (a lower bound)."""
    count = len(stage_cost)
    level = np.full(count, np.inf)
    level[-1] = -np.inf if bottleneck else 0.0
    levels = [level]
    for _ in range(stages):
        joined = np.maximum(stage_cost, level[None, :]) if bottleneck else stage_cost + level
        level = joined.min(axis=1)
        levels.append(level)
    return levels


def _extend(labels: _Labels, options: _Options, count: int, remaining: int) -> _Labels:
    """Every way to add one stage to every label, leaving room for ``remaining`` more."""
    agent = options.agent[labels.end]  # (n, m, width): options of [end, j) for every j
    valid = agent >= 0
    if labels.agents.shape[1]:
        valid &= ~(labels.agents[:, :, None, None] == agent[:, None]).any(axis=1)
    if remaining:
        valid[:, count - remaining :] = False
    else:
        valid[:, : count - 1] = False
    row, end, slot = np.nonzero(valid)
    start = labels.end[row]
    stage_latency = options.latency_ms[start, end, slot]
    return _Labels(
        end=end.astype(np.intp),
        ends=np.concatenate([labels.ends[row], end[:, None]], axis=1).astype(np.intp),
        agents=np.concatenate([labels.agents[row], agent[row, end, slot][:, None]], axis=1),
        latency_ms=labels.latency_ms[row] + stage_latency,
        energy_j=labels.energy_j[row] + options.energy_j[start, end, slot],
        bottleneck_ms=np.maximum(labels.bottleneck_ms[row], stage_latency),
    )


def _cheapest_per_set(candidates: _Labels, order: Indices, agents: int) -> Indices:
    """``order`` without the rows whose boundary and set of primaries an earlier row has
    (in a family ranked by one cost they are never needed). ``agents``: the fleet size."""
    depth = candidates.agents.shape[1]
    if (int(candidates.end.max(initial=0)) + 1) * agents**depth >= 2**62:
        return order  # the sets do not fit one integer code: keep them all
    code = candidates.end[order].astype(np.int64)
    for column in np.sort(candidates.agents[order], axis=1).T:
        code = code * agents + column
    _, first = np.unique(code, return_index=True)
    result: Indices = order[np.sort(first)]
    return result


def _select(candidates: _Labels, goal: _Goal, room: int, agents: int) -> Indices:
    """Per boundary, the family worth extending (step 4), as rows of ``candidates``."""
    key = goal.values(candidates)
    pareto = goal.latency_bound_ms is not None
    if pareto:
        order = np.lexsort((candidates.latency_ms, key, candidates.end))
    else:
        order = _cheapest_per_set(candidates, np.lexsort((key, candidates.end)), agents)
    ends = candidates.end[order]
    starts = np.flatnonzero(np.diff(ends, prepend=-1)).tolist()
    kept: list[int] = []
    for first, stop in itertools.pairwise([*starts, len(order)]):
        kept += _family(_rows(order[first:stop], candidates), room, pareto)
    return np.asarray(kept, dtype=np.intp)


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


def describe(partition: Partition) -> str:
    """A table of ``partition`` for people: one line per stage, then the totals."""
    header = ("stage", "ops", "MFLOPs", "shard MB", "agents", "compute ms", "out KB")
    rows = [header] + [
        (
            str(s.stage),
            f"[{s.start_op}, {s.end_op})",
            f"{s.flops / 1e6:.1f}",
            f"{s.param_bytes / MB:.2f}",
            ", ".join(s.replicas),
            " / ".join(f"{ms:.1f}" for ms in s.compute_ms),
            f"{s.output_bytes / 1e3:.1f}",
        )
        for s in partition.stages
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    count = len(partition.stages)
    lines.append(
        f"{partition.variant}, {count} stage{'s' if count > 1 else ''}, objective "
        f"{partition.objective}: {partition.predicted_latency_ms:.1f} ms per request, "
        f"bottleneck {partition.bottleneck_ms:.1f} ms ({partition.throughput_rps:.1f}/s), "
        f"{partition.energy_j:.3f} J ({partition.weighted_energy_j:.3f} J weighted)"
    )
    return "\n".join(lines)


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


def _usable(agents: Sequence[AgentView], config: PartitionConfig) -> list[AgentView]:
    """The agents that may host a stage: eligible, with a speed and a link."""
    seen: set[str] = set()
    for agent in agents:
        if agent.agent_id in seen:
            raise ConfigError(f"agent {agent.agent_id} is listed twice: agent ids must be unique")
        seen.add(agent.agent_id)
    return [
        a
        for a in agents
        if eligible(a, config.planner) and a.speed_gflops > 0 and a.bandwidth_mbps > 0
    ]


def _check_pins(
    request: PartitionRequest,
    agents: Sequence[AgentView],
    usable: Sequence[AgentView],
    config: PartitionConfig,
) -> None:
    known = {a.agent_id for a in agents}
    ready = {a.agent_id for a in usable}
    pins: tuple[tuple[Constraint, str | None], ...] = (
        ("pin_first", request.pin_first),
        ("pin_last", request.pin_last),
    )
    for constraint, pin in pins:
        if pin is None or pin in ready:
            continue
        why = (
            "is not in the fleet"
            if pin not in known
            else "is offline, unplugged below the battery floor "
            f"({config.battery_floor_pct:g}%), or reports no speed or bandwidth"
        )
        raise PartitionRefused(constraint, f"{constraint} agent {pin} {why}: pin another agent")
    same = request.pin_first is not None and request.pin_first == request.pin_last
    if same and request.stages is not None and request.stages > 1:
        raise PartitionRefused(
            "pin_last",
            f"{request.pin_first} is pinned first and last, but the {request.stages} "
            "stages need distinct primaries: pin two agents, or ask for 1 stage",
        )


def _stage_counts(
    variant: Variant, intervals: _Intervals, request: PartitionRequest, usable: int
) -> range:
    """The stage counts to try, or the reason there are none."""
    if usable == 0:
        raise PartitionRefused(
            "agents",
            "no agent is online, above the battery floor or plugged in, and reports a "
            "speed and a link: start or charge an agent",
        )
    most = intervals.count - 1
    if request.stages is None:
        if request.pin_first is not None and request.pin_first == request.pin_last:
            return range(1, 2)
        return range(1, min(request.max_stages, most, usable) + 1)
    if request.stages > most:
        why = f" ({variant.uncuttable_reason})" if variant.uncuttable_reason else ""
        raise PartitionRefused(
            "stages",
            f"variant {variant.name} has {most - 1} usable cut point"
            f"{'s' if most != 2 else ''}{why}: at most {most} stages, not {request.stages}",
        )
    if request.stages > usable:
        raise PartitionRefused(
            "agents",
            f"{request.stages} stages need {request.stages} distinct agents, but only "
            f"{usable} {'is' if usable == 1 else 'are'} eligible: ask for fewer stages",
        )
    return range(request.stages, request.stages + 1)


def _most_telling(refusals: Sequence[PartitionRefused]) -> PartitionRefused:
    """Of the refusals for every stage count, the one that got furthest (the fastest)."""

    def key(refusal: PartitionRefused) -> tuple[int, float]:
        latency = refusal.predicted_latency_ms
        return (_CONSTRAINT_ORDER.index(refusal.constraint), -(latency or 0.0))

    return max(refusals, key=key)


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
