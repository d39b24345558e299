"""The coordinator against a real Mosquitto with agent processes of different profiles.

Four agents: a laptop and a "host" (fast), a Raspberry Pi (3x slower) and a nearly flat
phone (5 %, unplugged: below the battery floor). The coordinator runs in the test
process on its own connection; the test is the operator (deploy requests) and the client
(plan requests, activations).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from splitmq.converter import run_model
from splitmq.coordinator.service import Coordinator, CoordinatorConfig
from splitmq.mosquitto import Mosquitto
from splitmq.transport import MqttTransport, parse_broker_url
from splitmq.wire import (
    Activation,
    AgentState,
    AgentStatus,
    Deployment,
    DeployReply,
    DeployRequest,
    Objective,
    Plan,
    PlanRefused,
    PlanRequest,
    Result,
    Tensor,
    encode,
)
from splitmq.wire.topics import (
    DEPLOY_REPLIES,
    DEPLOY_REQUESTS,
    DEPLOYMENTS,
    PLAN_REQUESTS,
    PLANS,
    RESULTS,
    STAGE,
    STATUS,
)
from tests import processes as spawn
from tests.agent.events import Inbox
from tests.data import digits_test

pytestmark = pytest.mark.integration

OPERATOR = "ops"
CLIENT = "carol"
PROFILES = {"laptop-1": "laptop", "host-1": "host", "pi-1": "rpi4", "phone-1": "phone"}


@dataclass
class Fleet:
    broker: Mosquitto
    coordinator: Coordinator
    client: MqttTransport
    inbox: Inbox
    agents: dict[str, subprocess.Popen[bytes]]
    workdir: Path
    entry: object

    def deploy(
        self, timeout_s: float = 60.0, model: str = "digits", **options: object
    ) -> DeployReply:
        request = DeployRequest(
            request_id=uuid.uuid4().hex,
            client_id=OPERATOR,
            model=model,
            **options,  # type: ignore[arg-type]
        )
        self.client.publish(DEPLOY_REQUESTS.name(), encode(request)).wait(10)
        return self.inbox.wait_for(
            DeployReply, lambda r: r.request_id == request.request_id, timeout_s
        )

    def deployment(self, reply: DeployReply) -> Deployment:
        return self.inbox.wait_for(
            Deployment, lambda d: d.deployment == reply.deployment and d.epoch >= reply.epoch, 30
        )

    def plan(self, **options: object) -> Plan | PlanRefused:
        request = PlanRequest(
            request_id=uuid.uuid4().hex,
            client_id=CLIENT,
            model="digits",
            **options,  # type: ignore[arg-type]
        )
        self.client.publish(PLAN_REQUESTS.name(), encode(request)).wait(10)
        return self.inbox.wait_for(
            Plan | PlanRefused,  # type: ignore[arg-type]
            lambda p: p.request_id == request.request_id,
            15,
        )

    def infer(self, plan: Plan, image: np.ndarray) -> Result:
        activation = Activation(
            request_id=os.urandom(16),
            attempt=0,
            deployment=plan.deployment,
            stage=0,
            route=plan.route,
            callback=RESULTS.name(client=CLIENT),
            deadline_ms=int(time.time() * 1000) + 20_000,
            tensors=(Tensor(self.entry.manifest.variants["float32"].inputs[0].name, image),),  # type: ignore[attr-defined]
            client_id=CLIENT,
        )
        topic = STAGE.name(deployment=plan.deployment, stage=0, agent=plan.route[0][0])
        self.client.publish(topic, encode(activation)).wait(10)
        return self.inbox.wait_for(Result, lambda r: r.request_id == activation.request_id, 20)


def pool_of(pool_dir: Path, *entries: object) -> Path:
    """A pool holding exactly ``entries`` (each the latest of its name)."""
    for entry in entries:
        target = pool_dir / entry.name / entry.version  # type: ignore[attr-defined]
        shutil.copytree(entry.path, target)  # type: ignore[attr-defined]
        (target.parent / "latest").write_text(entry.version + "\n")  # type: ignore[attr-defined]
    return pool_dir


@pytest.fixture(scope="module")
def mobilenet(application_entry: Callable[[str, int], object]) -> object:
    return application_entry("MobileNetV3Small", 96)


@pytest.fixture(scope="module")
def fleet(
    mosquitto: Mosquitto,
    digits_pool: object,
    mobilenet: object,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Fleet]:
    workdir = tmp_path_factory.mktemp("coordinator-fleet")
    pool_dir = pool_of(workdir / "pool", digits_pool, mobilenet)
    url = mosquitto.url()
    client = MqttTransport(parse_broker_url(url))
    client.start()
    inbox = Inbox(client, STATUS.filter())
    for topic in (
        DEPLOY_REPLIES.name(client=OPERATOR),
        PLANS.name(client=CLIENT),
        RESULTS.name(client=CLIENT),
        DEPLOYMENTS.filter(),
    ):
        inbox.subscribe(topic)
    coordinator = Coordinator(
        MqttTransport(parse_broker_url(url)),
        pool_dir,
        CoordinatorConfig(watch_period_s=0.3),
    )
    coordinator.start()
    agents = {}
    for agent_id, profile in PROFILES.items():
        extra = ["--profile", profile]
        if profile == "phone":
            extra += ["--battery-pct", "5"]
        agents[agent_id] = spawn.start_agent(url, agent_id, workdir, *extra)
    try:
        for agent_id in agents:
            inbox.wait_for(AgentStatus, online(agent_id), 40)
        deadline = time.monotonic() + 10
        while set(coordinator.registry.online_ids()) != set(agents):
            assert time.monotonic() < deadline, coordinator.registry.online_ids()
            time.sleep(0.05)
        yield Fleet(mosquitto, coordinator, client, inbox, agents, workdir, digits_pool)
    finally:
        spawn.stop(list(agents.values()))
        coordinator.stop()
        client.close()


def online(agent_id: str) -> Callable[[AgentStatus], bool]:
    return lambda s: s.agent_id == agent_id and s.state is AgentState.ONLINE


def expected(entry: object, image: np.ndarray) -> np.ndarray:
    model = entry.variant_path("float32")  # type: ignore[attr-defined]
    (out,) = run_model(model, [image]).values()
    return out


def test_deploy_gives_the_slow_agent_less_work_and_leaves_the_flat_one_out(
    fleet: Fleet, mobilenet: object
) -> None:
    # Balanced for throughput: for latency alone the exact answer puts all the work on
    # whichever fast agent measured quicker, and the other two stages hold no compute.
    reply = fleet.deploy(
        model=mobilenet.name,  # type: ignore[attr-defined]
        stages=3,
        objective=Objective.THROUGHPUT,
    )
    assert reply.ok, reply.message
    deployment = fleet.deployment(reply)
    hosts = [s.replicas[0] for s in deployment.stages]
    assert sorted(hosts) == ["host-1", "laptop-1", "pi-1"]  # not the phone: 5 %, unplugged
    variant = mobilenet.manifest.variants["float32"]  # type: ignore[attr-defined]
    flops = {
        s.replicas[0]: sum(op.flops for op in variant.operators[s.start_op : s.end_op])
        for s in deployment.stages
    }
    # The Pi computes 3x slower than the laptop and the host: it gets the least work.
    assert flops["pi-1"] < min(flops["laptop-1"], flops["host-1"]), reply.message


def test_a_deployed_model_answers_exactly_like_the_unsplit_one(fleet: Fleet) -> None:
    reply = fleet.deploy(stages=3)
    assert reply.ok, reply.message
    deployment = fleet.deployment(reply)
    image = digits_test()[0][:1]
    plan = fleet.plan()
    assert isinstance(plan, Plan) and plan.epoch == deployment.epoch
    result = fleet.infer(plan, image)
    (out,) = result.tensors
    np.testing.assert_array_equal(out.array, expected(fleet.entry, image))
    assert [t.agent_id for t in result.trace] == [r[0] for r in plan.route]


def test_gates_refuse_a_deployment_with_the_figures(fleet: Fleet) -> None:
    reply = fleet.deploy(stages=2, max_latency_ms=0.01)
    assert not reply.ok
    assert "max_latency_ms" in reply.message and "ms" in reply.message


def test_impossible_budgets_get_a_clear_refusal(fleet: Fleet) -> None:
    reply = fleet.deploy(stages=2, replicas=2)
    assert reply.ok, reply.message
    energy = fleet.plan(energy_j=1e-9)
    assert isinstance(energy, PlanRefused) and energy.constraint == "energy_j"
    fidelity = fleet.plan(min_fidelity=1.5)
    assert isinstance(fidelity, PlanRefused) and fidelity.constraint == "min_fidelity"
    late = fleet.plan(max_latency_ms=0.001)
    assert isinstance(late, PlanRefused) and late.constraint == "max_latency_ms"
    unknown = fleet.plan(version="nope")
    assert isinstance(unknown, PlanRefused) and unknown.constraint == "model"


def test_a_killed_agent_is_replaced_and_the_rest_keeps_serving(fleet: Fleet) -> None:
    reply = fleet.deploy(stages=2, replicas=1)
    assert reply.ok, reply.message
    before = fleet.deployment(reply)
    victim = before.stages[0].replicas[0]
    survivor = before.stages[1].replicas[0]
    fleet.agents[victim].send_signal(signal.SIGKILL)
    fleet.agents[victim].wait(10)
    healed = fleet.inbox.wait_for(
        Deployment,
        lambda d: d.epoch > before.epoch and victim not in d.stages[0].replicas,
        40,
    )
    assert healed.stages[0].replicas and healed.stages[0].replicas[0] != "phone-1"
    assert healed.stages[1].replicas == (survivor,)  # the other stage was left alone
    assert healed.stages[0].digest == before.stages[0].digest
    plan = fleet.plan()
    assert isinstance(plan, Plan) and victim not in {a for s in plan.route for a in s}
    image = digits_test()[0][1:2]
    (out,) = fleet.infer(plan, image).tensors
    np.testing.assert_array_equal(out.array, expected(fleet.entry, image))


def test_rolling_back_to_an_earlier_version_is_one_deploy(fleet: Fleet) -> None:
    from splitmq.converter import convert

    first = fleet.entry.version  # type: ignore[attr-defined]
    source = fleet.entry.variant_path("float32")  # type: ignore[attr-defined]
    rng = np.random.default_rng(5)
    newer = convert(
        source,
        name="digits",
        pool_dir=fleet.coordinator.pool.pool_dir,
        calibration=rng.uniform(0, 1, (4, 8, 8, 1)).astype(np.float32),
    )
    assert newer.version != first
    latest = fleet.deploy(stages=2)
    assert latest.ok, latest.message
    assert fleet.deployment(latest).version == newer.version
    rollback = fleet.deploy(stages=2, version=first)
    assert rollback.ok, rollback.message
    back = fleet.deployment(rollback)
    assert back.version == first and back.epoch > fleet.deployment(latest).epoch
    plan = fleet.plan()
    assert isinstance(plan, Plan) and plan.version == first
    image = digits_test()[0][2:3]
    (out,) = fleet.infer(plan, image).tensors
    np.testing.assert_array_equal(out.array, expected(fleet.entry, image))
