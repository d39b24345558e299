"""A coordinator's cost as the fleet grows to 10,000 agents (in one process, no broker).

A real :class:`~splitmq.coordinator.service.Coordinator` over the in-memory transport,
serving the shipped digits pool, with N simulated agents registered the way a broker
would hand them over (a retained status and telemetry each) and one deployment (2
stages, 2 replicas) on four of them. For 1,000 and 10,000 agents it measures:

- the coordinator's memory for the registry (Python heap, ``tracemalloc``);
- plan time: ``Coordinator.plan`` as the service answers (views of the hosts only),
  and side by side the way it was before (every agent's view per request);
- the watch's check of a deployment (``needs_healing``), every watch period;
- deployment time (partition, cut, commands answered at once by the simulator);
- the broker's load from telemetry (N / period messages per second), the coordinator's
  CPU time per telemetry message (decode and registry update, as its handler runs) and
  what that makes at N / period, at 1 s and at the period the leader advises;
- the size of the retained store (a status and a telemetry per agent, the deployment,
  the lease).

Ratios are measured side by side in one run. The plan-time goal is 5 ms at 10,000.

    .venv/bin/python benchmarks/bench_scale.py [--quick]
"""

from __future__ import annotations

import argparse
import random
import shutil
import tempfile
import time
import tracemalloc
import uuid
from pathlib import Path

from _report import Row, median_time_s, report
from _simulated import simulated_agent

from splitmq.coordinator.lease import LeaseConfig, advised_telemetry_period_s, lease_will
from splitmq.coordinator.service import Coordinator, CoordinatorConfig
from splitmq.transport import InboundMessage, MemoryBroker
from splitmq.wire import (
    CommandReply,
    DeployReply,
    DeployRequest,
    LoadShard,
    Message,
    Plan,
    PlanRequest,
    ShardReady,
    UnloadShard,
    decode,
    encode,
)
from splitmq.wire.topics import (
    COMMANDS,
    DEPLOY_REPLIES,
    DEPLOY_REQUESTS,
    EVENTS,
    LEASE,
    STATUS,
    TELEMETRY,
)

POOL = Path(__file__).resolve().parents[1] / "tests" / "data" / "pool"
TELEMETRY_PERIOD_S = 1.0


def simulated_messages(size: int, seed: int = 0) -> list[tuple[str, bytes]]:
    """A retained status and telemetry per agent, as (topic, payload)."""
    rng = random.Random(seed)
    now_ms = int(time.time() * 1000)
    messages = []
    for index in range(size):
        agent_id = f"sim-{index:05d}"
        status, telemetry = simulated_agent(
            agent_id,
            rng,
            now_ms,
            period_s=600.0,  # they stay fresh for the whole run
            plugged=True,
            site=f"site-{index % 10}",
        )
        messages.append((STATUS.name(agent=agent_id), encode(status)))
        messages.append((TELEMETRY.name(agent=agent_id), encode(telemetry)))
    return messages


class Simulator:
    """Answers every load and unload command at once, for any agent."""

    def __init__(self, broker: MemoryBroker):
        self.transport = broker.transport("simulator")
        self.transport.start()
        self.transport.subscribe(COMMANDS.filter(), self._on_command)

    def _on_command(self, message: InboundMessage) -> None:
        agent_id = message.topic.split("/")[-2]
        command = decode(message.payload)
        answer: Message
        if isinstance(command, LoadShard):
            answer = ShardReady(
                command.command_id,
                agent_id,
                command.deployment,
                command.stage,
                command.digest,
                "simulated",
                2.0,
            )
        elif isinstance(command, UnloadShard):
            answer = CommandReply(command.command_id, agent_id, ok=True)
        else:
            return
        self.transport.publish(EVENTS.name(agent=agent_id), encode(answer))


