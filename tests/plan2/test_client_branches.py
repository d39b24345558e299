"""The client's side of Plan 2 over the in-memory transport, with real agents and a fake
coordinator: a branch lost on the way is reported missing by the join and retried alone
on its fallback within the same attempt; two heads that answer the client are joined
by it."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from splitmq.client import Client, ClientConfig
from splitmq.transport import Transport
from splitmq.wire import Deployment, ShardReady, StageSpec
from splitmq.wire.topics import DEPLOYMENTS
from tests.agent.conftest import MemoryFleet
from tests.agent.events import command, events, ready_for
from tests.client.conftest import FakeCoordinator, always, fixed_plan

from .conftest import GraphModel


def publish_graph(
    fleet: MemoryFleet, model: GraphModel, placements: Sequence[tuple[str, ...]], name: str
) -> None:
    """Load each stage on the agents of its placement that exist; publish the deployment
    retained with every placement as the stage's replicas (a missing agent: a lost hop)."""
    operator = fleet.client(f"operator-{name}")
    inbox = events(operator)
    hosts = {a.agent_id for a in fleet.agents}
    waited = []
    for stage, agents in enumerate(placements):
        fleet.pool.add(model.shards[stage].data)  # type: ignore[attr-defined]
        for agent_id in agents:
            if agent_id in hosts:
                command(operator, agent_id, model.load(stage, name, f"{name}-{stage}-{agent_id}"))
                waited.append(f"{name}-{stage}-{agent_id}")
    for command_id in waited:
        inbox.wait_for(ShardReady, ready_for(command_id), timeout_s=20)
    stages = []
    for stage, agents in enumerate(placements):
        load = model.load(stage, name, "spec")
        spec = StageSpec(
            stage, 0, 0, load.digest, load.size_bytes, load.inputs, load.outputs, agents
        )
        stages.append(replace(spec, sources=load.sources, targets=load.targets))
    deployment = Deployment(name, name, "v1", "float32", 1, tuple(stages))
    DEPLOYMENTS.publish(operator, deployment, deployment=name)


def make_client(fleet: MemoryFleet, model: str, route: tuple[tuple[str, ...], ...]) -> Client:
    coordinator: Transport = fleet.broker.transport(f"coordinator-{model}")
    FakeCoordinator(coordinator, always(replace(fixed_plan(route, deployment=model), model=model)))
    config = ClientConfig(
        model=model, deadline_s=8.0, min_attempt_timeout_s=4.0, plan_timeout_s=2.0
    )
    client = Client(fleet.broker, f"user-{model}", config=config)
    client.start()
    return client


def test_a_lost_branch_is_retried_alone_and_the_join_completes(
    fleet: MemoryFleet, fork: GraphModel
) -> None:
    agents = {name: fleet.agent(name, join_wait_ms=150.0) for name in ("t", "l", "r2", "j")}
    placements = [("t",), ("l",), ("ghost", "r2"), ("j",)]  # ghost: the hop is lost
    publish_graph(fleet, fork, placements, "fork")
    client = make_client(fleet, "fork", tuple(placements))
    try:
        started = time.monotonic()
        (x,) = fork.inputs.values()
        result = client.infer(x)
    finally:
        client.close()
    assert np.array_equal(next(iter(result.outputs.values())), next(iter(fork.expected.values())))
    assert [e.agent_id for e in result.trace if e.stage == 2] == ["r2"]
    assert len(result.record.attempts) == 1  # the branch was retried within the attempt
    assert agents["j"].workers.joins.stats.missing_reported == 1
    assert time.monotonic() - started < 4.0  # well before the attempt's timeout


def test_the_client_joins_two_heads(fleet: MemoryFleet, heads: GraphModel) -> None:
    for name in ("t", "a", "k"):
        fleet.agent(name)
    placements = [("t",), ("a",), ("k",)]
    publish_graph(fleet, heads, placements, "heads")
    client = make_client(fleet, "heads", tuple(placements))
    try:
        (x,) = heads.inputs.values()
        result = client.infer(x)
    finally:
        client.close()
    assert result.outputs.keys() == heads.expected.keys()
    for name, value in heads.expected.items():
        assert np.array_equal(result.outputs[name], value)
    assert sorted(e.stage for e in result.trace) == [0, 1, 2]
