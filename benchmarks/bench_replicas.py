"""Replicas that add throughput: a stage served by R replicas against one replica.

MobileNetV3Large float32 is deployed by the coordinator as one stage (the whole model:
the bottleneck) on R agent processes, every one with the ``rpi4`` profile: after each
invoke the agent sleeps twice its time (a device 3x slower) and its result waits the
emulated link (4 ms + bytes over 40 Mbit/s). The sleeps leave the cores free, so on
this 2-core machine replicas run side by side as separate devices would. The client
streams requests (``Client.stream``) with 2 in flight per replica; its per-request pick
(``splitmq.client.spread``) spreads them over the replicas.

Configurations, each in a fleet of its own, in this order:

- R = 1, 2, 3 equal replicas: throughput against R times one replica's (R = 1,
  measured first and last, the mean of the two: the machine's load drifts);
- two unequal replicas, ``rpi4`` and a device 3x slower still (compute factor 9): the
  throughput against the summed capacity of the two, each measured alone; twice, with
  2 in flight per replica (4) and with 2 per replica's worth of capacity (3: the slower
  one counts as a third). With 4 in flight over 1.33 replicas' capacity, about 3
  stage-times of work wait in the system whatever the pick (Little's law), so the
  faster replica's requests wait about 2 stage-times each: the queueing goal is judged
  on the window that keeps one request computing and one waiting per replica's worth.

Queueing is read from the results' traces (from an agent's receipt to its start), in
stage-times of the replica that served the request: the time it takes per request,
alone (one over its throughput alone: compute, hand-off and send).

Goals (issue 23): R replicas give at least 0.9 R times one replica's throughput;
unequal replicas at least 90% of their summed capacity; p95 queueing under 2 stage-times.

    .venv/bin/python benchmarks/bench_replicas.py [--quick] [--requests 150]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from collections import Counter
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from _fleet import MODEL, AgentSpec, fleet, image, mobilenet
from _report import Row, report, results_dir

from splitmq.client import Client, ClientConfig, InferenceResult

PROFILE = "rpi4"
"""The agents' profile (``--profile``)."""
SLOWER = 3.0
"""The unequal replica computes this many times slower than ``rpi4``."""
PER_REPLICA = 2
"""Requests in flight per replica: one computing, one waiting."""
BY_CAPACITY = math.ceil(PER_REPLICA * (1 + 1 / SLOWER))
"""The unequal pair's window as replicas' worth of capacity: the slower replica counts
as a third of one. ``2 * PER_REPLICA`` over a capacity of 1.33 replicas keeps about 3
stage-times of work in flight, so whatever the pick the faster replica's requests wait
about 2 stage-times (Little's law: time in the system = requests in flight / throughput),
or the slower one's second request waits a whole slow stage-time instead."""
THREADS = 1
QUEUEING = ("R=1", "R=2", "R=3", "unequal by capacity", "unequal")
"""The runs whose queueing is reported (the last one as context: see BY_CAPACITY)."""


@dataclass
class Measured:
    """One configuration's stream: throughput, queueing, and who served what."""

    name: str
    agents: tuple[str, ...]
    window: int
    rps: list[float]
    queued_ms: list[tuple[str, float]]
    """Per request: the agent that served it, and how long it queued there."""
    served: Counter[str]
    failed: int
    stage_ms: dict[str, float]

    @property
    def throughput(self) -> float:
        return statistics.median(self.rps)

    def queued_p95(self, stage_ms: dict[str, float]) -> float:
        """The p95 of the queueing, each in stage-times of the agent that served it."""
        ordered = sorted(ms / stage_ms[agent] for agent, ms in self.queued_ms)
        return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))] if ordered else 0.0


def slower_profile(directory: Path, profile: str) -> Path:
    """The shipped ``profile`` computing :data:`SLOWER` times slower again."""
    shipped = resources.files("splitmq.agent") / "profiles" / f"{profile}.json"
    data = json.loads(shipped.read_text())
    data.update(name=f"{profile}-x{SLOWER:g}", compute_factor=data["compute_factor"] * SLOWER)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{data['name']}.json"
    path.write_text(json.dumps(data))
    return path


