"""The whole fleet on broker-config/secure.conf: TLS, no anonymous access, an ACL per role.

:func:`splitmq.secure_setup.make_secure_setup` makes a CA and credentials with the
scripts of broker-config/; a coordinator and two agents run as processes with their own
credentials, an operator deploys, a client infers over TLS. Then each role tries what
its role forbids, with its real credentials, while the fleet is running: an agent
cannot command another agent, answer plans, publish deployments or read results that
are not its to send; a client cannot impersonate an agent, command one, deploy, or
read another client's results.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from splitmq.client import Client, ClientConfig
from splitmq.errors import TransportError
from splitmq.mosquitto import Mosquitto
from splitmq.secure_setup import SecureSetup, make_secure_setup
from splitmq.transport import (
    ConnectionRefused,
    InboundMessage,
    MqttTransport,
    PublishRefused,
    TransportConfig,
)
from splitmq.wire import (
    AgentState,
    AgentStatus,
    Deployment,
    DeployReply,
    DeployRequest,
    Plan,
    PlanRequest,
    Telemetry,
    UnloadShard,
    decode,
    encode,
)
from splitmq.wire.topics import (
    COMMANDS,
    DEFAULT_NAMESPACE,
    DEPLOY_REPLIES,
    DEPLOY_REQUESTS,
    DEPLOYMENTS,
    EVENTS,
    PLAN_REQUESTS,
    PLANS,
    RESULTS,
    STATUS,
    TELEMETRY,
)
from tests import processes as spawn

from .fleet import DEPLOYMENT, Reference

pytestmark = pytest.mark.integration

AGENTS = ["pi-1", "phone-1"]
USERS = [
    ("coordinator", "coordinator"),
    ("operator", "ops"),
    ("agent", "pi-1"),
    ("agent", "phone-1"),
    ("client", "alice"),
    ("client", "bob"),
]


@dataclass
class SecureFleet:
    setup: SecureSetup
    broker: Mosquitto
    processes: dict[str, subprocess.Popen[bytes]]
    deployment: Deployment
    workdir: Path

    def connect(self, user: str) -> MqttTransport:
        transport = MqttTransport(self.setup.access(user).transport_config())
        transport.start()
        return transport


def flush(connection: MqttTransport, topic: str) -> None:
    """Return once everything the broker had for ``connection`` has arrived: a marker it
    publishes on ``topic`` (one it may read and write) comes back after all of it."""
    marker = Got()
    connection.subscribe(topic, marker)
    token = os.urandom(8)
    connection.publish(topic, token, qos=1).wait()
    marker.wait(lambda messages: any(p == token for _, p in messages))
    connection.unsubscribe(topic)


class Got:
    """Messages arriving on a subscription, decoded when they can be."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes | bytearray]] = []
        self._cond = threading.Condition()

    def __call__(self, message: InboundMessage) -> None:
        with self._cond:
            self.messages.append((message.topic, message.payload))
            self._cond.notify_all()

    def wait(self, predicate: object, timeout_s: float = 15.0) -> None:
        with self._cond:
            assert self._cond.wait_for(lambda: predicate(self.messages), timeout_s)  # type: ignore[operator]


