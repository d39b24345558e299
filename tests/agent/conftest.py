"""Fixtures of the agent tests: a small trained model cut into shards (built once per
session), in-memory fleets for component tests, and helpers to build requests."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from splitmq.agent import Agent, AgentConfig, agent_will, load_profile
from splitmq.coordinator.pool_service import PoolService
from splitmq.transport import MemoryBroker, Transport
from splitmq.wire import Activation, LoadShard, Tensor
from splitmq.wire.topics import RESULTS
from tests.data import digits_test

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

CLIENT = "alice"
CALLBACK = RESULTS.name(client=CLIENT)


@dataclass(frozen=True)
class CutModel:
    """A model and its shards, with an input and the unsplit model's exact output."""

    model: bytes
    shards: tuple[object, ...]  # splitmq.converter.Shard
    image: np.ndarray
    expected: dict[str, np.ndarray]

    @property
    def input_name(self) -> str:
        return self.shards[0].inputs[0].name  # type: ignore[attr-defined,no-any-return]


@pytest.fixture(scope="session")
def digits_entry(digits_pool: object) -> object:
    return digits_pool


def _cut(entry: object, variant: str, cut_points: list[int]) -> CutModel:
    from splitmq.converter import cut, run_model

    model = entry.variant_path(variant).read_bytes()  # type: ignore[attr-defined]
    shards = tuple(cut(model, cut_points))
    image = digits_test()[0][:1]
    expected = run_model(model, [image])
    return CutModel(model, shards, image, expected)


@pytest.fixture(scope="session")
def digits(digits_entry: object) -> CutModel:
    """float32, two stages, cut after the residual add."""
    return _cut(digits_entry, "float32", [3])


@pytest.fixture(scope="session")
def digits3(digits_entry: object) -> CutModel:
    """float32, three stages."""
    return _cut(digits_entry, "float32", [3, 5])


@pytest.fixture(scope="session")
def digits_int8(digits_entry: object) -> CutModel:
    """int8, two stages: an int8 frontier with its scale and zero point."""
    return _cut(digits_entry, "int8", [4])


def load_command(
    shard: object,
    deployment: str,
    *,
    command_id: str = "load-1",
    issuer: str = "coordinator",
    digest: str | None = None,
    shared: bool = False,
) -> LoadShard:
    return LoadShard(
        command_id=command_id,
        issuer=issuer,
        deployment=deployment,
        stage=shard.stage,  # type: ignore[attr-defined]
        digest=digest or shard.sha256,  # type: ignore[attr-defined]
        size_bytes=shard.size_bytes,  # type: ignore[attr-defined]
        inputs=shard.inputs,  # type: ignore[attr-defined]
        outputs=shard.outputs,  # type: ignore[attr-defined]
        threads=1,
        shared=shared,
    )


def request(
    model: CutModel,
    deployment: str,
    route: tuple[tuple[str, ...], ...],
    *,
    request_id: bytes | None = None,
    attempt: int = 0,
    image: np.ndarray | None = None,
    name: str | None = None,
    deadline_ms: int | None = None,
    callback: str = CALLBACK,
) -> Activation:
    return Activation(
        request_id=request_id or os.urandom(16),
        attempt=attempt,
        deployment=deployment,
        stage=0,
        route=route,
        callback=callback,
        deadline_ms=int(time.time() * 1000 + 30_000) if deadline_ms is None else deadline_ms,
        tensors=(Tensor(name or model.input_name, model.image if image is None else image),),
        client_id=CLIENT,
    )


@dataclass
class MemoryFleet:
    """Agents and a model pool over one in-memory broker."""

    broker: MemoryBroker
    pool: PoolService
    cache_root: Path
    agents: list[Agent]

    def agent(self, agent_id: str, **overrides: object) -> Agent:
        fields: dict[str, object] = {
            "agent_id": agent_id,
            "profile": load_profile("host"),
            "cache_dir": self.cache_root / agent_id,
            "xnnpack": False,
            "telemetry_period_s": 0.05,
            "bench_runs": 2,
            "fetch_chunk_bytes": 4096,
            "battery": "simulated",
            "threads": 1,
        }
        fields.update(overrides)
        config = AgentConfig(**fields)  # type: ignore[arg-type]
        agent = Agent(config, self.broker.transport(f"agent-{agent_id}", will=agent_will(config)))
        agent.start()
        self.agents.append(agent)
        return agent

    def client(self, name: str = "client") -> Transport:
        transport = self.broker.transport(name)
        transport.start()
        return transport


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[MemoryFleet]:
    broker = MemoryBroker()
    pool_transport = broker.transport("pool")
    pool_transport.start()
    pool = PoolService(pool_transport, chunk_bytes=8192)
    pool.start()
    fleet = MemoryFleet(broker, pool, tmp_path / "caches", [])
    yield fleet
    for agent in fleet.agents:
        agent.stop()
    pool_transport.close()


AgentFactory = Callable[..., Agent]
