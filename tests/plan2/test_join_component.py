"""The agent's side of Plan 2 over the in-memory transport: fan-out to the branches, the
join that collects them (duplicates, a missing branch, a late one, a full memory), and
the requester's share of a stage graph's outputs."""

from __future__ import annotations

import os
import time

import numpy as np

from splitmq.agent import Agent
from splitmq.converter import run_model
from splitmq.wire import (
    REQUESTER,
    Activation,
    ErrorCode,
    ErrorMessage,
    Result,
    ShardReady,
    Tensor,
    encode,
)
from splitmq.wire.topics import RESULTS, STAGE
from tests.agent.conftest import CALLBACK, CLIENT, MemoryFleet
from tests.agent.events import Inbox, command, events, ready_for
from tests.helpers import wait_until

from .conftest import GraphModel

DEP = "fork-float32"


def deploy(fleet: MemoryFleet, model: GraphModel, agents: list[Agent], dep: str) -> None:
    inbox = events(fleet.client(f"events-{dep}"))
    coordinator = fleet.client(f"coordinator-{dep}")
    for stage, agent in enumerate(agents):
        fleet.pool.add(model.shards[stage].data)  # type: ignore[attr-defined]
        command(coordinator, agent.agent_id, model.load(stage, dep, f"{dep}-{stage}"))
    for stage in range(len(agents)):
        inbox.wait_for(ShardReady, ready_for(f"{dep}-{stage}"), timeout_s=20)


def activation(
    model: GraphModel,
    route: tuple[tuple[str, ...], ...],
    *,
    stage: int = 0,
    source: int | None = None,
    tensors: dict[str, np.ndarray] | None = None,
    request_id: bytes | None = None,
    deadline_ms: int | None = None,
    dep: str = DEP,
) -> Activation:
    return Activation(
        request_id=request_id or os.urandom(16),
        attempt=0,
        deployment=dep,
        stage=stage,
        route=route,
        callback=CALLBACK,
        deadline_ms=deadline_ms or int(time.time() * 1000 + 30_000),
        tensors=tuple(Tensor(k, v) for k, v in (tensors or model.inputs).items()),
        client_id=CLIENT,
        source=REQUESTER if source is None else source,
    )


def branch_output(model: GraphModel, stage: int) -> dict[str, np.ndarray]:
    """What branch ``stage`` of ``model`` sends the join, computed here."""
    trunk = run_model(model.shards[0].data, model.inputs)  # type: ignore[attr-defined]
    return run_model(model.shards[stage].data, trunk)  # type: ignore[attr-defined]


def publish(fleet: MemoryFleet, message: Activation, agent_id: str) -> None:
    client = fleet.client(f"sender-{os.urandom(3).hex()}")
    topic = STAGE.name(deployment=message.deployment, stage=message.stage, agent=agent_id)
    client.publish(topic, encode(message))


def test_fan_out_then_join_on_four_agents_is_bit_exact(
    fleet: MemoryFleet, fork: GraphModel
) -> None:
    agents = [fleet.agent(name) for name in ("trunk", "left", "right", "join")]
    deploy(fleet, fork, agents, DEP)
    results = Inbox(fleet.client("alice"), RESULTS.name(client=CLIENT))
    route = tuple((a.agent_id,) for a in agents)
    publish(fleet, activation(fork, route), "trunk")
    result = results.wait_for(Result, timeout_s=20)
    ((_name, expected),) = fork.expected.items()
    assert np.array_equal(result.tensors[0].array, expected)
    assert {e.stage for e in result.trace} == {0, 1, 2, 3}
    assert result.stage == 3


