"""The registry hands the planner each agent's measured broker round trip as its hop cost."""

from __future__ import annotations

from splitmq.coordinator.registry import Registry
from splitmq.wire import AgentState, AgentStatus, Battery, Telemetry


def telemetry(agent: str, rtt_ms: float | None) -> Telemetry:
    return Telemetry(
        agent_id=agent,
        ts_ms=0,
        period_s=1.0,
        cpu_pct=1.0,
        mem_free_bytes=10**9,
        battery=Battery(90.0, True),
        broker_rtt_ms=rtt_ms,
    )


def test_a_measured_round_trip_is_the_agents_hop_and_none_leaves_the_default() -> None:
    registry = Registry(clock=lambda: 1.0)
    for agent, rtt in (("probed", 1.3), ("silent", None)):
        registry.on_status(AgentStatus(agent_id=agent, state=AgentState.ONLINE))
        registry.on_telemetry(telemetry(agent, rtt))
    views = registry.views()
    assert views["probed"].hop_ms == 1.3
    assert views["silent"].hop_ms is None
