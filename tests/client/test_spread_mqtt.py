"""A stream spread over a stage's replicas by their measured speed, through a real
Mosquitto: two replicas of stage 0, one three times slower than the other."""

from __future__ import annotations

import uuid
from collections import Counter
from pathlib import Path

import pytest

from splitmq.agent import Agent, AgentConfig, BatteryMode, agent_will, load_profile
from splitmq.client import Client, ClientConfig, InferenceResult
from splitmq.coordinator.pool_service import PoolService
from splitmq.mosquitto import Mosquitto
from splitmq.transport import MqttTransport, Transport, parse_broker_url

from ..agent.conftest import CutModel
from .conftest import FakeCoordinator, always, deploy, fixed_plan, slow_profile

pytestmark = pytest.mark.integration


def connect(url: str, client_id: str, agent: AgentConfig | None = None) -> Transport:
    will = agent_will(agent) if agent is not None else None
    return MqttTransport(parse_broker_url(url, client_id=client_id), will=will)


def test_a_stream_goes_to_each_replica_by_its_speed(
    mosquitto: Mosquitto, digits: CutModel, tmp_path: Path
) -> None:
    url, tag = mosquitto.url(), uuid.uuid4().hex[:6]
    pool_transport = connect(url, f"pool-{tag}")
    pool_transport.start()
    pool = PoolService(pool_transport, chunk_bytes=65536)
    pool.start()
    agents: list[Agent] = []
    # the digits model's stage 0 takes about 0.05 ms: x100 and x300 make it about 5 and 15 ms
    for name, profile in (
        ("fast", slow_profile(tmp_path, 100)),
        ("slow", slow_profile(tmp_path, 300)),
    ):
        config = AgentConfig(
            agent_id=f"{name}-{tag}",
            profile=load_profile(profile),
            cache_dir=tmp_path / name,
            xnnpack=False,
            bench_runs=1,
            battery=BatteryMode.SIMULATED,
            threads=1,
        )
        agents.append(Agent(config, connect(url, f"agent-{name}-{tag}", config)))
    fast, slow = (agent.agent_id for agent in agents)
    client: Client | None = None
    coordinator: FakeCoordinator | None = None
    try:
        for agent in agents:
            agent.start()
        operator = connect(url, f"operator-{tag}")
        operator.start()
        deployment = f"d-{tag}"
        # the slow replica first in the plan: the plan's order alone would send it everything
        deploy(operator, pool, digits, [[slow, fast], [fast]], deployment=deployment)
        operator.close()
        plan = fixed_plan(((slow, fast), (fast,)), deployment=deployment)
        coordinator = FakeCoordinator(connect(url, f"coordinator-{tag}"), always(plan))
        client = Client(url, config=ClientConfig(model="digits", deadline_s=30.0))
        client.start()
        items = list(client.stream([digits.image] * 80, max_in_flight=6))
    finally:
        if client is not None:
            client.close()
        if coordinator is not None:
            coordinator.transport.close()
        for agent in agents:
            agent.stop()
        pool_transport.close()
    results = [item for item in items if isinstance(item, InferenceResult)]
    assert len(results) == 80, [item for item in items if not isinstance(item, InferenceResult)]
    served = Counter(result.trace[0].agent_id for result in results)
    # both used, the faster one more (by the plan's order alone, the slow one would
    # take all but the probes)
    assert served[fast] + served[slow] == 80
    assert served[fast] > served[slow] > 0, served