def measure(size: int, workdir: Path) -> dict[str, float]:
    broker = MemoryBroker()
    messages = simulated_messages(size)
    publisher = broker.transport("fleet")
    publisher.start()
    for topic, payload in messages:
        publisher.publish(topic, payload, retain=True)
    Simulator(broker)
    pool = workdir / f"pool-{size}"
    shutil.copytree(POOL, pool)
    lease = LeaseConfig(period_s=0.2)
    client_id = f"coordinator-{size}"
    config = CoordinatorConfig(lease=lease, watch_period_s=3600.0)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    started = time.perf_counter()
    coordinator = Coordinator(
        # Its inbox holds the whole retained fleet (a broker would pace it over TCP).
        broker.transport(client_id, will=lease_will(client_id, lease), inbox_size=4 * size),
        pool,
        config,
    )
    coordinator.start()  # the retained statuses and telemetry arrive on subscribing
    while len(coordinator.registry.agent_ids()) < size:
        time.sleep(0.01)
    registered_s = time.perf_counter() - started
    registry_bytes = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    try:
        operator = broker.transport("operator")
        operator.start()
        replies: list[DeployReply] = []
        operator.subscribe(
            DEPLOY_REPLIES.name(client="ops"),
            lambda m: replies.append(DEPLOY_REPLIES.decode(m.payload)),
        )
        while not coordinator.lease.is_leader():
            time.sleep(0.01)
        deploy_s = []
        for _ in range(3):
            deploy = DeployRequest(uuid.uuid4().hex, "ops", "digits", stages=2, replicas=2)
            started = time.perf_counter()
            DEPLOY_REQUESTS.publish(operator, deploy)
            while not any(r.request_id == deploy.request_id for r in replies):
                time.sleep(0.001)
            deploy_s.append(time.perf_counter() - started)
        assert all(r.ok for r in replies), [r.message for r in replies]
        asked = PlanRequest("p", "someone", "digits")
        answer = coordinator.plan(asked)
        assert isinstance(answer, Plan), answer

        def every_view() -> object:
            return coordinator.registry.views()  # what each plan request paid before

        telemetry = [
            InboundMessage(topic, payload) for topic, payload in messages if "telemetry" in topic
        ]

        def handle_telemetry() -> None:
            for message in telemetry:
                coordinator._on_telemetry(message)

        cpu_started = time.process_time()
        handle_telemetry()
        telemetry_cpu_us = (time.process_time() - cpu_started) / len(telemetry) * 1e6
        advised_s = advised_telemetry_period_s(size, config.telemetry_budget_per_s, 1.0) or 1.0
        (deployment,) = coordinator.deployments().values()
        retained = sum(len(p) for _, p in messages) + len(encode(deployment))
        lease_message = broker.retained(LEASE.name())
        retained += len(lease_message or b"")
        return {
            "agents": size,
            "registered_s": registered_s,
            "registry_mb": registry_bytes / 1e6,
            "plan_ms": median_time_s(lambda: coordinator.plan(asked), repeat=5, number=20) * 1e3,
            "plan_before_ms": (
                median_time_s(lambda: coordinator.plan(asked), repeat=3, number=3)
                + median_time_s(every_view, repeat=3, number=3)
            )
            * 1e3,
            "watch_check_ms": median_time_s(
                lambda: coordinator.deployer.needs_healing(deployment), repeat=5, number=20
            )
            * 1e3,
            "deploy_s": sorted(deploy_s)[1],
            "telemetry_per_s": size / TELEMETRY_PERIOD_S,
            "telemetry_cpu_us": telemetry_cpu_us,
            "telemetry_cpu_pct_1s": size / TELEMETRY_PERIOD_S * telemetry_cpu_us / 1e4,
            "advised_period_s": advised_s,
            "telemetry_cpu_pct_advised": size / advised_s * telemetry_cpu_us / 1e4,
            "retained_mb": retained / 1e6,
        }
    finally:
        coordinator.stop()
        publisher.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="100 and 1,000 agents")
    args = parser.parse_args()
    sizes = (100, 1000) if args.quick else (1000, 10_000)
    workdir = Path(tempfile.mkdtemp(prefix="splitmq-scale-"))
    try:
        outcomes = []
        for size in sizes:
            print(f"{size} agents...", flush=True)
            outcomes.append(measure(size, workdir))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    rows = []
    for o in outcomes:
        n = f"{int(o['agents']):,} agents"
        big = o["agents"] >= 10_000
        rows += [
            Row(
                "scale",
                f"{n}: plan (hosts' views) / as before (every view)",
                f"{o['plan_ms']:.2f} / {o['plan_before_ms']:.1f} ms "
                f"({o['plan_before_ms'] / o['plan_ms']:.0f}x)",
                "< 5 ms at 10,000" if big else "",
                (o["plan_ms"] < 5.0) if big else None,
                o["plan_ms"],
            ),
            Row("scale", f"{n}: watch check per deployment", f"{o['watch_check_ms']:.2f} ms"),
            Row("scale", f"{n}: deployment (2 stages x 2)", f"{o['deploy_s'] * 1e3:.0f} ms"),
            Row(
                "scale",
                f"{n}: registry memory / registered in",
                f"{o['registry_mb']:.1f} MB / {o['registered_s']:.2f} s",
            ),
            Row(
                "scale",
                f"{n}: telemetry msgs/s (1 s period) / retained store",
                f"{o['telemetry_per_s']:,.0f} / {o['retained_mb']:.2f} MB",
            ),
            Row(
                "scale",
                f"{n}: coordinator CPU per telemetry msg; one core at 1 s / advised period",
                f"{o['telemetry_cpu_us']:.0f} us; {o['telemetry_cpu_pct_1s']:.0f} % / "
                f"{o['telemetry_cpu_pct_advised']:.0f} % ({o['advised_period_s']:g} s)",
            ),
        ]
    report("coordinator scale", rows, {"outcomes": outcomes})


if __name__ == "__main__":
    main()
