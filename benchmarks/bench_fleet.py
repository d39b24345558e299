"""Scale of the fleet: 10, 100, 1,000 and 10,000 simulated agents through a real broker (goal 5).

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
- the coordinator's resident memory with the fleet registered;
- telemetry through the broker: every agent publishes its telemetry, spread evenly over
  its period, for a window: first at the agents' own 1 s period, then at the period the
  leading coordinator advises in its lease (``telemetry_budget_per_s``, 1,000 messages/s
  by default). Measured: the messages/s a subscriber receives through Mosquitto, and the
  coordinator's and the broker's CPU (share of one core) over the window;
- the broker's retained store: how many retained messages, and their bytes (what a new
  subscriber to the namespace receives at once).

Broker messages per request and agent memory are measured with real agents in
``bench_split.py``.

    .venv/bin/python benchmarks/bench_fleet.py [--quick]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import threading
import time
import uuid
from dataclasses import replace

import psutil
from _fleet import MODEL, Fleet, cpu_s, fleet, mobilenet
from _report import Row, report
from _simulated import simulated_agent

from splitmq.coordinator.lease import LeaseConfig, advised_telemetry_period_s
from splitmq.coordinator.service import CoordinatorConfig
from splitmq.transport import InboundMessage, MqttTransport, parse_broker_url
from splitmq.wire import (
    CommandReply,
    DeployReply,
    DeployRequest,
    Lease,
    LoadShard,
    Message,
    Plan,
    PlanRequest,
    ShardReady,
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
    EVENTS,
    LEASE,
    PLAN_REQUESTS,
    PLANS,
    STATUS,
    TELEMETRY,
)

SIMULATOR = "bench-simulator"
ASKER = "bench-asker"
PERIOD_S = 600.0  # telemetry period the simulated agents announce: they stay fresh
OWN_PERIOD_S = 1.0  # the agents' own telemetry period (splitmq agent's default)
TELEMETRY_BUDGET_PER_S = CoordinatorConfig().telemetry_budget_per_s


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
        self.telemetry: list[Telemetry] = []
        for index in range(size):
            agent_id = f"sim-{index:05d}"
            status, telemetry = simulated_agent(agent_id, rng, now_ms, period_s=PERIOD_S)
            self.telemetry.append(telemetry)
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

    def stream(self, period_s: float, duration_s: float) -> int:
        """Every agent's telemetry every ``period_s``, spread evenly, for ``duration_s``;
        the number published."""
        tick_s = 0.01
        started = time.monotonic()
        sent = 0
        while (elapsed := time.monotonic() - started) < duration_s:
            due = min(int(elapsed / period_s * self.size), int(duration_s / period_s * self.size))
            now_ms = int(time.time() * 1000)
            while sent < due:
                telemetry = self.telemetry[sent % self.size]
                fresh = replace(telemetry, ts_ms=now_ms, period_s=period_s)
                self.transport.publish(
                    TELEMETRY.name(agent=telemetry.agent_id), encode(fresh), qos=0, retain=True
                )
                sent += 1
            time.sleep(tick_s)
        return sent

    def close(self) -> None:
        self.transport.close()  # the broker goes with the fleet: nothing retained survives


class Counter:
    """Messages received on a filter, from a connection of its own."""

    def __init__(self, url: str, topic_filter: str, client_id: str):
        self.transport = MqttTransport(parse_broker_url(url, client_id=client_id))
        self.transport.start()
        self.count = 0
        self.retained = 0
        self.retained_bytes = 0
        self.last_s = time.monotonic()
        self._lock = threading.Lock()
        # Counted on the network thread: a burst never waits in (or overflows) the inbox.
        self.transport.subscribe(topic_filter, self._on_message, qos=0, fast_path=self._count)

    def _count(self, message: InboundMessage) -> bool:
        self._on_message(message)
        return True

    def _on_message(self, message: InboundMessage) -> None:
        with self._lock:
            self.count += 1
            self.last_s = time.monotonic()
            if message.retain:
                self.retained += 1
                self.retained_bytes += len(message.topic) + len(message.payload)

    def take(self) -> int:
        with self._lock:
            count, self.count = self.count, 0
        return count

    def quiet_for(self, seconds: float, timeout_s: float) -> None:
        """Until nothing arrived for ``seconds`` (the retained store has been sent)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() - self.last_s < seconds and time.monotonic() < deadline:
            time.sleep(0.05)

    def close(self) -> None:
        self.transport.close()


