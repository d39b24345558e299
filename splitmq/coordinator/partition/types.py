"""What the partition optimizer is asked, how it is configured and what it answers:
the request, the config, the partition and its stages, the refusal; :func:`describe`
shows a partition as a table."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple

from splitmq.coordinator.planner import (
    MB,
    AgentView,
    PlannerConfig,
    StageView,
)
from splitmq.errors import ConfigError, SplitMQError
from splitmq.wire import Objective

PLANNER = PlannerConfig()
"""The planner's defaults, which the optimizer's shared settings start from (an
instance: in a compiled planner the class's attributes are its fields, not defaults)."""

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
        join_ms: what a join adds to a Plan 2 placement's latency once its slowest
            branch arrived: collecting the branches and merging them.
    """

    stage_overhead_ms: float = 1.0
    hop_ms: float = PLANNER.hop_ms
    memory_headroom: float = 0.8
    battery_floor_pct: float = PLANNER.battery_floor_pct
    low_battery_weight: float = PLANNER.low_battery_weight
    join_ms: float = 0.2

    @property
    def planner(self) -> PlannerConfig:
        """The planner settings with the same meaning, for its cost functions."""
        return PlannerConfig(
            battery_floor_pct=self.battery_floor_pct,
            low_battery_weight=self.low_battery_weight,
            hop_ms=self.hop_ms,
            bridge_ms=0.0,  # the optimizer does not weigh bridge crossings (yet)
            join_ms=self.join_ms,
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
        operators: in a Plan 2 placement, the live operators it runs (a branch is not a
            range); ``None`` in a chain.
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
    operators: tuple[int, ...] | None = None

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
        section: a Plan 2 placement's parallel section ``[start, end)``: its stages are
            the prefix (if any), one per branch, then the suffix (if any); ``None``: a
            chain.
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
    section: tuple[int, int] | None = None

    @property
    def primaries(self) -> tuple[str, ...]:
        return tuple(stage.primary for stage in self.stages)


class Figures(NamedTuple):
    """What one partition is predicted to cost (see the module docstring)."""

    latency_ms: float
    bottleneck_ms: float
    energy_j: float
    weighted_energy_j: float


def describe(partition: Partition) -> str:
    """A table of ``partition`` for people: one line per stage, then the totals."""
    header = ("stage", "ops", "MFLOPs", "shard MB", "agents", "compute ms", "out KB")
    rows = [header] + [
        (
            str(s.stage),
            f"[{s.start_op}, {s.end_op})" if s.operators is None else _operators(s.operators),
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
    if partition.section is not None:
        lines.append(
            f"Plan 2: the branches of section [{partition.section[0]}, {partition.section[1]}) "
            "run in parallel"
        )
    lines.append(
        f"{partition.variant}, {count} stage{'s' if count > 1 else ''}, objective "
        f"{partition.objective}: {partition.predicted_latency_ms:.1f} ms per request, "
        f"bottleneck {partition.bottleneck_ms:.1f} ms ({partition.throughput_rps:.1f}/s), "
        f"{partition.energy_j:.3f} J ({partition.weighted_energy_j:.3f} J weighted)"
    )
    return "\n".join(lines)


def _operators(operators: tuple[int, ...]) -> str:
    """A branch's operators, short: ``{3, 5..9}``."""
    runs: list[list[int]] = []
    for op in sorted(operators):
        if runs and op == runs[-1][-1] + 1:
            runs[-1].append(op)
        else:
            runs.append([op])
    return "{" + ", ".join(str(r[0]) if len(r) == 1 else f"{r[0]}..{r[-1]}" for r in runs) + "}"
