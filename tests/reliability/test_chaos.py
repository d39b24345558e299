"""Chaos: agents killed and restarted at random moments under a stream of 2000 requests.

Five agent processes (two stages, two replicas each, one spare) on a real Mosquitto and
a coordinator process. A chaos thread kills a random agent every second or so with
SIGKILL — mid-inference, since requests are always in flight — and restarts it after a
random pause; some restarts come with a wiped cache (a replaced device), and those are
killed again as soon as they ask the pool for their first chunk (mid-download). The
client streams 2000 requests at a steady pace meanwhile.

The monkey kills only an agent whose stages keep another replica serving (or a spare):
on a loaded machine restarts take longer while kills keep their pace, and a stage left
with nobody tests the machine's speed, not failover. Every request must end exactly
once, in the exact output of the unsplit model or in a clear error; after the chaos
the fleet must be whole again (every stage with two replicas that serve it) without
anyone's help, and answer everything. It runs twice: each hop at least once (QoS 1,
the default), then at most once (``hop_qos=0``).
"""

from __future__ import annotations

import json
import random
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from splitmq.client import InferenceError, InferenceResult, RequestRecord
from splitmq.transport import InboundMessage
from splitmq.wire import FetchShard, decode
from splitmq.wire.topics import POOL_FETCH

from .fleet import DEPLOYMENT, Fleet, Reference, paced, percentile_ms, start_fleet

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REQUESTS = 2000
RATE_PER_S = 80.0
AGENTS = [f"chaos-{i}" for i in range(1, 6)]
ERROR_CODES = {"attempts_spent", "deadline", "no_plan", "overloaded", "plan_refused"}
# A device a little slower than this machine, with a radio: a request spends a few
# milliseconds in each agent, so kills land while requests are inside them.
PROFILE = {
    "name": "chaos-device",
    "active_power_w": 5.0,
    "idle_power_w": 2.0,
    "radio_j_per_mb": 0.5,
    "battery_wh": 50.0,
    "plugged": True,
    "compute_factor": 20.0,
    "link": {"bandwidth_mbps": 100.0, "latency_ms": 2.0},
}


