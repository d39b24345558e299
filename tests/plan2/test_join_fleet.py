"""Plan 2 against a real Mosquitto, a coordinator process and agent processes: the
``fork`` model deployed with ``--plans parallel`` (trunk, two branches, the join; two
replicas each) answers bit for bit; a branch whose agent is paused is reported missing
by the join, retried alone on its fallback and the join completes; a duplicate of a
branch is dropped, and so is the paused branch once it wakes up (late); with the join's
agent killed the request goes to the join's fallback. The ``heads`` model's two heads
answer the client, which joins them."""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from splitmq.client import Client, ClientConfig
from splitmq.converter import open_entry
from splitmq.transport import InboundMessage
from splitmq.wire import Activation, Deployment, DeployReply, DeployRequest, PlanShape, encode
from splitmq.wire.topics import DEPLOY_REQUESTS, STAGE
from tests.reliability.fleet import Fleet, start_fleet

from .conftest import GraphModel
from .models import POOL

pytestmark = pytest.mark.integration

AGENTS = ["p1", "p2", "p3", "p4", "p5"]
JOIN_WAIT_MS = "400"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    workdir: Path = tmp_path_factory.mktemp("plan2-fleet")
    options = {a: ("--profile", "host", "--join-wait-ms", JOIN_WAIT_MS) for a in AGENTS}
    fleet = start_fleet(workdir, open_entry(POOL, "fork"), AGENTS, agent_options=options)
    yield fleet
    fleet.close()


def deploy(fleet: Fleet, model: str = "fork") -> Deployment:
    request = DeployRequest(
        request_id=uuid.uuid4().hex,
        client_id="reliability-ops",
        model=model,
        replicas=2,
        plans=PlanShape.PARALLEL,
        ready_timeout_s=30,
    )
    fleet.observer.publish(DEPLOY_REQUESTS.name(), encode(request)).wait(10)
    reply = fleet.watch.wait_answer(request.request_id, 40)
    assert isinstance(reply, DeployReply) and reply.ok, reply
    fleet.watch.wait(
        lambda: (d := fleet.deployment(reply.deployment)) is not None and d.epoch >= reply.epoch,
        10,
        "the deployment",
    )
    deployment = fleet.deployment(reply.deployment)
    assert deployment is not None
    return deployment


def client(fleet: Fleet, model: str = "fork") -> Client:
    config = ClientConfig(
        model=model,
        # An attempt outlasts the join's wait, the report and the branch's retry however
        # busy the machine: a whole-request retry is not what the test checks.
        deadline_s=20.0,
        plan_timeout_s=2.0,
        min_attempt_timeout_s=6.0,
        attempt_timeout_margin_s=4.0,
        # One plan for the whole test: the agents it pauses and kills are the ones the
        # first answer ran on (a fresh plan on a busy machine may place them elsewhere).
        plan_ttl_s=600.0,
    )
    made = Client(fleet.url, f"p2-{uuid.uuid4().hex[:6]}", config=config)
    made.start()
    fleet.clients.append(made)
    return made


def log_of(fleet: Fleet, agent_id: str) -> str:
    return (fleet.workdir / f"{agent_id}.log").read_text()


def wait_log(fleet: Fleet, agent_id: str, text: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while text not in log_of(fleet, agent_id):
        assert time.monotonic() < deadline, f"{agent_id} never logged {text!r}"
        time.sleep(0.05)


def test_branches_lost_duplicated_late_and_a_killed_join(fleet: Fleet, fork: GraphModel) -> None:
    deployment = deploy(fleet)
    assert [s.sources is not None for s in deployment.stages] == [True] * 4
    assert len(deployment.stages[3].sources or ()) == 2  # the join
    expected = next(iter(fork.expected.values()))
    (x,) = fork.inputs.values()
    user = client(fleet)
    answer = user.infer(x)
    assert np.array_equal(next(iter(answer.outputs.values())), expected)
    assert {e.stage for e in answer.trace} == {0, 1, 2, 3}

    # A branch lost (its agent paused), a duplicate of the other, then the first, late.
    # The agents the next request goes to are the plan's first at each stage (the plan is
    # kept for the whole test), not those in the first answer's trace: on a busy machine
    # the join may have reported that request's branch missing and it ran on a fallback.
    # Nor are they the deployment's as first published: on a busy machine the coordinator
    # may have found an agent silent and healed the deployment before the plan was made.
    route = {stage: agents[0] for stage, agents in enumerate(answer.plan.route)}
    join, lost = route[3], route[2]
    seen: list[InboundMessage] = []
    fleet.observer.subscribe(STAGE.filter(deployment=deployment.deployment, stage=3), seen.append)
    fleet.pause_agent(lost)
    try:
        pending = user.infer_async(x)
        deadline = time.monotonic() + 10
        while not seen:
            assert time.monotonic() < deadline, "the first branch never reached the join"
            time.sleep(0.02)
        copy = seen[0]
        first = STAGE.decode(copy.payload, topic=copy.topic)
        assert isinstance(first, Activation) and first.source == 1
        fleet.observer.publish(copy.topic, copy.payload).wait(5)
        result = pending.result(timeout=15)
    finally:
        fleet.resume_agent(lost)
    assert np.array_equal(next(iter(result.outputs.values())), expected)
    assert result.record.attempts[-1].outcome == "result" and len(result.record.attempts) == 1
    assert result.plan is not None
    (retried,) = (e.agent_id for e in result.trace if e.stage == 2)
    assert retried != lost and retried in result.plan.route[2], (retried, result.plan.route)
    wait_log(fleet, join, "dropped a duplicate of branch 1")
    wait_log(fleet, join, "dropped a late branch 2")  # the paused agent woke up

    # The join's agent killed: the request goes to the join's fallback.
    fleet.kill_agent(join)
    answer = user.infer(x)
    assert np.array_equal(next(iter(answer.outputs.values())), expected)
    (spare,) = (e.agent_id for e in answer.trace if e.stage == 3)
    assert spare != join and spare in answer.plan.route[3], (spare, answer.plan.route)


def test_the_client_joins_heads_that_answer_it_each(fleet: Fleet, heads: GraphModel) -> None:
    entry = open_entry(POOL, "heads")
    shutil.copytree(entry.path, fleet.pool_dir / "heads" / entry.version)
    (fleet.pool_dir / "heads" / "latest").write_text(entry.version + "\n")
    deployment = deploy(fleet, "heads")
    assert [len(s.targets or ()) for s in deployment.stages] == [2, 1, 1]
    (x,) = heads.inputs.values()
    answer = client(fleet, "heads").infer(x)
    assert answer.outputs.keys() == heads.expected.keys()
    for name, value in heads.expected.items():
        assert np.array_equal(answer.outputs[name], value)
    assert {e.stage for e in answer.trace} == {0, 1, 2}
