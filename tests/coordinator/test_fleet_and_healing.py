"""The fleet table people read, and when a deployment needs healing (no broker needed)."""

from __future__ import annotations

from splitmq.coordinator.deployer import Deployer
from splitmq.coordinator.fleet_table import fleet_table
from splitmq.coordinator.registry import Registry
from splitmq.wire import AgentState, AgentStatus, Battery, Deployment, Link, StageSpec, Telemetry


def fleet(batteries: dict[str, tuple[float, bool]]) -> Registry:
    registry = Registry(clock=lambda: 100.0)
    for agent, (pct, plugged) in batteries.items():
        registry.on_status(
            AgentStatus(agent_id=agent, state=AgentState.ONLINE, profile="rpi4", runtime="litert")
        )
        registry.on_telemetry(
            Telemetry(
                agent_id=agent,
                ts_ms=0,
                period_s=1.0,
                cpu_pct=12.0,
                mem_free_bytes=2_000_000_000,
                battery=Battery(pct, plugged, simulated=True),
                compute_ms={"d/0": 4.25},
                queue_depth={"d/0": 2},
                link=Link(40.0, 4.0),
                broker_rtt_ms=0.8,
            )
        )
    return registry


def deployment(*replicas: tuple[str, ...], target: int = 1) -> Deployment:
    stages = tuple(
        StageSpec(i, i, i + 1, f"{i:064x}", 1000, (), (), agents)
        for i, agents in enumerate(replicas)
    )
    return Deployment("d", "m", "v1", "float32", 1, stages, target_replicas=target)


def deployer(registry: Registry) -> Deployer:
    return Deployer(
        None,  # type: ignore[arg-type]  # not needed to judge health
        registry,
        None,  # type: ignore[arg-type]
        publish=lambda _d: None,
        deployments=dict,
    )


def test_the_fleet_table_shows_each_agent_with_its_figures() -> None:
    registry = fleet({"pi-1": (64.0, False), "laptop-1": (100.0, True)})
    registry.on_status(AgentStatus(agent_id="phone-1", state=AgentState.OFFLINE))
    table = fleet_table(registry, {"d": deployment(("pi-1",), ("laptop-1",))}).splitlines()
    assert table[0].split()[:5] == ["agent", "state", "site", "profile", "runtime"]
    rows = {line.split()[0]: line for line in table[2:5]}
    assert "online" in rows["pi-1"] and "64% (sim)" in rows["pi-1"]
    assert "100% plugged" in rows["laptop-1"] and "40 Mb/s 4 ms" in rows["laptop-1"]
    assert "d/0 (2, 4.2)" in rows["pi-1"]
    assert "offline" in rows["phone-1"]
    assert any("d v1 epoch 1 active: 0: pi-1 | 1: laptop-1" in line for line in table)


def test_the_fleet_table_shows_each_agents_site() -> None:
    registry = fleet({"pi-1": (64.0, False)})
    registry.on_status(
        AgentStatus(agent_id="pi-2", state=AgentState.ONLINE, profile="rpi4", site="kitchen")
    )
    rows = {line.split()[0]: line.split() for line in fleet_table(registry).splitlines()[2:4]}
    assert rows["pi-2"][:4] == ["pi-2", "online", "kitchen", "rpi4"]
    assert rows["pi-1"][2] == "-", "no site said"


def test_an_empty_fleet_says_so() -> None:
    assert "no agents" in fleet_table(Registry())


def test_a_stage_on_an_agent_below_the_battery_floor_needs_healing() -> None:
    registry = fleet({"pi-1": (9.0, False), "laptop-1": (90.0, False), "spare": (80.0, False)})
    assert deployer(registry).needs_healing(deployment(("pi-1",), ("laptop-1",)))


def test_a_plugged_agent_below_the_floor_keeps_its_stage() -> None:
    registry = fleet({"pi-1": (9.0, True), "laptop-1": (90.0, False), "spare": (80.0, False)})
    assert not deployer(registry).needs_healing(deployment(("pi-1",), ("laptop-1",)))


def test_missing_replicas_need_healing_only_when_a_spare_exists() -> None:
    registry = fleet({"pi-1": (90.0, False), "laptop-1": (90.0, False)})
    short = deployment(("pi-1",), ("laptop-1",), target=2)
    # Each stage wants two replicas; the other agent can take either.
    assert deployer(registry).needs_healing(short)
    full = deployment(("pi-1", "laptop-1"), ("laptop-1", "pi-1"), target=2)
    assert not deployer(registry).needs_healing(full)
