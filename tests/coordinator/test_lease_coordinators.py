"""Three coordinators and three agents over the in-memory broker: one leads.

The lease renews every 0.2 s here (expiry 0.6 s), so elections take a second or two.
"""

from __future__ import annotations

import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from splitmq.agent import Agent, AgentConfig, agent_will, load_profile
from splitmq.agent.energy import BatteryMode
from splitmq.coordinator.lease import EPOCH_STRIDE, LeaseConfig, lease_will, term_of_epoch
from splitmq.coordinator.service import Coordinator, CoordinatorConfig
from splitmq.transport import InboundMessage, MemoryBroker, MemoryTransport
from splitmq.wire import Deployment, DeployReply, DeployRequest
from splitmq.wire.topics import DEPLOY_REPLIES, DEPLOY_REQUESTS, DEPLOYMENTS
from tests.helpers import Periodic

LEASE = LeaseConfig(period_s=0.2)
OPERATOR = "ops"


@dataclass
class Cluster:
    broker: MemoryBroker
    pool_dir: Path
    workdir: Path
    coordinators: list[Coordinator] = field(default_factory=list)
    agents: dict[str, Agent] = field(default_factory=dict)
    replies: list[DeployReply] = field(default_factory=list)
    deployments: list[Deployment] = field(default_factory=list)
    operator: MemoryTransport | None = None
    changed: threading.Condition = field(default_factory=threading.Condition)

    def coordinator(self, name: str, **overrides: Any) -> Coordinator:
        client_id = f"coordinator-{name}-{uuid.uuid4().hex[:4]}"
        transport = self.broker.transport(client_id, will=lease_will(client_id, LEASE))
        config = CoordinatorConfig(watch_period_s=0.1, lease=LEASE, reconnect_grace_s=1.0)
        config = replace(config, **overrides)
        coordinator = Coordinator(transport, self.pool_dir, config)
        coordinator.start()
        self.coordinators.append(coordinator)
        return coordinator

    def agent(self, agent_id: str) -> Agent:
        config = AgentConfig(
            agent_id=agent_id,
            profile=load_profile("host"),
            cache_dir=self.workdir / agent_id,
            xnnpack=False,
            telemetry_period_s=0.1,
            bench_runs=2,
            battery=BatteryMode("simulated"),
            threads=1,
        )
        agent = Agent(config, self.broker.transport(f"agent-{agent_id}", will=agent_will(config)))
        agent.start()
        self.agents[agent_id] = agent
        return agent

    def listen(self) -> None:
        self.operator = self.broker.transport("operator")
        self.operator.start()
        self.operator.subscribe(DEPLOY_REPLIES.name(client=OPERATOR), self._on_reply)
        self.operator.subscribe(DEPLOYMENTS.filter(), self._on_deployment)

    def _on_reply(self, message: InboundMessage) -> None:
        with self.changed:
            self.replies.append(DEPLOY_REPLIES.decode(message.payload))
            self.changed.notify_all()

    def _on_deployment(self, message: InboundMessage) -> None:
        with self.changed:
            self.deployments.append(DEPLOYMENTS.decode(message.payload))
            self.changed.notify_all()

    def wait(self, condition: Callable[[], Any], timeout_s: float, what: str) -> Any:
        deadline = time.monotonic() + timeout_s
        with self.changed:
            while not (found := condition()):
                left = deadline - time.monotonic()
                assert left > 0, f"timed out waiting for {what}"
                self.changed.wait(min(left, 0.05))
        return found

    def leaders(self) -> list[Coordinator]:
        return [c for c in self.coordinators if c.lease.is_leader()]

    def leader(self, timeout_s: float = 10.0) -> Coordinator:
        found: list[Coordinator] = self.wait(self.leaders, timeout_s, "a leader")
        assert len(found) == 1, [c.transport.client_id for c in found]
        return found[0]

    def deploy(self, **options: Any) -> str:
        assert self.operator is not None
        request = DeployRequest(uuid.uuid4().hex, OPERATOR, "digits", **options)
        DEPLOY_REQUESTS.publish(self.operator, request)
        return request.request_id

    def reply(self, request_id: str, timeout_s: float = 30.0) -> DeployReply:
        reply: DeployReply = self.wait(
            lambda: next((r for r in self.replies if r.request_id == request_id), None),
            timeout_s,
            f"the reply to {request_id}",
        )
        return reply


@pytest.fixture
def cluster(digits_pool: Any, tmp_path: Path) -> Iterator[Cluster]:
    pool_dir = tmp_path / "pool"
    shutil.copytree(digits_pool.path.parents[1], pool_dir)
    cluster = Cluster(MemoryBroker(), pool_dir, tmp_path)
    cluster.listen()
    for agent_id in ("a", "b", "c"):
        cluster.agent(agent_id)
    for name in ("x", "y", "z"):
        cluster.coordinator(name)
    yield cluster
    for coordinator in cluster.coordinators:
        coordinator.stop()
    for agent in cluster.agents.values():
        agent.stop()