def measure(name: str, specs: list[AgentSpec], window: int, rounds: int, requests: int) -> Measured:
    """Deploy the model as one stage on every agent of ``specs`` and stream through it."""
    entry = mobilenet()
    inputs = [image(entry, seed) for seed in range(4)]
    agents = tuple(spec.agent_id for spec in specs)
    with fleet(specs) as running:
        running.deploy(
            stages=1,
            replicas=len(specs),
            variant="float32",
            objective="throughput",
            expect_agents=agents,
        )
        config = ClientConfig(model=MODEL, deadline_s=60.0, max_in_flight=window)
        with Client(running.url, config=config) as client:

            def stream(count: int) -> tuple[float, list[InferenceResult], int]:
                frames = (inputs[i % len(inputs)] for i in range(count))
                started = time.perf_counter()
                items = list(client.stream(frames, ordered=False))
                elapsed = time.perf_counter() - started
                results = [item for item in items if isinstance(item, InferenceResult)]
                return count / elapsed, results, len(items) - len(results)

            stream(4 * window)  # warm-up: every replica measured, excluded
            rps, results, failed = [], [], 0
            for _ in range(rounds):
                rate, got, lost = stream(requests)
                rps.append(rate)
                results += got
                failed += lost
    compute: dict[str, list[float]] = {}
    for result in results:
        for entry_ in result.trace:
            compute.setdefault(entry_.agent_id, []).append(entry_.finished_ms - entry_.started_ms)
    stage_ms = {agent: statistics.median(times) for agent, times in compute.items()}
    queued = [(e.agent_id, e.started_ms - e.received_ms) for r in results for e in r.trace]
    served = Counter(e.agent_id for r in results for e in r.trace)
    return Measured(name, agents, window, rps, queued, served, failed, stage_ms)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a smoke run: few requests")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--requests", type=int, help="requests per round")
    parser.add_argument("--profile", default=PROFILE, help="the agents' shipped profile")
    args = parser.parse_args()
    rounds = args.rounds or (1 if args.quick else 3)
    requests = args.requests or (24 if args.quick else 90)
    mobilenet()  # converted once, before any fleet starts

    def rpi4(index: int) -> AgentSpec:
        return AgentSpec(f"{args.profile}-{index}", args.profile, THREADS)

    slow = AgentSpec("slower", str(slower_profile(results_dir(), args.profile)), THREADS)
    load_before = os.getloadavg()[0]
    runs: dict[str, Measured] = {}
    plan = [
        ("R=1", [rpi4(1)], PER_REPLICA),
        ("R=2", [rpi4(1), rpi4(2)], 2 * PER_REPLICA),
        ("R=3", [rpi4(1), rpi4(2), rpi4(3)], 3 * PER_REPLICA),
        ("slower alone", [slow], PER_REPLICA),
        ("unequal", [rpi4(1), slow], 2 * PER_REPLICA),
        ("unequal by capacity", [rpi4(1), slow], BY_CAPACITY),
        ("R=1 again", [rpi4(1)], PER_REPLICA),
    ]
    for step, (name, specs, window) in enumerate(plan, 1):
        print(f"[{step}/{len(plan)}] {name}: {len(specs)} agent(s), {window} in flight", flush=True)
        runs[name] = measure(name, specs, window, rounds, requests)
        run = runs[name]
        stage_ms = ", ".join(f"{agent} {ms:.1f} ms" for agent, ms in sorted(run.stage_ms.items()))
        print(f"    {run.throughput:.1f} req/s, served {dict(run.served)}, compute {stage_ms}")

    one = (runs["R=1"].throughput + runs["R=1 again"].throughput) / 2
    rows = [
        Row(
            "replicas",
            "setup",
            f"MobileNetV3Large float32 as 1 stage, {args.profile} agents (the slower one "
            f"x{SLOWER:g}), {PER_REPLICA} in flight per replica, {rounds} x {requests} requests",
        ),
        Row(
            "replicas",
            "machine load (1-min load average, 2 cores): before / after",
            f"{load_before:.1f} / {os.getloadavg()[0]:.1f}",
        ),
        Row(
            "replicas",
            "1 replica (first / last run)",
            f"{runs['R=1'].throughput:.1f} / {runs['R=1 again'].throughput:.1f} req/s "
            f"(compute {runs['R=1'].stage_ms[runs['R=1'].agents[0]]:.1f} ms)",
        ),
    ]
    figures: dict[str, object] = {"one_replica_rps": one}
    figures.update({name: vars_of(runs[name]) for name in ("R=1", "R=1 again")})
    for name in ("R=2", "R=3"):
        run = runs[name]
        replicas = len(run.agents)
        ratio = run.throughput / one
        share = ", ".join(f"{run.served[a]}" for a in run.agents)
        rows.append(
            Row(
                "replicas",
                f"{name}: throughput / one replica's",
                f"{run.throughput:.1f} req/s = {ratio:.2f}x (served {share})",
                f">= {0.9 * replicas:.1f}x",
                ratio >= 0.9 * replicas,
                ratio,
            )
        )
        figures[name] = vars_of(run)
    alone = runs["slower alone"]
    capacity = one + alone.throughput
    for name in ("unequal", "unequal by capacity"):
        run = runs[name]
        share_of = run.throughput / capacity
        rows.append(
            Row(
                "replicas",
                f"{name} (1x, 3x slower; {run.window} in flight): throughput / summed capacity",
                f"{run.throughput:.1f} of {one:.1f} + {alone.throughput:.1f} req/s = "
                f"{share_of:.0%} (served {run.served[run.agents[0]]}, "
                f"{run.served[run.agents[1]]})",
                ">= 90%",
                share_of >= 0.9,
                share_of,
            )
        )
        figures[name.replace(" ", "_")] = vars_of(run)
    figures["slower_alone"] = vars_of(alone)
    # a stage-time: how long a replica takes per request, alone (its compute, its
    # hand-off and its send): 1 / its throughput alone
    rpi4_ms, slower_ms = 1000.0 / one, 1000.0 / alone.throughput
    agents = {a for run in runs.values() for a in run.agents}
    stage_time = {a: slower_ms if a == slow.agent_id else rpi4_ms for a in agents}
    queued = {name: runs[name].queued_p95(stage_time) for name in QUEUEING}
    worst = max(queued[name] for name in QUEUEING if name != "unequal")
    rows.append(
        Row(
            "replicas",
            "p95 queueing, in stage-times (R=1, 2, 3, unequal by capacity)",
            ", ".join(f"{queued[name]:.2f}" for name in QUEUEING if name != "unequal")
            + f" (a stage-time: {rpi4_ms:.1f} ms, the slower one {slower_ms:.1f} ms)",
            "< 2",
            worst < 2.0,
            worst,
        )
    )
    unequal = runs["unequal"]
    rows.append(
        Row(
            "replicas",
            f"p95 queueing, unequal with {unequal.window} in flight (Little's law: about 2)",
            f"{queued['unequal']:.2f} stage-times (served "
            f"{unequal.served[unequal.agents[0]]}, {unequal.served[unequal.agents[1]]})",
        )
    )
    failed = sum(run.failed for run in runs.values())
    correct = failed == 0
    rows.append(
        Row(
            "replicas",
            "requests answered",
            "all" if correct else f"{failed} failed",
            "all",
            correct,
        )
    )
    report("replicas that add throughput", rows, figures)


def vars_of(run: Measured) -> dict[str, object]:
    return {
        "agents": list(run.agents),
        "window": run.window,
        "rps": run.rps,
        "queued_ms": run.queued_ms,
        "served": dict(run.served),
        "failed": run.failed,
        "stage_ms": run.stage_ms,
    }


if __name__ == "__main__":
    main()
