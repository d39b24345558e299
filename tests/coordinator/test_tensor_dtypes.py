"""Agents that pass only some tensor dtypes (a page's LiteRT.js) get only the stages they
can serve: the deployer and the healer over the in-memory transport, with fake agents
that answer load commands the way their runtimes do.

The page-like agent declares float32, int32 and uint8 in its status and refuses a shard
whose boundary carries another dtype, as ``web/src/runtime.js`` does; the Python-like
agent declares nothing (any dtype). The digits model's int8 variant takes float32 in and
out, and its cut points' frontiers are int8.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import pytest

from splitmq.coordinator.commands import CommandChannel
from splitmq.coordinator.deployer import Deployer, DeployerConfig
from splitmq.coordinator.model_pool import ModelPool
from splitmq.coordinator.registry import Registry
from splitmq.transport import InboundMessage, MemoryBroker, MemoryTransport
from splitmq.wire import (
    AgentState,
    AgentStatus,
    CommandReply,
    Deployment,
    DeployReply,
    DeployRequest,
    LoadShard,
    ShardReady,
    StageSpec,
    TensorSpec,
    UnloadShard,
)
from splitmq.wire.topics import COMMANDS, EVENTS, STATUS
from tests.helpers import wait_until

PAGE_DTYPES = ("float32", "int32", "uint8")


@dataclass
class FakeAgent:
    """Answers the coordinator's commands; ``tensor_dtypes`` None passes any dtype."""

    agent_id: str
    transport: MemoryTransport
    tensor_dtypes: tuple[str, ...] | None
    runtime: str
    loads: list[LoadShard] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)

    def start(self) -> None:
        self.transport.start()
        self.transport.subscribe(COMMANDS.name(agent=self.agent_id), self._on_command)
        self.announce(AgentState.ONLINE)

    def announce(self, state: AgentState) -> None:
        status = AgentStatus(
            self.agent_id,
            state,
            runtime=self.runtime,
            speed_gflops=1.0,
            tensor_dtypes=self.tensor_dtypes,
        )
        STATUS.publish(self.transport, status, agent=self.agent_id)

    def _on_command(self, message: InboundMessage) -> None:
        command = COMMANDS.decode(message.payload)
        if isinstance(command, UnloadShard):
            self._answer(CommandReply(command.command_id, self.agent_id, ok=True))
        if not isinstance(command, LoadShard):
            return
        self.loads.append(command)
        for tensor in (*command.inputs, *command.outputs):
            if self.tensor_dtypes is not None and tensor.dtype not in self.tensor_dtypes:
                reason = f"{self.runtime} cannot pass the {tensor.dtype} tensor {tensor.name}"
                self.refused.append(reason)
                self._answer(CommandReply(command.command_id, self.agent_id, False, reason))
                return
        ready = ShardReady(
            command.command_id,
            self.agent_id,
            command.deployment,
            command.stage,
            command.digest,
            self.runtime,
            bench_ms=1.0,
        )
        self._answer(ready)

    def _answer(self, answer: CommandReply | ShardReady) -> None:
        EVENTS.publish(self.transport, answer, agent=self.agent_id)


@dataclass
class Coordinated:
    """A registry and a deployer fed over the in-memory broker, as the service feeds them."""

    broker: MemoryBroker
    registry: Registry
    deployer: Deployer
    published: dict[str, Deployment]
    agents: dict[str, FakeAgent] = field(default_factory=dict)

    def agent(self, agent_id: str, tensor_dtypes: tuple[str, ...] | None = None) -> FakeAgent:
        runtime = "litert.js" if tensor_dtypes is not None else "ai-edge-litert"
        agent = FakeAgent(agent_id, self.broker.transport(agent_id), tensor_dtypes, runtime)
        agent.start()
        self.agents[agent_id] = agent
        return agent

    def deploy(self, variant: str, **asked: object) -> DeployReply:
        request = DeployRequest(
            request_id="r",
            client_id="ops",
            model="digits",
            variant=variant,
            ready_timeout_s=10.0,
            **asked,  # type: ignore[arg-type]
        )
        return self.deployer.deploy(request)

    def loaded_by(self, agent_id: str, deployment: str) -> set[int]:
        return {c.stage for c in self.agents[agent_id].loads if c.deployment == deployment}


