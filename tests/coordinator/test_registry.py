"""The fleet registry from status, telemetry and shard benchmarks, on an injected clock."""

from __future__ import annotations

import pytest

from splitmq.coordinator.registry import Registry
from splitmq.wire import AgentState, AgentStatus, Battery, Link, ShardReady, Telemetry


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def status(agent: str, state: AgentState = AgentState.ONLINE, **extra: object) -> AgentStatus:
    return AgentStatus(agent_id=agent, state=state, **extra)  # type: ignore[arg-type]


def telemetry(agent: str, pct: float = 80.0, plugged: bool = False, **extra: object) -> Telemetry:
    fields: dict[str, object] = {
        "agent_id": agent,
        "ts_ms": 0,
        "period_s": 1.0,
        "cpu_pct": 10.0,
        "mem_free_bytes": 1_000_000_000,
        "battery": Battery(pct, plugged, simulated=True),
    }
    fields.update(extra)
    return Telemetry(**fields)  # type: ignore[arg-type]


def ready(agent: str, stage: int, bench_ms: float, digest: str = "d" * 64) -> ShardReady:
    return ShardReady("c1", agent, "m-float32", stage, digest, "litert", bench_ms)


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_an_agent_is_online_from_its_birth_until_its_will(clock: Clock) -> None:
    registry = Registry(clock=clock)
    registry.on_status(status("pi"))
    registry.on_telemetry(telemetry("pi"))
    assert registry.online("pi")
    registry.on_status(status("pi", AgentState.OFFLINE))
    assert not registry.online("pi")
    assert not registry.views()["pi"].online


def test_an_agent_whose_telemetry_falls_silent_counts_as_gone(clock: Clock) -> None:
    registry = Registry(stale_periods=3.0, clock=clock)
    registry.on_status(status("pi"))
    registry.on_telemetry(telemetry("pi"))
    clock.now += 2.9
    assert registry.online_ids() == ["pi"]
    clock.now += 0.2
    assert registry.online_ids() == []
    registry.on_telemetry(telemetry("pi"))
    assert registry.online_ids() == ["pi"]


def test_telemetry_without_a_birth_is_not_online(clock: Clock) -> None:
    registry = Registry(clock=clock)
    registry.on_telemetry(telemetry("ghost"))
    assert not registry.online("ghost")


def test_the_view_carries_battery_power_link_and_memory(clock: Clock) -> None:
    registry = Registry(clock=clock)
    registry.on_status(
        status(
            "phone",
            active_power_w=3.0,
            radio_j_per_mb=0.5,
            speed_gflops=20.0,
            link=Link(50.0, 8.0),
            site="home",
        )
    )
    registry.on_telemetry(telemetry("phone", pct=42.0, plugged=False, mem_free_bytes=123))
    view = registry.views()["phone"]
    assert view.site == "home"  # the planner counts the bridges a hop to it crosses
    assert (view.battery_pct, view.plugged) == (42.0, False)
    assert (view.active_w, view.radio_j_per_mb) == (3.0, 0.5)
    assert (view.bandwidth_mbps, view.link_latency_ms) == (50.0, 8.0)
    assert view.mem_free_bytes == 123
    assert view.speed_gflops == 20.0


def test_measured_shard_times_override_the_calibrated_speed(clock: Clock) -> None:
    registry = Registry(clock=clock)
    registry.on_status(status("fast", speed_gflops=100.0))
    registry.on_status(status("slow", speed_gflops=25.0))
    # fast runs a 10 MFLOP shard in 1 ms: 10 GFLOP/s, a tenth of its calibrated figure.
    registry.on_shard_ready(ready("fast", 0, 1.0), flops=10_000_000)
    assert registry.speed_gflops("fast") == pytest.approx(10.0)
    # slow has no measurement on our shards: its own calibrated figure, never a ratio
    # measured on another device.
    assert registry.speed_gflops("slow") == pytest.approx(25.0)


def test_stage_compute_time_prefers_telemetry_over_the_load_benchmark(clock: Clock) -> None:
    registry = Registry(clock=clock)
    registry.on_status(status("pi"))
    registry.on_shard_ready(ready("pi", 1, 7.0))
    assert registry.compute_ms("m-float32", 1, "pi") == 7.0
    registry.on_telemetry(telemetry("pi", compute_ms={"m-float32/1": 5.5}))
    assert registry.compute_ms("m-float32", 1, "pi") == 5.5
    assert registry.compute_ms("m-float32", 0, "pi") is None


