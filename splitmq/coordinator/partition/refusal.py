"""Which agents and stage counts a request leaves, or the refusal that says why none:
duplicate ids, pins that cannot hold, too many stages for the cut points or the
agents; and of several refusals the one that says most."""

from __future__ import annotations

from collections.abc import Sequence

from splitmq.coordinator.partition.arrays import _Intervals
from splitmq.coordinator.partition.types import (
    _CONSTRAINT_ORDER,
    Constraint,
    PartitionConfig,
    PartitionRefused,
    PartitionRequest,
)
from splitmq.coordinator.planner import (
    AgentView,
    eligible,
)
from splitmq.errors import ConfigError
from splitmq.wire.manifest import Variant


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