@pytest.fixture(scope="module")
def secure_fleet(
    digits_pool: object, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SecureFleet]:
    workdir = tmp_path_factory.mktemp("secure-fleet")
    setup = make_secure_setup(workdir / "secure", USERS)
    pool_dir = workdir / "pool"
    entry = digits_pool
    target = pool_dir / entry.name / entry.version  # type: ignore[attr-defined]
    shutil.copytree(entry.path, target)  # type: ignore[attr-defined]
    (target.parent / "latest").write_text(entry.version + "\n")  # type: ignore[attr-defined]
    broker = setup.mosquitto(workdir / "broker").start()
    processes: dict[str, subprocess.Popen[bytes]] = {}
    operator = None
    try:
        coordinator = setup.access("coordinator")
        processes["coordinator"] = spawn.start_coordinator(
            coordinator.url, pool_dir, workdir, *coordinator.cli_args()[2:]
        )
        for agent_id in AGENTS:
            access = setup.access(agent_id)
            processes[agent_id] = spawn.start_agent(
                access.url, agent_id, workdir, "--profile", "host", *access.cli_args()[2:]
            )
        operator = MqttTransport(setup.access("ops").transport_config())
        operator.start()
        got = Got()
        operator.subscribe(DEPLOY_REPLIES.name(client="ops"), got)
        operator.subscribe(STATUS.filter(), got)
        operator.subscribe(DEPLOYMENTS.filter(), got)

        def online(messages: list[tuple[str, bytes | bytearray]]) -> bool:
            statuses = [decode(p) for t, p in messages if "/status" in t and p]
            up = {s.agent_id for s in statuses if s.state is AgentState.ONLINE}  # type: ignore[attr-defined]
            return up >= set(AGENTS)

        got.wait(online, 40)
        request = DeployRequest(uuid.uuid4().hex, "ops", "digits", stages=2, replicas=1)
        # The coordinator may still be subscribing: ask until it answers.
        deadline = time.monotonic() + 40
        reply = None
        while reply is None and time.monotonic() < deadline:
            operator.publish(DEPLOY_REQUESTS.name(), encode(request)).wait(10)
            try:
                got.wait(lambda ms: any("/control" in t for t, _ in ms), 3)
            except AssertionError:
                continue
            reply = next(decode(p) for t, p in got.messages if "/control" in t)
        assert isinstance(reply, DeployReply) and reply.ok, reply
        got.wait(lambda ms: any("/deployments/" in t for t, _ in ms), 10)
        deployment = next(decode(p) for t, p in got.messages if "/deployments/" in t)
        assert isinstance(deployment, Deployment)
        yield SecureFleet(setup, broker, processes, deployment, workdir)
    finally:
        if operator is not None:
            operator.close()
        spawn.stop(list(processes.values()))
        broker.stop()


def test_the_fleet_serves_a_client_over_tls_with_per_role_credentials(
    secure_fleet: SecureFleet, reference: Reference
) -> None:
    alice = secure_fleet.setup.access("alice")
    with Client(alice.transport_config(), "alice", config=ClientConfig(model="digits")) as client:
        for index in range(5):
            result = client.infer(reference.images[index])
            assert reference.check(index, result.outputs)
        assert [e.agent_id for e in result.trace] == [
            s.replicas[0] for s in secure_fleet.deployment.stages
        ]
    watcher = secure_fleet.connect("ops")
    try:
        got = Got()
        watcher.subscribe(TELEMETRY.filter(), got)

        def probed(messages: list[tuple[str, bytes | bytearray]]) -> bool:
            seen = {}
            for _, payload in messages:
                telemetry = decode(payload, expect=Telemetry)
                seen[telemetry.agent_id] = telemetry.broker_rtt_ms
            return all(seen.get(a) is not None for a in AGENTS)

        got.wait(probed, 10)  # the agents' broker round-trip probe is allowed
    finally:
        watcher.close()


def test_anonymous_and_plain_tcp_connections_are_refused(secure_fleet: SecureFleet) -> None:
    port = secure_fleet.setup.port
    with pytest.raises(ConnectionRefused):
        MqttTransport(
            TransportConfig(port=port, tls=True, ca_certs=secure_fleet.setup.ca_certs)
        ).start(timeout_s=5)
    alice = secure_fleet.setup.access("alice")
    with pytest.raises(TransportError):
        MqttTransport(
            TransportConfig(
                port=port, username="alice", password=alice.password, reconnect_min_s=0.05
            )
        ).start(timeout_s=2)