def advised_period_s(running: Fleet, size: int, timeout_s: float) -> float:
    """The telemetry period the leading coordinator's lease advises for ``size`` agents
    (0: none): what its renewals say once it has counted them."""
    expected = advised_telemetry_period_s(size, TELEMETRY_BUDGET_PER_S, LeaseConfig().period_s)
    if expected == 0:
        return 0.0
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        leases = [m for m in running.inbox.of(Lease) if not m.released]
        if leases and leases[-1].telemetry_period_s == expected:
            return expected
        time.sleep(0.1)
    raise SystemExit(f"the coordinator never advised {expected:g} s for {size} agents")


def telemetry_load(
    running: Fleet, simulated: SimulatedFleet, period_s: float, window_s: float
) -> dict[str, float]:
    """Stream telemetry at ``period_s`` for ``window_s``: messages/s received through the
    broker, and the coordinator's and broker's CPU over the window (share of a core)."""
    assert running.coordinator is not None and running.broker.pid is not None
    counter = Counter(running.url, TELEMETRY.filter(), "bench-telemetry-counter")
    try:
        counter.quiet_for(0.5, 60)  # the retained telemetry first
        counter.take()
        coordinator_0, broker_0 = cpu_s(running.coordinator.pid), cpu_s(running.broker.pid)
        started = time.monotonic()
        sent = simulated.stream(period_s, window_s)
        elapsed = time.monotonic() - started
        coordinator_s = cpu_s(running.coordinator.pid) - coordinator_0
        broker_s = cpu_s(running.broker.pid) - broker_0
        counter.quiet_for(0.3, 10)
        received = counter.take()
    finally:
        counter.close()
    return {
        "period_s": period_s,
        "sent_per_s": sent / elapsed,
        "received_per_s": received / elapsed,
        "coordinator_cpu_pct": 100 * coordinator_s / elapsed,
        "broker_cpu_pct": 100 * broker_s / elapsed,
    }


def retained_store(running: Fleet) -> tuple[int, int]:
    """The retained messages of the namespace and their bytes (topic + payload)."""
    counter = Counter(running.url, f"{DEFAULT_NAMESPACE}/#", "bench-retained-counter")
    try:
        counter.quiet_for(1.0, 120)
        return counter.retained, counter.retained_bytes
    finally:
        counter.close()


class Asker:
    """Plan and deploy requests, and their answers, on a connection of its own that
    hears nothing else (the operator's watcher also hears every agent's status: at
    10,000 agents, finding an answer among them would be what is timed)."""

    def __init__(self, url: str):
        self.transport = MqttTransport(parse_broker_url(url, client_id=ASKER))
        self.transport.start()
        self._answers: dict[str, Message] = {}
        self._arrived = threading.Condition()
        for topic in (PLANS.name(client=ASKER), DEPLOY_REPLIES.name(client=ASKER)):
            self.transport.subscribe(topic, self._on_answer, fast_path=self._take)

    def _take(self, message: InboundMessage) -> bool:
        self._on_answer(message)
        return True

    def _on_answer(self, message: InboundMessage) -> None:
        answer = decode(message.payload)
        with self._arrived:
            self._answers[answer.request_id] = answer  # type: ignore[attr-defined]
            self._arrived.notify_all()

    def answer(self, request_id: str, timeout_s: float = 300.0) -> Message:
        with self._arrived:
            if not self._arrived.wait_for(lambda: request_id in self._answers, timeout_s):
                raise TimeoutError(f"no answer to {request_id} within {timeout_s} s")
            return self._answers.pop(request_id)

    def ask(self, message: PlanRequest | DeployRequest, topic: str) -> Message:
        self.transport.publish(topic, encode(message)).wait(10)
        return self.answer(message.request_id)

    def close(self) -> None:
        self.transport.close()


def plan_request() -> PlanRequest:
    return PlanRequest(request_id=uuid.uuid4().hex, client_id=ASKER, model=MODEL)


def deploy_request() -> DeployRequest:
    return DeployRequest(
        request_id=uuid.uuid4().hex,
        client_id=ASKER,
        model=MODEL,
        stages=4,
        replicas=2,
        objective="latency",  # type: ignore[arg-type]
    )