class LeaderSampler(Periodic):
    """Counts the coordinators that lead, every few milliseconds, on a thread."""

    def __init__(self, cluster: Cluster):
        super().__init__(0.005)
        self.cluster = cluster
        self.most = 0

    def tick(self) -> None:
        self.most = max(self.most, len(self.cluster.leaders()))


def test_requests_to_any_coordinator_are_carried_out_once_by_the_leader(
    cluster: Cluster,
) -> None:
    with LeaderSampler(cluster) as sampler:
        leader = cluster.leader()
        # The shared subscription hands requests round-robin: followers get some.
        requests = [cluster.deploy(stages=2) for _ in range(3)]
        replies = [cluster.reply(r) for r in requests]
    assert all(r.ok for r in replies), [r.message for r in replies]
    epochs = sorted(r.epoch for r in replies)  # in the order the leader got them
    assert epochs == list(range(epochs[0], epochs[0] + 3)), "one epoch each, none twice"
    assert {term_of_epoch(e) for e in epochs} == {leader.lease.term}
    assert len(cluster.replies) == 3, "one reply per request"
    assert sampler.most == 1


def test_a_new_leader_heals_after_the_leader_and_an_agent_vanish(cluster: Cluster) -> None:
    leader = cluster.leader()
    reply = cluster.reply(cluster.deploy(stages=2))
    assert reply.ok, reply.message
    deployed = cluster.wait(
        lambda: next((d for d in cluster.deployments if d.epoch == reply.epoch), None),
        10,
        "the deployment",
    )
    victim = deployed.stages[0].replicas[0]
    term = leader.lease.term
    started = time.monotonic()
    assert isinstance(leader.transport, MemoryTransport)
    leader.transport.crash()  # the broker publishes its will: the lease is released
    leader.stop()
    cluster.agents[victim].transport.crash()  # type: ignore[attr-defined]
    cluster.agents.pop(victim).stop()
    healed = cluster.wait(
        lambda: next(
            (
                d
                for d in cluster.deployments
                if d.epoch > reply.epoch and all(victim not in s.replicas for s in d.stages)
            ),
            None,
        ),
        15,
        "a healed deployment",
    )
    new_leader = cluster.leader()
    assert new_leader is not leader
    assert term_of_epoch(healed.epoch) == new_leader.lease.term > term
    assert healed.epoch >= (term + 1) * EPOCH_STRIDE
    assert time.monotonic() - started < 15


def test_the_leader_advises_a_longer_telemetry_period_to_a_large_fleet(
    digits_pool: Any, tmp_path: Path
) -> None:
    pool_dir = tmp_path / "pool"
    shutil.copytree(digits_pool.path.parents[1], pool_dir)
    cluster = Cluster(MemoryBroker(), pool_dir, tmp_path)
    agents = [cluster.agent(agent_id) for agent_id in ("a", "b", "c")]
    # A budget of 10 telemetry messages per second: 3 agents every 0.1 s are 30.
    coordinator = cluster.coordinator("x", telemetry_budget_per_s=10.0)
    try:
        cluster.leader()
        cluster.wait(lambda: all(coordinator.registry.online(a) for a in "abc"), 10, "the agents")
        gone: list[str] = []
        deadline = time.monotonic() + 10
        while any(a.presence.period_s != 0.5 for a in agents):
            assert time.monotonic() < deadline, [a.presence.period_s for a in agents]
            gone += [a for a in "abc" if not coordinator.registry.online(a)]
            time.sleep(0.02)
        record = coordinator.registry.record("a")
        assert record is not None and record.telemetry is not None
        cluster.wait(
            lambda: (
                (r := coordinator.registry.record("a")) is not None
                and r.telemetry is not None
                and r.telemetry.period_s == 0.5
            ),
            5,
            "telemetry that says the new period",
        )
        settle = time.monotonic() + 1.5  # three new periods: nobody counts as gone
        while time.monotonic() < settle:
            gone += [a for a in "abc" if not coordinator.registry.online(a)]
            time.sleep(0.02)
        assert gone == []
    finally:
        coordinator.stop()
        for agent in agents:
            agent.stop()


def test_a_partitioned_leader_steps_down_and_comes_back_a_follower(cluster: Cluster) -> None:
    with LeaderSampler(cluster) as sampler:
        leader = cluster.leader()
        term = leader.lease.term
        assert isinstance(leader.transport, MemoryTransport)
        leader.transport.interrupt()
        assert not leader.lease.is_leader(), "it stops at once"
        successor = cluster.wait(
            lambda: next((c for c in cluster.leaders() if c is not leader), None),
            10,
            "a successor",
        )
        leader.transport.resume()
        reply = cluster.reply(cluster.deploy(stages=2))
        assert reply.ok, reply.message
    assert successor.lease.term > term
    assert term_of_epoch(reply.epoch) == successor.lease.term
    assert cluster.leaders() == [successor]
    assert sampler.most == 1
