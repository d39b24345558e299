"""The registry hands the planner each agent's measured broker round trip as its hop
cost, and its measured hop throughput as its bandwidth where it emulates no link."""

from __future__ import annotations

from splitmq.coordinator.planner import AgentView
from splitmq.coordinator.registry import Registry
from splitmq.wire import AgentState, AgentStatus, Battery, Link, Telemetry


def telemetry(
    agent: str, rtt_ms: float | None, *, hop_mbps: float | None = None, link: Link | None = None
) -> Telemetry:
    return Telemetry(
        agent_id=agent,
        ts_ms=0,
        period_s=1.0,
        cpu_pct=1.0,
        mem_free_bytes=10**9,
        battery=Battery(90.0, True),
        broker_rtt_ms=rtt_ms,
        hop_mbps=hop_mbps,
        link=link,
    )


def test_a_measured_round_trip_is_the_agents_hop_and_none_leaves_the_default() -> None:
    registry = Registry(clock=lambda: 1.0)
    for agent, rtt in (("probed", 1.3), ("silent", None)):
        registry.on_status(AgentStatus(agent_id=agent, state=AgentState.ONLINE))
        registry.on_telemetry(telemetry(agent, rtt))
    views = registry.views()
    assert views["probed"].hop_ms == 1.3
    assert views["silent"].hop_ms is None


def test_bandwidth_is_the_emulated_links_else_the_measured_one_else_the_default() -> None:
    registry = Registry(clock=lambda: 1.0)
    emulated = Link(bandwidth_mbps=40.0, latency_ms=4.0)
    for agent, mbps, link in (
        ("pi", 9000.0, emulated),  # the emulated link is what its sends wait for
        ("laptop", 6500.0, None),
        ("new", None, None),
    ):
        registry.on_status(AgentStatus(agent_id=agent, state=AgentState.ONLINE))
        registry.on_telemetry(telemetry(agent, 0.3, hop_mbps=mbps, link=link))
    views = registry.views()
    assert views["pi"].bandwidth_mbps == 40.0
    assert views["laptop"].bandwidth_mbps == 6500.0
    assert views["new"].bandwidth_mbps == AgentView("new").bandwidth_mbps