@pytest.fixture
def coordinated(digits_pool: object) -> Iterator[Coordinated]:
    broker = MemoryBroker()
    transport = broker.transport("coordinator")
    transport.start()
    registry = Registry(clock=lambda: 100.0)  # no telemetry needed: time stands still

    def on_status(message: InboundMessage) -> None:
        registry.on_status(STATUS.decode(message.payload))

    commands = CommandChannel(transport, issuer="coordinator")
    transport.subscribe(STATUS.filter(), on_status)

    def on_event(message: InboundMessage) -> None:
        commands.on_event(message)

    transport.subscribe(EVENTS.filter(), on_event)
    published: dict[str, Deployment] = {}

    def publish(deployment: Deployment) -> None:
        published[deployment.deployment] = deployment

    pool = ModelPool(digits_pool.path.parents[1])  # type: ignore[attr-defined]
    deployer = Deployer(
        pool,
        registry,
        commands,
        publish=publish,
        deployments=lambda: dict(published),
        config=DeployerConfig(ready_timeout_s=10.0),
    )
    yield Coordinated(broker, registry, deployer, published)
    transport.close()


def wait_for_fleet(env: Coordinated, *agent_ids: str) -> None:
    wait_until(lambda: set(env.registry.online_ids()) == set(agent_ids), what=f"{agent_ids} online")


def test_the_registry_carries_the_dtypes_an_agent_declared(coordinated: Coordinated) -> None:
    coordinated.agent("page-1", PAGE_DTYPES)
    coordinated.agent("py-1")
    wait_for_fleet(coordinated, "page-1", "py-1")
    views = coordinated.registry.views()
    assert views["page-1"].tensor_dtypes == PAGE_DTYPES
    assert views["page-1"].runtime == "litert.js"
    assert views["py-1"].tensor_dtypes is None  # declared nothing: any


def test_an_int8_deployment_goes_to_the_agents_that_pass_int8(coordinated: Coordinated) -> None:
    page, python = coordinated.agent("page-1", PAGE_DTYPES), coordinated.agent("py-1")
    wait_for_fleet(coordinated, "page-1", "py-1")
    reply = coordinated.deploy("int8")
    assert reply.ok, reply.message
    deployment = coordinated.published["digits-int8"]
    assert {a for s in deployment.stages for a in s.replicas} == {"py-1"}
    assert page.loads == [] and python.loads  # the page was never asked
    assert reply.message.endswith(
        "left out: page-1 (litert.js) passes only float32, int32, uint8; "
        "int8 variant boundaries carry int8"
    )
    # Two stages need two agents that pass int8: the refusal says why the page is not one.
    assert coordinated.deploy("int8", stages=2).message == (
        "2 stages need 2 distinct agents, but only 1 is eligible: ask for fewer stages; "
        "left out: page-1 (litert.js) passes only float32, int32, uint8; int8 variant "
        "boundaries carry int8 [agents]"
    )


def test_a_float32_deployment_may_use_pages_and_python_agents(coordinated: Coordinated) -> None:
    coordinated.agent("page-1", PAGE_DTYPES), coordinated.agent("py-1")
    wait_for_fleet(coordinated, "page-1", "py-1")
    reply = coordinated.deploy("float32", stages=2, replicas=2)
    assert reply.ok, reply.message
    deployment = coordinated.published["digits-float32"]
    assert [set(s.replicas) for s in deployment.stages] == [{"page-1", "py-1"}] * 2
    assert coordinated.loaded_by("page-1", "digits-float32") == {0, 1}
    assert coordinated.agents["page-1"].refused == []
    assert "left out" not in reply.message