def measure(size: int, deploys: int, plans: int, window_s: float) -> dict[str, float]:
    with fleet([]) as running:
        running.inbox.watch(LEASE)
        asker = Asker(running.url)
        simulated = SimulatedFleet(running.url, size)
        try:
            started = time.perf_counter()
            # On the simulator's connection, after every status and telemetry: the
            # coordinator answers it once it has read them all.
            sentinel = plan_request()
            simulated.transport.publish(PLAN_REQUESTS.name(), encode(sentinel)).wait(30)
            asker.answer(sentinel.request_id)
            registered_s = time.perf_counter() - started
            deploy_s = []
            for _ in range(deploys):
                started = time.perf_counter()
                reply = asker.ask(deploy_request(), DEPLOY_REQUESTS.name())
                deploy_s.append(time.perf_counter() - started)
                if not isinstance(reply, DeployReply) or not reply.ok:
                    raise SystemExit(f"deployment over {size} agents failed: {reply}")
            plan_ms = []
            for _ in range(plans + 5):
                started = time.perf_counter()
                answer = asker.ask(plan_request(), PLAN_REQUESTS.name())
                plan_ms.append((time.perf_counter() - started) * 1e3)
                if not isinstance(answer, Plan):
                    raise SystemExit(f"no plan over {size} agents: {answer}")
            assert running.coordinator is not None
            rss = psutil.Process(running.coordinator.pid).memory_info().rss
            retained, retained_bytes = retained_store(running)
            own = telemetry_load(running, simulated, OWN_PERIOD_S, window_s)
            advice = advised_period_s(running, size, 60)
            advised = telemetry_load(running, simulated, advice, window_s) if advice > 0 else own
        finally:
            simulated.close()
            asker.close()
    return {
        "agents": size,
        "registered_s": registered_s,
        "deploy_cold_s": deploy_s[0],
        "deploy_warm_s": statistics.median(deploy_s[1:]) if len(deploy_s) > 1 else deploy_s[0],
        "plan_round_trip_ms": statistics.median(plan_ms[5:]),
        "coordinator_rss_bytes": rss,
        "loads": simulated.loads,
        "retained": retained,
        "retained_bytes": retained_bytes,
        "advice_s": advice,
        **{f"own_{k}": v for k, v in own.items()},
        **{f"advised_{k}": v for k, v in advised.items()},
    }


def telemetry_cell(outcome: dict[str, float], which: str) -> str:
    return (
        f"{outcome[f'{which}_received_per_s']:,.0f} msgs/s through the broker "
        f"(sent {outcome[f'{which}_sent_per_s']:,.0f}/s); CPU: coordinator "
        f"{outcome[f'{which}_coordinator_cpu_pct']:.0f}%, broker "
        f"{outcome[f'{which}_broker_cpu_pct']:.0f}% of a core"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a smoke run: 10 and 100 agents")
    parser.add_argument("--sizes", help="fleet sizes, comma-separated (10,100,1000,10000)")
    args = parser.parse_args()
    mobilenet()  # converted once, before any timing
    sizes: tuple[int, ...] = (10, 100) if args.quick else (10, 100, 1000, 10000)
    if args.sizes:
        sizes = tuple(int(n) for n in args.sizes.split(","))
    window_s = 3.0 if args.quick else 20.0
    outcomes = []
    for size in sizes:
        print(f"  {size} agents ...", file=sys.stderr, flush=True)
        outcomes.append(measure(size, 2 if args.quick else 4, 10 if args.quick else 40, window_s))
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
            Row(
                "5 fleet",
                f"{size} agents: retained store",
                f"{o['retained']:.0f} messages, {o['retained_bytes'] / 1e6:.1f} MB",
            ),
            Row(
                "5 fleet",
                f"{size} agents: telemetry at the agents' own {OWN_PERIOD_S:g} s",
                telemetry_cell(o, "own"),
                value=o["own_received_per_s"],
            ),
            Row(
                "5 fleet",
                f"{size} agents: telemetry at the advised period",
                (
                    f"{o['advice_s']:g} s: " + telemetry_cell(o, "advised")
                    if o["advice_s"] > 0
                    else "no advice (within the budget)"
                ),
                value=o["advised_received_per_s"],
            ),
        ]
    report(
        "fleet scale: a real coordinator, simulated agents (4 stages x 2 replicas)",
        rows,
        {"outcomes": outcomes},
    )


if __name__ == "__main__":
    main()
