"""Where the pipeline's CPU goes: each process's CPU time per request, splitmq against the floor.

The pipeline of ``bench_pipeline`` (MobileNetV3Large float32 224x224 in 2 stages on 2
agent processes, ``host`` profile, one interpreter thread each, a real Mosquitto, 8
requests in flight) is bound by CPU on a 2-core machine: both stages, the broker and
the client share the cores, so each millisecond of CPU per request that a framework
adds is throughput lost. This script streams long runs of requests (``--requests``,
1500 by default, against 120 per round in ``bench_pipeline``) through splitmq at each
hop QoS and through the floor at each QoS (the same shards as bare MQTT clients through
the same broker, ``_raw_chain.py``), rounds alternating, and reads the CPU time
(user + system) of every process before and after each stream:

- each stage's process: the agent (its network thread, its stage's worker, the rest),
  or the floor's bare client;
- Mosquitto;
- the client: this process while it streams (for splitmq, its caller's thread and its
  network thread apart).

Each figure is the median over the rounds, in ms of CPU per request; throughputs are
quoted beside them, and each process's wake-ups per request (voluntary context
switches: each time one of its threads slept and was woken, at a cost in CPU to it and
to whatever its waking preempted); a stage's CPU and wake-ups also by thread (its
busiest by CPU, in an agent the stage's worker; the next, its network thread; the
rest). No goal is asserted: the goal is ``bench_pipeline``'s; this says where the
difference goes. Each of splitmq's streams is set against the floor at its own hops'
QoS.

    .venv/bin/python benchmarks/bench_cpu.py [--quick] [--rounds 2] [--requests 1500]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np
from _fleet import (
    MODEL,
    AgentSpec,
    cpu_s,
    deployed_shards,
    fleet,
    float32_and_images,
    thread_cpu_s,
    thread_wakes,
    wakes,
)
from _raw_chain import RawChain, write_shards
from _report import Row, report

from splitmq.client import Client, ClientConfig, InferenceResult

AGENTS = ("agent-1", "agent-2")
SPLITMQ = {"splitmq": "floor at QoS 1", "splitmq, hop_qos=0": "floor"}
"""splitmq's two clients, each with the floor at its hops' QoS."""
FLOORS = {"floor": 0, "floor at QoS 1": 1}
IN_FLIGHT = 8
DISTINCT_INPUTS = 4


def threads_s(names: dict[int, str]) -> dict[str, float]:
    """CPU time so far of this process's threads named in ``names`` (by native id)."""
    found = thread_cpu_s(os.getpid())
    return {name: found.get(native, 0.0) for native, name in names.items()}


class Measured:
    """CPU per request by process (ms) and throughput, over the rounds of one side."""

    def __init__(self) -> None:
        self.ms: dict[str, list[float]] = defaultdict(list)
        self.wakes: dict[str, list[float]] = defaultdict(list)
        self.rates: list[float] = []

    def add(self, before: Reading, after: Reading, count: int, s: float) -> None:
        for name, value in after.cpu_s.items():
            self.ms[name].append((value - before.cpu_s[name]) * 1000.0 / count)
        for name, value in after.wakes.items():
            self.wakes[name].append((value - before.wakes[name]) / count)
        for name, threads in after.threads.items():
            for rank, (cpu, woken) in enumerate(by_cpu(before.threads[name], threads)):
                self.ms[f"{name}: {THREAD_RANKS[rank]}"].append(cpu * 1000.0 / count)
                self.wakes[f"{name}: {THREAD_RANKS[rank]}"].append(woken / count)
        self.rates.append(count / s)

    def p50(self, name: str) -> float:
        return statistics.median(self.ms[name])

    def wakes_p50(self, name: str) -> float:
        return statistics.median(self.wakes[name])


THREAD_RANKS = ("busiest thread", "next", "the rest")
"""A stage process's threads by their CPU in a stream: in an agent, the busiest is its
stage's worker (the invokes), the next its network thread."""


