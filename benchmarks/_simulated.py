"""A simulated agent's retained status and telemetry, for the fleet benchmarks that
stand thousands of agents up without a process each (bench_fleet, bench_scale)."""

from __future__ import annotations

import random

from splitmq.wire import AgentState, AgentStatus, Battery, Link, Telemetry


def simulated_agent(
    agent_id: str,
    rng: random.Random,
    now_ms: int,
    *,
    period_s: float,
    plugged: bool | None = None,
    site: str | None = None,
) -> tuple[AgentStatus, Telemetry]:
    """Its birth status and one telemetry, with figures drawn from ``rng``.

    ``plugged`` None draws it too (half the fleet on battery)."""
    link = Link(rng.choice([10.0, 100.0, 1000.0]), rng.uniform(0.5, 10.0))
    status = AgentStatus(
        agent_id=agent_id,
        state=AgentState.ONLINE,
        ts_ms=now_ms,
        runtime="simulated",
        cores=4,
        memory_bytes=4 * 2**30,
        profile="simulated",
        speed_gflops=rng.uniform(2.0, 80.0),
        active_power_w=rng.uniform(2.0, 20.0),
        idle_power_w=1.0,
        radio_j_per_mb=rng.uniform(0.05, 1.0),
        link=link,
        site=site,
    )
    cpu_pct = rng.uniform(0, 50)
    mem_free_bytes = rng.randint(200 * 2**20, 2 * 2**30)
    battery_pct = rng.uniform(20, 100)
    telemetry = Telemetry(
        agent_id=agent_id,
        ts_ms=now_ms,
        period_s=period_s,
        cpu_pct=cpu_pct,
        mem_free_bytes=mem_free_bytes,
        battery=Battery(
            battery_pct, rng.random() < 0.5 if plugged is None else plugged, simulated=True
        ),
        link=link,
    )
    return status, telemetry