def test_an_agent_cannot_command_plan_deploy_or_read_results(
    secure_fleet: SecureFleet, reference: Reference
) -> None:
    pi = secure_fleet.connect("pi-1")
    coordinator = secure_fleet.connect("coordinator")
    try:
        seen = Got()
        coordinator.subscribe(COMMANDS.filter(), seen)
        coordinator.subscribe(PLANS.filter(), seen)
        coordinator.subscribe(DEPLOYMENTS.filter(), seen)
        stolen = Got()
        pi.subscribe(RESULTS.filter(), stolen)  # every client's results, if it could
        forged_unload = encode(UnloadShard("forged", "coordinator", DEPLOYMENT, 1))
        forbidden = {
            COMMANDS.name(agent="phone-1"): forged_unload,
            PLANS.name(client="alice"): b"a plan",
            DEPLOYMENTS.name(deployment=DEPLOYMENT): b"a deployment",
            DEPLOY_REQUESTS.name(): b"a deploy request",
        }
        for topic, payload in forbidden.items():
            with pytest.raises(PublishRefused, match="Not authorized"):
                pi.publish(topic, payload).wait()
        alice = secure_fleet.setup.access("alice")
        with Client(alice.transport_config(), "alice", config=ClientConfig(model="digits")) as c:
            assert reference.check(7, c.infer(reference.images[7]).outputs)
        # Whatever the broker had for pi or the coordinator has arrived by now.
        flush(pi, COMMANDS.name(agent="pi-1"))
        flush(coordinator, f"{DEFAULT_NAMESPACE}/flush/{uuid.uuid4().hex}")
        assert stolen.messages == [], "an agent read a client's results"
        forged = [t for t, p in seen.messages if p in forbidden.values()]
        assert forged == [], f"forbidden messages arrived: {forged}"
        assert secure_fleet.processes["phone-1"].poll() is None
    finally:
        pi.close()
        coordinator.close()


def test_a_client_cannot_impersonate_an_agent_nor_command_nor_read_others(
    secure_fleet: SecureFleet, reference: Reference
) -> None:
    bob = secure_fleet.connect("bob")
    coordinator = secure_fleet.connect("coordinator")
    try:
        seen = Got()
        for topic in (STATUS.filter(), TELEMETRY.filter(), EVENTS.filter(), COMMANDS.filter()):
            coordinator.subscribe(topic, seen)
        fake_status = encode(AgentStatus("pi-1", AgentState.OFFLINE))
        forged_unload = encode(UnloadShard("forged", "coordinator", DEPLOYMENT, 0))
        forbidden = {
            STATUS.name(agent="pi-1"): fake_status,
            TELEMETRY.name(agent="pi-1"): b"fake telemetry",
            EVENTS.name(agent="pi-1"): b"fake event",
            COMMANDS.name(agent="pi-1"): forged_unload,
            DEPLOYMENTS.name(deployment=DEPLOYMENT): b"fake deployment",
            DEPLOY_REQUESTS.name(): b"fake deploy request",
        }
        for topic, payload in forbidden.items():
            with pytest.raises(PublishRefused, match="Not authorized"):
                bob.publish(topic, payload).wait()
        peeked = Got()
        bob.subscribe(RESULTS.name(client="alice"), peeked)
        bob.subscribe(PLANS.name(client="alice"), peeked)
        alice = secure_fleet.setup.access("alice")
        with Client(alice.transport_config(), "alice", config=ClientConfig(model="digits")) as c:
            assert reference.check(9, c.infer(reference.images[9]).outputs)
        # Whatever the broker had for bob or the coordinator has arrived by now: bob's
        # plan request is answered (refused) after it.
        asked = Got()
        bob.subscribe(PLANS.name(client="bob"), asked)
        probe = PlanRequest(request_id="flush", client_id="bob", model="no-such-model")
        bob.publish(PLAN_REQUESTS.name(), encode(probe), qos=1).wait()
        asked.wait(lambda messages: any(b"flush" in p for _, p in messages))
        flush(coordinator, f"{DEFAULT_NAMESPACE}/flush/{uuid.uuid4().hex}")
        assert peeked.messages == [], "bob read alice's plan or results"
        assert not [t for t, p in seen.messages if p in forbidden.values()]
        # pi-1 never went offline, whatever bob said, and still serves.
        assert secure_fleet.processes["pi-1"].poll() is None
        with Client(alice.transport_config(), "alice", config=ClientConfig(model="digits")) as c:
            result = c.infer(reference.images[3])
            assert reference.check(3, result.outputs) and isinstance(result.plan, Plan)
    finally:
        bob.close()
        coordinator.close()
    for name in ("coordinator", *AGENTS):
        assert secure_fleet.processes[name].poll() is None
