"""Scale of the fleet: deployment and plan time for 10, 100 and 1000 simulated agents (goal 5).

A real Mosquitto and a real coordinator process (``python -m splitmq coordinator``)
serving the benchmark pool (MobileNetV3Large); the fleet is simulated on one MQTT
connection: for every agent a retained status (speed, link, power figures) and a
retained telemetry (battery, free memory), drawn at random, and an answer to each load
command at once (``ShardReady``: no shard is fetched or run, so what is timed is the
coordinator's own work -- registry, partition optimizer, cutting, commands, waits,
publishing the deployment).

- deployment: a ``DeployRequest`` (4 stages, 2 replicas each, objective latency) until
  its ``DeployReply``: the first one of a fresh coordinator, and again (the shards are
  kept by digest in the pool, so only the very first run ever cuts them);
- plan: a ``PlanRequest`` until its ``Plan``, through the broker (the planner's own time
  is ``bench_planner.py``'s);
- the coordinator's resident memory with the fleet registered.

Broker messages per request and agent memory are measured with real agents in
``bench_split.py``.

    .venv/bin/python benchmarks/bench_fleet.py [--quick]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
import uuid

import psutil
from _fleet import MODEL, Fleet, fleet, mobilenet
from _report import Row, report
from _simulated import simulated_agent

from splitmq.transport import InboundMessage, MqttTransport, parse_broker_url
from splitmq.wire import (
    CommandReply,
    DeployReply,
    DeployRequest,
    LoadShard,
    Message,
    Plan,
    PlanRefused,
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
    PLAN_REQUESTS,
    PLANS,
    STATUS,
    TELEMETRY,
)

SIMULATOR = "bench-simulator"
PERIOD_S = 600.0  # telemetry period the simulated agents announce: they stay fresh


class SimulatedFleet:
    """``size`` agents on one connection: statuses, telemetry, answers to commands."""

    def __init__(self, url: str, size: int, seed: int = 0):
        self.size = size
        self.transport = MqttTransport(parse_broker_url(url, client_id=SIMULATOR))
        self.transport.start()
        self.loads = 0
        self.transport.subscribe(COMMANDS.filter(), self._on_command)
        rng = random.Random(seed)
        now_ms = int(time.time() * 1000)
        for index in range(size):
            agent_id = f"sim-{index:04d}"
            status, telemetry = simulated_agent(agent_id, rng, now_ms, period_s=PERIOD_S)
            receipt = self.transport.publish(
                STATUS.name(agent=agent_id), encode(status), retain=True
            )
            self.transport.publish(
                TELEMETRY.name(agent=agent_id), encode(telemetry), qos=0, retain=True
            )
            if index % 200 == 199:  # within the transport's outgoing queue
                receipt.wait(30)

    def _on_command(self, message: InboundMessage) -> None:
        agent_id = message.topic.split("/")[-2]
        command = decode(message.payload)
        answer: Message
        if isinstance(command, LoadShard):
            self.loads += 1
            answer = ShardReady(
                command_id=command.command_id,
                agent_id=agent_id,
                deployment=command.deployment,
                stage=command.stage,
                digest=command.digest,
                runtime="simulated",
                bench_ms=5.0,
            )
        elif isinstance(command, UnloadShard):
            answer = CommandReply(command.command_id, agent_id, ok=True)
        else:
            return
        self.transport.publish(EVENTS.name(agent=agent_id), encode(answer))

    def close(self) -> None:
        self.transport.close()  # the broker goes with the fleet: nothing retained survives


def ask(running: Fleet, message: Message, topic: str, kinds: tuple[type, ...]) -> Message:
    running.operator.publish(topic, encode(message)).wait(10)
    request_id = message.request_id  # type: ignore[attr-defined]
    return running.inbox.wait_for(
        Message,
        lambda m: isinstance(m, kinds) and m.request_id == request_id,  # type: ignore[attr-defined]
        300,
    )


def plan_request() -> PlanRequest:
    return PlanRequest(request_id=uuid.uuid4().hex, client_id="bench-operator", model=MODEL)


def deploy_request() -> DeployRequest:
    return DeployRequest(
        request_id=uuid.uuid4().hex,
        client_id="bench-operator",
        model=MODEL,
        stages=4,
        replicas=2,
        objective="latency",  # type: ignore[arg-type]
    )


def measure(size: int, deploys: int, plans: int) -> dict[str, float]:
    with fleet([]) as running:
        running.operator.subscribe(PLANS.name(client="bench-operator"), running.inbox)
        running.operator.subscribe(DEPLOY_REPLIES.name(client="bench-operator"), running.inbox)
        simulated = SimulatedFleet(running.url, size)
        try:
            started = time.perf_counter()
            # On the simulator's connection, after every status and telemetry: the
            # coordinator answers it once it has read them all.
            sentinel = plan_request()
            simulated.transport.publish(PLAN_REQUESTS.name(), encode(sentinel)).wait(30)
            running.inbox.wait_for(
                Message,
                lambda m: isinstance(m, Plan | PlanRefused) and m.request_id == sentinel.request_id,
                300,
            )
            registered_s = time.perf_counter() - started
            deploy_s = []
            for _ in range(deploys):
                started = time.perf_counter()
                reply = ask(running, deploy_request(), DEPLOY_REQUESTS.name(), (DeployReply,))
                deploy_s.append(time.perf_counter() - started)
                if not isinstance(reply, DeployReply) or not reply.ok:
                    raise SystemExit(f"deployment over {size} agents failed: {reply}")
            plan_ms = []
            for _ in range(plans + 5):
                started = time.perf_counter()
                answer = ask(running, plan_request(), PLAN_REQUESTS.name(), (Plan, PlanRefused))
                plan_ms.append((time.perf_counter() - started) * 1e3)
                if not isinstance(answer, Plan):
                    raise SystemExit(f"no plan over {size} agents: {answer}")
            assert running.coordinator is not None
            rss = psutil.Process(running.coordinator.pid).memory_info().rss
        finally:
            simulated.close()
    return {
        "agents": size,
        "registered_s": registered_s,
        "deploy_cold_s": deploy_s[0],
        "deploy_warm_s": statistics.median(deploy_s[1:]) if len(deploy_s) > 1 else deploy_s[0],
        "plan_round_trip_ms": statistics.median(plan_ms[5:]),
        "coordinator_rss_bytes": rss,
        "loads": simulated.loads,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a smoke run: 10 and 100 agents")
    args = parser.parse_args()
    mobilenet()  # converted once, before any timing
    sizes = (10, 100) if args.quick else (10, 100, 1000)
    outcomes = [measure(size, 2 if args.quick else 4, 10 if args.quick else 40) for size in sizes]
    rows = []
    for o in outcomes:
        size = int(o["agents"])
        rows += [
            Row(
                "5 fleet",
                f"{size} agents: deployment, first / again",
                f"{o['deploy_cold_s']:.2f} / {o['deploy_warm_s']:.2f} s",
                value=o["deploy_warm_s"],
            ),
            Row(
                "5 fleet",
                f"{size} agents: plan request round trip",
                f"{o['plan_round_trip_ms']:.2f} ms",
                value=o["plan_round_trip_ms"],
            ),
            Row(
                "5 fleet",
                f"{size} agents: coordinator RSS, registry filled",
                f"{o['coordinator_rss_bytes'] / 1e6:.0f} MB "
                f"(registered in {o['registered_s']:.2f} s)",
            ),
        ]
    report(
        "fleet scale: a real coordinator, simulated agents (4 stages x 2 replicas)",
        rows,
        {"outcomes": outcomes},
    )


if __name__ == "__main__":
    main()