def test_whether_an_agent_serves_a_stage_is_only_known_from_later_telemetry(
    clock: Clock,
) -> None:
    registry = Registry(clock=clock)
    registry.on_status(status("pi"))
    assert registry.serves("pi", "m", 0, since_s=clock.now) is None  # no telemetry yet
    registry.on_telemetry(telemetry("pi", queue_depth={"m/0": 0}))
    loaded_s = clock.now
    clock.now += 0.5
    registry.on_telemetry(telemetry("pi"))  # within a period of the load: may predate it
    assert registry.serves("pi", "m", 0, since_s=loaded_s) is None
    clock.now += 1.0
    registry.on_telemetry(telemetry("pi", queue_depth={"m/0": 2}))
    assert registry.serves("pi", "m", 0, since_s=loaded_s) is True
    clock.now += 1.0
    registry.on_telemetry(telemetry("pi"))  # restarted: serves nothing
    assert registry.serves("pi", "m", 0, since_s=loaded_s) is False
    assert registry.serves("nobody", "m", 0, since_s=0.0) is None


def test_after_our_own_outage_agents_get_a_grace_period(clock: Clock) -> None:
    registry = Registry(stale_periods=3.0, clock=clock)
    registry.on_status(status("pi"))
    registry.on_telemetry(telemetry("pi"))
    registry.on_status(status("gone"))
    registry.on_status(status("gone", AgentState.OFFLINE))
    clock.now += 20.0  # we heard nothing: our connection was down
    assert registry.online_ids() == []
    registry.refresh(grace_s=10.0)
    clock.now += 12.0
    assert registry.online_ids() == ["pi"]  # 3 periods after the grace
    clock.now += 1.5
    assert registry.online_ids() == []  # still silent: gone


def test_the_planners_views_carry_the_queue_depths_telemetry_reports() -> None:
    from splitmq.coordinator.views import deployment_views
    from splitmq.wire import Deployment, StageSpec

    registry = Registry(clock=Clock())
    for agent, depth in (("a", 3), ("b", 0)):
        registry.on_status(status(agent))
        registry.on_telemetry(
            telemetry(agent, compute_ms={"d/0": 2.0}, queue_depth={"d/0": depth, "e/0": 7})
        )
    stage = StageSpec(0, 0, 1, "ab" * 32, 1000, (), (), ("a", "b", "c"))
    deployment = Deployment("d", "m", "v1", "float32", 1, (stage,))
    (view,) = deployment_views([deployment], registry, lambda *_: None)
    assert dict(view.stages[0].queue_depth) == {"a": 3}  # b idle, c unknown: nothing waits
    assert registry.queue_depth("d", 0, "a") == 3 and registry.queue_depth("d", 0, "c") == 0


def test_a_stage_graphs_views_carry_its_edges_and_each_edges_bytes() -> None:
    from splitmq.coordinator.views import deployment_views
    from splitmq.wire import REQUESTER, Deployment, StageEdge, StageSpec, TensorSpec

    registry = Registry(clock=Clock())
    x, t = TensorSpec("x", (1, 4), "float32"), TensorSpec("t", (1, 8), "float32")
    y1, y2 = TensorSpec("y1", (1, 2), "float32"), TensorSpec("y2", (1, 3), "int8")

    def spec(
        index: int,
        inputs: tuple[TensorSpec, ...],
        outputs: tuple[TensorSpec, ...],
        sources: tuple[StageEdge, ...],
        targets: tuple[StageEdge, ...],
    ) -> StageSpec:
        return StageSpec(index, 0, 1, "ab" * 32, 10, inputs, outputs, ("a",), sources, targets)

    stages = (  # the trunk sends t to both heads: 2 x 32 bytes; the heads answer
        spec(
            0,
            (x,),
            (t,),
            (StageEdge(REQUESTER, ("x",)),),
            (StageEdge(1, ("t",)), StageEdge(2, ("t",))),
        ),
        spec(1, (t,), (y1,), (StageEdge(0, ("t",)),), (StageEdge(REQUESTER, ("y1",)),)),
        spec(2, (t,), (y2,), (StageEdge(0, ("t",)),), (StageEdge(REQUESTER, ("y2",)),)),
    )
    deployment = Deployment("d", "m", "v1", "float32", 1, stages)
    (view,) = deployment_views([deployment], registry, lambda *_: None)
    edges = [(s.sources, s.targets, s.input_bytes, s.output_bytes) for s in view.stages]
    assert edges == [
        ((REQUESTER,), (1, 2), 16, 64),
        ((0,), (REQUESTER,), 32, 8),
        ((0,), (REQUESTER,), 32, 3),
    ]