@pytest.fixture(scope="module")
def fleet(digits_pool: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    workdir = tmp_path_factory.mktemp("chaos")
    profile = workdir / "chaos-device.json"
    profile.write_text(json.dumps(PROFILE))
    options = {agent_id: ("--profile", str(profile)) for agent_id in AGENTS}
    fleet = start_fleet(workdir, digits_pool, AGENTS, agent_options=options)
    try:
        fleet.deploy(stages=2, replicas=2)
        yield fleet
    finally:
        fleet.close()


class Monkey:
    """Kills and restarts agents at random moments until stopped.

    Victims are mostly replicas of the deployment (killing a spare proves little). A
    third of the restarts wipe the agent's cache first (a replaced device), so shards
    have to be fetched again when a heal picks it; an agent seen asking the pool for a
    chunk is killed on the spot, mid-download, now and then, and restarted.
    """

    def __init__(self, fleet: Fleet, seed: int):
        self.fleet = fleet
        self.rng = random.Random(seed)
        self.stop = threading.Event()
        self.events: list[str] = []
        self._lock = threading.Lock()  # one kill or restart at a time
        fleet.observer.subscribe(POOL_FETCH.name(), self._on_fetch)
        self.thread = threading.Thread(target=self._run, name="chaos-monkey", daemon=True)

    def _on_fetch(self, message: InboundMessage) -> None:
        agent_id = decode(message.payload, expect=FetchShard).agent_id
        if agent_id in AGENTS and self.rng.random() < 0.7 and not self.stop.is_set():
            threading.Thread(target=self._kill_downloader, args=(agent_id,), daemon=True).start()

    def _kill_downloader(self, agent_id: str) -> None:
        with self._lock:
            if not self.fleet.alive(agent_id) or not self._safe(agent_id):
                return
            self.fleet.kill_agent(agent_id)
            self.events.append(f"kill {agent_id} mid-download")
            self.fleet.start_agent(agent_id)
            self.events.append(f"restart {agent_id}")

    def _serving(self, agent_id: str, stage: int) -> bool:
        telemetry = self.fleet.watch.telemetry.get(agent_id)
        return (
            self.fleet.alive(agent_id)
            and self.fleet.watch.online(agent_id)
            and telemetry is not None
            and f"{DEPLOYMENT}/{stage}" in telemetry.queue_depth
        )

    def _safe(self, agent_id: str) -> bool:
        """Whether every stage the agent hosts has another replica serving it.

        Kills come at a steady pace while a restart takes longer on a loaded machine: a
        kill that left a stage with nobody would test how fast this machine is, not
        whether requests fail over.
        """
        deployment = self.fleet.deployment()
        if deployment is None:
            return True
        return all(
            any(other != agent_id and self._serving(other, s.stage) for other in s.replicas)
            for s in deployment.stages
            if agent_id in s.replicas
        )

    def _victim(self) -> str | None:
        deployment = self.fleet.deployment()
        replicas = {a for s in deployment.stages for a in s.replicas} if deployment else set()
        alive = [a for a in AGENTS if self.fleet.alive(a) and self._safe(a)]
        preferred = [a for a in alive if a in replicas]
        if not alive:
            return None  # every stage is down to one replica: wait for the others
        return self.rng.choice(preferred if preferred and self.rng.random() < 0.8 else alive)

    def _run(self) -> None:
        while not self.stop.wait(self.rng.uniform(0.4, 1.2)):
            with self._lock:
                victim = self._victim()
                if victim is None:
                    continue
                self.fleet.kill_agent(victim)
                self.events.append(f"kill {victim}")
            self.stop.wait(self.rng.uniform(0.1, 1.0))
            wipe = self.rng.random() < 0.35
            with self._lock:
                self.fleet.start_agent(victim, wipe_cache=wipe)
                self.events.append(f"{'replace' if wipe else 'restart'} {victim}")

    def __enter__(self) -> Monkey:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop.set()
        self.thread.join(30)
        with self._lock:
            for agent_id in AGENTS:  # whatever the monkey left dead comes back
                if not self.fleet.alive(agent_id):
                    self.fleet.start_agent(agent_id)


@pytest.mark.parametrize("hop_qos", [1, 0])
def test_2000_requests_through_random_agent_kills_end_once_and_the_fleet_heals(
    fleet: Fleet, reference: Reference, tmp_path: Path, hop_qos: int
) -> None:
    """At either hop QoS (``ClientConfig.hop_qos``): at 0 no hop is acknowledged or sent
    again by a transport, and the client's retries alone carry what a kill loses."""
    records: list[RequestRecord] = []
    client = fleet.client(deadline_s=10.0, recorder=records.append, hop_qos=hop_qos)
    outcomes: dict[int, InferenceResult | InferenceError] = {}
    with Monkey(fleet, seed=20261121) as monkey:
        for item in client.stream(
            paced(reference.images, REQUESTS, RATE_PER_S), ordered=False, max_in_flight=32
        ):
            assert item.index is not None and item.index not in outcomes, "answered twice"
            outcomes[item.index] = item
    kills = [e for e in monkey.events if e.startswith("kill")]
    errors = [o for o in outcomes.values() if isinstance(o, InferenceError)]
    codes = Counter(e.code for e in errors)
    served = len(outcomes) - len(errors)
    latencies = [o.latency_ms for o in outcomes.values() if isinstance(o, InferenceResult)]
    summary = (
        f"{served}/{REQUESTS} served, errors {dict(codes)}, "
        f"p50 {percentile_ms(latencies, 50):.1f} ms, p99 {percentile_ms(latencies, 99):.1f} ms, "
        f"{len(kills)} kills ({sum('mid-download' in e for e in kills)} mid-download), "
        f"late duplicates dropped {client.duplicates}"
    )
    print(summary)
    assert len(kills) >= 10, monkey.events
    assert any("mid-download" in e for e in monkey.events), monkey.events

    # None lost, none answered twice.
    assert sorted(outcomes) == list(range(REQUESTS))
    assert len(records) == REQUESTS
    assert len({r.request_id for r in records}) == REQUESTS
    # Every result is exact; every error says why.
    wrong = [
        i
        for i, o in outcomes.items()
        if isinstance(o, InferenceResult) and not reference.check(i, o.outputs)
    ]
    assert not wrong, f"wrong outputs for requests {wrong[:10]}"
    assert set(codes) <= ERROR_CODES, (codes, [str(e) for e in errors[:3]])
    assert all(e.reason and e.record.attempts for e in errors if e.code != "no_plan")
    assert served >= 0.99 * REQUESTS, (summary, [str(e) for e in errors[:3]])

    # The fleet heals on its own: two replicas per stage, each serving, then all answers.
    fleet.wait_online(AGENTS)
    fleet.wait_healthy(replicas=2, timeout_s=30)
    after = list(client.stream(reference.images[:50], max_in_flight=8))
    assert all(isinstance(o, InferenceResult) for o in after), [
        str(o) for o in after if isinstance(o, InferenceError)
    ][:3]
    # Restarted agents that kept their cache reloaded their shards from it.
    logs = "".join((fleet.workdir / f"{a}.log").read_text() for a in AGENTS)
    assert "found in the cache" in logs