def test_join_drops_a_duplicate_reports_a_missing_branch_then_completes_and_drops_late(
    fleet: MemoryFleet, fork: GraphModel
) -> None:
    join = fleet.agent("join", join_wait_ms=150.0)
    deploy(fleet, fork, [join], "j")  # stage 0 only loaded here: reuse its digest below
    coordinator = fleet.client("coordinator-j3")
    fleet.pool.add(fork.shards[3].data)  # type: ignore[attr-defined]
    ready = events(fleet.client("ev"))  # listening before the load: its answer is not kept
    command(coordinator, "join", fork.load(3, "j", "j-3"))
    ready.wait_for(ShardReady, ready_for("j-3"), timeout_s=30)
    results = Inbox(fleet.client("alice"), RESULTS.name(client=CLIENT))
    route = (("x",), ("left", "left-b"), ("right", "right-b"), ("join",))
    request_id = os.urandom(16)
    left = activation(
        fork,
        route,
        stage=3,
        source=1,
        tensors=branch_output(fork, 1),
        request_id=request_id,
        dep="j",
    )
    publish(fleet, left, "join")
    publish(fleet, left, "join")  # QoS 1 may deliver twice
    missing = results.wait_for(ErrorMessage, timeout_s=30)
    assert missing.code is ErrorCode.BRANCH_MISSING and missing.stage == 2
    assert "branch stage 2" in missing.message
    wait_until(lambda: join.workers.joins.stats.duplicates == 1, 30, "the duplicate dropped")
    right = activation(
        fork,
        route,
        stage=3,
        source=2,
        tensors=branch_output(fork, 2),
        request_id=request_id,
        dep="j",
    )
    publish(fleet, right, "join")  # the retried branch: the join still completes
    result = results.wait_for(Result, timeout_s=30)
    assert np.array_equal(result.tensors[0].array, next(iter(fork.expected.values())))
    publish(fleet, right, "join")  # late: after the join ran
    wait_until(lambda: join.workers.joins.stats.late == 1, 30, "the late branch dropped")
    assert len(results.of(Result)) == 1
    assert join.workers.joins.held_bytes == 0 and join.workers.joins.pending() == 0
    # the counters go to the agent's telemetry too (Telemetry.joins)
    counts = {"duplicates": 1, "late": 1, "missing": 1, "refused_full": 0}
    assert join.presence.telemetry().joins == counts
    assert fleet.agent("idle").presence.telemetry().joins is None


def test_a_join_past_its_memory_bound_refuses_with_join_full(
    fleet: MemoryFleet, fork: GraphModel
) -> None:
    join = fleet.agent("join", join_max_bytes=64)
    coordinator = fleet.client("coordinator")
    fleet.pool.add(fork.shards[3].data)  # type: ignore[attr-defined]
    ready = events(fleet.client("ev"))  # listening before the load: its answer is not kept
    command(coordinator, "join", fork.load(3, "j", "j-3"))
    ready.wait_for(ShardReady, ready_for("j-3"), timeout_s=30)
    results = Inbox(fleet.client("alice"), RESULTS.name(client=CLIENT))
    route = (("x",), ("left",), ("right",), ("join",))
    left = activation(fork, route, stage=3, source=1, tensors=branch_output(fork, 1), dep="j")
    publish(fleet, left, "join")
    error = results.wait_for(ErrorMessage, timeout_s=30)
    assert error.code is ErrorCode.JOIN_FULL and error.stage == 3
    assert "join_max_bytes" in error.message
    assert join.workers.joins.held_bytes == 0


def test_branches_answer_the_requester_each_with_their_stage(
    fleet: MemoryFleet, heads: GraphModel
) -> None:
    agents = [fleet.agent(name) for name in ("trunk", "age", "kind")]
    deploy(fleet, heads, agents, "heads")
    results = Inbox(fleet.client("alice"), RESULTS.name(client=CLIENT))
    route = tuple((a.agent_id,) for a in agents)
    publish(fleet, activation(heads, route, dep="heads"), "trunk")
    results.wait(lambda: len(results.of(Result)) == 2, 20, "two results")
    got = {r.stage: r for r in results.of(Result)}
    assert set(got) == {1, 2}
    produced = {t.name: t.array for r in got.values() for t in r.tensors}
    assert produced.keys() == heads.expected.keys()
    for name, value in heads.expected.items():
        assert np.array_equal(produced[name], value)


def test_a_branch_retry_reruns_only_the_path_to_its_branch(
    fleet: MemoryFleet, heads: GraphModel
) -> None:
    agents = [fleet.agent(name) for name in ("trunk", "age", "kind")]
    deploy(fleet, heads, agents, "heads")
    results = Inbox(fleet.client("alice"), RESULTS.name(client=CLIENT))
    route = tuple((a.agent_id,) for a in agents)
    first = activation(heads, route, dep="heads")
    publish(fleet, first, "trunk")
    results.wait(lambda: len(results.of(Result)) == 2, 20, "two results")
    retry = Activation(**{**first.__dict__, "branch": 2, "retry": 1})
    publish(fleet, retry, "trunk")
    results.wait(lambda: len(results.of(Result)) == 3, 20, "the retried branch's result")
    assert [r.stage for r in results.of(Result)][2] == 2