@dataclass(frozen=True)
class Reading:
    """CPU seconds by process (and the client's threads), wake-ups by process, and each
    stage process's threads' (wake-ups, CPU seconds) by native id."""

    cpu_s: dict[str, float]
    wakes: dict[str, int]
    threads: dict[str, dict[int, tuple[int, float]]]


def by_cpu(
    before: dict[int, tuple[int, float]], after: dict[int, tuple[int, float]]
) -> list[tuple[float, float]]:
    """CPU seconds and wake-ups between two readings: the busiest thread's, the
    next's, the rest's."""
    changes = sorted(
        (
            (cpu - before.get(tid, (0, 0.0))[1], float(woken - before.get(tid, (0, 0.0))[0]))
            for tid, (woken, cpu) in after.items()
        ),
        reverse=True,
    )
    changes += [(0.0, 0.0), (0.0, 0.0)]
    rest = changes[2:]
    return [changes[0], changes[1], (sum(c for c, _ in rest), sum(w for _, w in rest))]


def threads_of(pid: int) -> dict[int, tuple[int, float]]:
    cpu = thread_cpu_s(pid)
    return {tid: (woken, cpu.get(tid, 0.0)) for tid, woken in thread_wakes(pid).items()}


def measure(
    side: Measured, pids: dict[str, int], client_threads: dict[int, str], run: Callable[[], int]
) -> None:
    """Run one stream (``run`` returns its request count) between two readings."""

    def read() -> Reading:
        found = {name: cpu_s(pid) for name, pid in pids.items()}
        found.update({f"client: {k}": v for k, v in threads_s(client_threads).items()})
        stages = {name: threads_of(pid) for name, pid in pids.items() if name.startswith("stage")}
        woken = {
            name: sum(w for w, _ in stages[name].values()) if name in stages else wakes(pid)
            for name, pid in pids.items()
        }
        return Reading(found, woken, stages)

    before, start = read(), time.perf_counter()
    count = run()
    elapsed, after = time.perf_counter() - start, read()
    side.add(before, after, count, elapsed)


def named_threads(client: Client) -> dict[int, str]:
    """The native ids of a client's network thread and of this (the caller's) thread."""
    names = {threading.get_native_id(): "caller"}
    for thread in threading.enumerate():
        if thread.native_id is not None and thread.name.endswith(f"{client.client_id}-mqtt"):
            names[thread.native_id] = "network thread"
    return names


def streamed(client: Client, inputs: list[np.ndarray], count: int) -> int:
    frames: Iterable[np.ndarray] = (inputs[i % len(inputs)] for i in range(count))
    failed = sum(not isinstance(item, InferenceResult) for item in client.stream(frames))
    if failed:
        raise SystemExit(f"{failed} of {count} streamed requests failed")
    return count