def test_a_fleet_of_pages_refuses_int8_and_suggests_float32(coordinated: Coordinated) -> None:
    coordinated.agent("page-1", PAGE_DTYPES), coordinated.agent("page-2", PAGE_DTYPES)
    wait_for_fleet(coordinated, "page-1", "page-2")
    reply = coordinated.deploy("int8")
    assert not reply.ok
    assert reply.message == (
        "no agent online can pass the tensors at the boundaries of digits int8: "
        "page-1 (litert.js) passes only float32, int32, uint8; int8 variant boundaries "
        "carry int8; page-2 (litert.js) passes only float32, int32, uint8; int8 variant "
        "boundaries carry int8: deploy the float32 variant (`splitmq deploy digits "
        "--variant float32`), or start an agent whose runtime passes int8 (`splitmq agent`)"
    )
    assert coordinated.agents["page-1"].loads == coordinated.agents["page-2"].loads == []
    assert coordinated.published == {}
    # The same pages take the float32 variant.
    assert coordinated.deploy("float32").ok


def test_healing_an_int8_stage_never_picks_a_page(coordinated: Coordinated) -> None:
    for page in ("page-1", "page-2"):
        coordinated.agent(page, PAGE_DTYPES)
    coordinated.agent("py-1"), coordinated.agent("py-2")
    wait_for_fleet(coordinated, "page-1", "page-2", "py-1", "py-2")
    assert coordinated.deploy("int8", stages=2, pin_first="py-1", pin_last="py-2").ok
    deployed = coordinated.published["digits-int8"]
    assert [s.replicas for s in deployed.stages] == [("py-1",), ("py-2",)]

    coordinated.agents["py-1"].announce(AgentState.OFFLINE)
    wait_until(lambda: not coordinated.registry.online("py-1"), what="py-1 offline")
    assert coordinated.deployer.needs_healing(deployed)
    healed = coordinated.deployer.heal(deployed)
    assert healed is not None
    # Stage 0 moves to the only other agent that passes int8, though it hosts stage 1.
    assert [s.replicas for s in healed.stages] == [("py-2",), ("py-2",)]
    for page in ("page-1", "page-2"):
        assert coordinated.agents[page].loads == []

    # With no agent left that passes int8, the stage waits for one: no page is tried.
    coordinated.agents["py-2"].announce(AgentState.OFFLINE)
    wait_until(lambda: not coordinated.registry.online("py-2"), what="py-2 offline")
    assert coordinated.deployer.heal(healed) is None
    for page in ("page-1", "page-2"):
        assert coordinated.agents[page].loads == []


def int8_stage(replicas: tuple[str, ...]) -> StageSpec:
    frontier = TensorSpec("dense/Relu", (1, 32), "int8", scale=0.05, zero_point=-128)
    image = TensorSpec("serving_default_input:0", (1, 64), "float32")
    return StageSpec(0, 0, 3, "ab" * 32, 1000, (image,), (frontier,), replicas)


def test_spares_are_those_that_pass_the_stages_own_tensors() -> None:
    registry = Registry(clock=lambda: 100.0)
    for agent, dtypes in (("page-1", PAGE_DTYPES), ("py-1", None), ("gone", None)):
        registry.on_status(AgentStatus(agent, AgentState.ONLINE, tensor_dtypes=dtypes))
    stage = int8_stage(("gone",))
    deployment = Deployment("d", "digits", "v1", "int8", 1, (stage,))
    deployer = Deployer(
        None,  # type: ignore[arg-type]  # not needed to judge health
        registry,
        None,  # type: ignore[arg-type]
        publish=lambda _d: None,
        deployments=dict,
    )
    registry.on_status(AgentStatus("gone", AgentState.OFFLINE))
    assert deployer._spares(stage, deployment, registry.views(), exclude=set()) == ["py-1"]
    float_stage = replace(stage, outputs=(replace(stage.outputs[0], dtype="float32"),))
    spares = deployer._spares(float_stage, deployment, registry.views(), exclude=set())
    assert sorted(spares) == ["page-1", "py-1"]