def floor_stream(chain: RawChain, feeds: list[dict[str, np.ndarray]]) -> int:
    return len(chain.stream(feeds, IN_FLIGHT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a smoke run: short streams")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--requests", type=int, help="requests per stream")
    args = parser.parse_args()
    rounds = args.rounds or (1 if args.quick else 2)
    count = args.requests or (100 if args.quick else 1500)

    model, inputs = float32_and_images(DISTINCT_INPUTS)
    specs = [AgentSpec(agent_id, "host", 1) for agent_id in AGENTS]
    sides = {name: Measured() for name in (*SPLITMQ, *FLOORS)}
    with fleet(specs) as running, tempfile.TemporaryDirectory() as tmp:
        deployment = running.deploy(stages=2, objective="throughput", expect_agents=AGENTS)
        stage_of = {s.replicas[0]: s.stage for s in deployment.stages}
        shards = deployed_shards(model, deployment)
        output = deployment.stages[-1].outputs[0]
        input_name = deployment.stages[0].inputs[0].name
        out_specs = {output.name: (tuple(output.shape), np.dtype(output.dtype))}
        paths = write_shards(Path(tmp), [s.data for s in shards])
        chains = {
            name: RawChain(paths, out_specs, 1, broker=running.broker_address, qos=qos)
            for name, qos in FLOORS.items()
        }
        broker_pid = running.broker.pid
        assert broker_pid is not None
        shared = {"Mosquitto": broker_pid, "client": os.getpid()}
        agent_pids = {f"stage {stage_of[a]}": pid for a, pid in running.pids().items()} | shared
        floor_pids = {
            name: {f"stage {i}": pid for i, pid in enumerate(chain.pids)} | shared
            for name, chain in chains.items()
        }
        config = ClientConfig(model=MODEL, deadline_s=60.0, max_in_flight=IN_FLIGHT)
        feeds = [{input_name: inputs[i % len(inputs)]} for i in range(count)]
        with (
            Client(running.url, config=config) as client,
            Client(running.url, config=replace(config, hop_qos=0)) as client_q0,
        ):
            streamed(client, inputs, 50)  # warm-up: plans, layouts, templates
            streamed(client_q0, inputs, 50)
            for chain in chains.values():
                chain.stream(feeds[:50], IN_FLIGHT)
            for round_number in range(rounds):
                print(f"round {round_number + 1} of {rounds}", flush=True)
                for name, streaming in (("splitmq", client), ("splitmq, hop_qos=0", client_q0)):
                    threads = named_threads(streaming)
                    run = partial(streamed, streaming, inputs, count)
                    measure(sides[name], agent_pids, threads, run)
                for name, chain in chains.items():
                    run = partial(floor_stream, chain, feeds)
                    measure(sides[name], floor_pids[name], {}, run)
        for chain in chains.values():
            chain.close()
    report("where the pipeline's CPU goes", rows(sides, count, rounds), figures(sides))


def rows(sides: dict[str, Measured], count: int, rounds: int) -> list[Row]:
    scenario = "cpu"
    table = [
        Row(
            scenario,
            "setup",
            f"2 stages on 2 agents, {IN_FLIGHT} in flight, streams of {count} requests, "
            f"{rounds} round(s); ms of CPU per request, median over the rounds",
        )
    ]
    parts = ("stage 0", "stage 1", "Mosquitto", "client")
    for name, side in sides.items():
        total = sum(side.p50(p) for p in parts)
        text = ", ".join(f"{p} {side.p50(p):.3f}" for p in parts)
        if "client: network thread" in side.ms:
            text += (
                f" (its caller {side.p50('client: caller'):.3f}, its network thread "
                f"{side.p50('client: network thread'):.3f})"
            )
        table.append(Row(scenario, f"{name}: CPU per request", f"{text}; total {total:.3f}"))
        woken = ", ".join(f"{p} {side.wakes_p50(p):.2f}" for p in parts)
        table.append(Row(scenario, f"{name}: wake-ups per request", woken))
        by_thread = "; ".join(
            f"{p}: "
            + ", ".join(
                f"{r} {side.p50(f'{p}: {r}'):.3f} ms, {side.wakes_p50(f'{p}: {r}'):.2f}"
                for r in THREAD_RANKS
            )
            for p in parts[:2]
        )
        table.append(Row(scenario, f"{name}: the stages' threads, CPU and wake-ups", by_thread))
        rate = statistics.median(side.rates)
        if name in FLOORS:
            table.append(Row(scenario, f"{name}: throughput", f"{rate:.1f} req/s", value=rate))
            continue
        floor = sides[SPLITMQ[name]]
        ratio = rate / statistics.median(floor.rates)
        beyond = total - sum(floor.p50(p) for p in parts)
        table.append(
            Row(
                scenario,
                f"{name}: throughput / the {SPLITMQ[name]}'s; CPU beyond it",
                f"{rate:.1f} req/s = {ratio:.1%}; {beyond:+.3f} ms per request",
                value=ratio,
            )
        )
    return table


def figures(sides: dict[str, Measured]) -> dict[str, object]:
    return {
        name: {"cpu_ms": dict(side.ms), "wakes": dict(side.wakes), "requests_per_s": side.rates}
        for name, side in sides.items()
    }


if __name__ == "__main__":
    main()
