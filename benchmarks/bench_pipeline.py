"""Pipelined throughput: two stages on two agents against the unsplit model run in turn (goal 3).

MobileNetV3Large float32 224x224 is deployed by the coordinator in 2 stages (objective
``throughput``: the two stages balanced) on 2 agent processes (``host`` profile, one
interpreter thread each, XNNPACK). The client streams requests with many in flight
(``Client.stream``), so while agent 2 runs request n, agent 1 runs request n + 1; each
hop at QoS 1 (at least once, the default) and, from a second client, at QoS 0
(``ClientConfig.hop_qos=0``: at most once, as the floor's bare clients).
Against it, in interleaved rounds on the same inputs: the unsplit model invoked in
this process one request after another, same runtime and one thread.

This machine has two cores: two stages can at best double the throughput (2.0x). The
broker, the client and both agents' network threads share the same two cores. What the
machine itself allows is measured in the same rounds too: the two shards invoked in two
processes side by side, in a loop, with no messaging at all (``ceiling``). Two
interpreters running at once on two cores are each slower than one alone (shared caches
and memory bandwidth, and any other load on the machine), and the cut is never quite
balanced, so the ceiling is below 2.0x; the row "share of the ceiling" says how much of
what is possible here splitmq delivers.

Between the two, what any framework is bound by (``_raw_chain.py``, one thread per
stage process, as many requests in flight): the two shards chained by bare TCP sockets
with no broker, and the floors of this setting, the same through the broker with bare
MQTT clients at QoS 0 and at QoS 1. Each of splitmq's streams is held to the floor at
its own hops' QoS: at QoS 1 the protocol itself asks for a PUBACK per hop, which no
framework can leave out. Its throughput against the floor at QoS 0 is printed too:
what at-least-once costs, the protocol's share and splitmq's together.

Every streamed output is checked against the same two shards chained in this process
(bit-identical), in the run.

    .venv/bin/python benchmarks/bench_pipeline.py [--quick] [--rounds 9] [--requests 120]
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np
from _fleet import MODEL, AgentSpec, deployed_shards, fleet, float32_and_images
from _raw_chain import RawChain, floors, write_shards
from _report import Row, report

from splitmq.agent import find_runtime
from splitmq.client import Client, ClientConfig, InferenceResult

THREADS = 1
AGENTS = ("agent-1", "agent-2")
SUPERSEDED = 1.7
"""The first goal, of the unsplit model: above what bare processes through the broker
reach on this kind of machine, so restated against that floor (``GOAL_FLOOR``); the
ratio is still printed, as context."""
GOAL_FLOOR = 0.92
"""Issue 23: splitmq's throughput at least this share of the floor measured in the same run."""
IN_FLIGHT = 8
DISTINCT_INPUTS = 4


def shard_loop(model: bytes, threads: int, pipe: Connection) -> None:
    """A process that invokes one shard ``count`` times each time it is sent ``count``."""
    shard = find_runtime().load(model, threads=threads)
    feeds = {s.name: np.zeros(s.shape, s.dtype) for s in shard.inputs}
    shard.run(feeds)
    pipe.send("ready")
    while (count := pipe.recv()) is not None:
        for _ in range(count):
            shard.run(feeds)
        pipe.send("done")


class Ceiling:
    """The shards in processes of their own, invoked side by side with no messaging."""

    def __init__(self, shards: list[bytes], threads: int):
        context = multiprocessing.get_context("spawn")
        self._pipes: list[Connection] = []
        self._processes = []
        for data in shards:
            mine, theirs = context.Pipe()
            process = context.Process(target=shard_loop, args=(data, threads, theirs))
            process.start()
            self._pipes.append(mine)
            self._processes.append(process)
        for pipe in self._pipes:
            pipe.recv()

    def throughput(self, count: int) -> float:
        """Requests per second when every shard runs ``count`` times, all at once."""
        start = time.perf_counter()
        for pipe in self._pipes:
            pipe.send(count)
        for pipe in self._pipes:
            pipe.recv()
        return count / (time.perf_counter() - start)

    def close(self) -> None:
        for pipe, process in zip(self._pipes, self._processes, strict=True):
            pipe.send(None)
            process.join(10)


def percent_down(share: float) -> str:
    """``share`` as a percentage to a tenth of a point, rounded down: a share just below
    its goal never prints as the goal (0.9195 is 91.9%, not 92%)."""
    return f"{math.floor(share * 1000 + 1e-9) / 10:.1f}%"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a smoke run: few rounds")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--requests", type=int, help="requests per side per round")
    parser.add_argument("--in-flight", type=int, default=IN_FLIGHT)
    args = parser.parse_args()
    rounds = args.rounds or (2 if args.quick else 9)
    requests = args.requests or (30 if args.quick else 120)

    model, inputs = float32_and_images(DISTINCT_INPUTS)
    runtime = find_runtime()
    full = runtime.load(model, threads=THREADS)
    (input_spec,) = full.inputs
    (output_spec,) = full.outputs

    def sequential(count: int) -> float:
        start = time.perf_counter()
        for index in range(count):
            full.run({input_spec.name: inputs[index % DISTINCT_INPUTS]})
        return count / (time.perf_counter() - start)

    specs = [AgentSpec(agent_id, "host", THREADS) for agent_id in AGENTS]
    with fleet(specs) as running, tempfile.TemporaryDirectory() as tmp:
        deployment = running.deploy(stages=2, objective="throughput", expect_agents=AGENTS)
        shards = deployed_shards(model, deployment)
        chained = [runtime.load(s.data, threads=THREADS) for s in shards]
        expected = []
        for x in inputs:
            tensors = {input_spec.name: x}
            for shard in chained:
                outputs, _ = shard.run({s.name: tensors[s.name] for s in shard.inputs})
                tensors.update({t.name: np.array(t.array) for t in outputs})
            expected.append(tensors[output_spec.name])
        stage_ms = [
            statistics.median(
                shard.run({s.name: np.zeros(s.shape, s.dtype) for s in shard.inputs})[1] * 1e3
                for _ in range(20)
            )
            for shard in chained
        ]
        del chained
        ceiling = Ceiling([s.data for s in shards], THREADS)
        paths = write_shards(Path(tmp), [s.data for s in shards])
        out_specs = {output_spec.name: (tuple(output_spec.shape), np.dtype(output_spec.dtype))}
        raw_chains = floors(paths, out_specs, THREADS, running.broker_address)

        config = ClientConfig(model=MODEL, deadline_s=60.0, max_in_flight=args.in_flight)
        wrong = 0
        failed = 0
        with (
            Client(running.url, config=config) as client,
            Client(running.url, config=replace(config, hop_qos=0)) as client_q0,
        ):

            def streamed_by(streaming: Client) -> Callable[[int], float]:
                def run(count: int) -> float:
                    nonlocal wrong, failed
                    start = time.perf_counter()
                    frames = (inputs[i % DISTINCT_INPUTS] for i in range(count))
                    for item in streaming.stream(frames, ordered=False):
                        if not isinstance(item, InferenceResult):
                            failed += 1
                            continue
                        assert item.index is not None
                        got = item.outputs[output_spec.name]
                        if not np.array_equal(got, expected[item.index % DISTINCT_INPUTS]):
                            wrong += 1
                    return count / (time.perf_counter() - start)

                return run

            streamed, streamed_q0 = streamed_by(client), streamed_by(client_q0)

            def raw(chain: RawChain) -> Callable[[int], float]:
                def run(count: int) -> float:
                    nonlocal wrong
                    feeds = [{input_spec.name: inputs[i % DISTINCT_INPUTS]} for i in range(count)]
                    start = time.perf_counter()
                    answers = chain.stream(feeds, args.in_flight)
                    elapsed = time.perf_counter() - start
                    for index, answer in enumerate(answers):
                        got = answer[output_spec.name]
                        if not np.array_equal(got, expected[index % DISTINCT_INPUTS]):
                            wrong += 1
                    return count / elapsed

                return run

            sequential(20)  # warm-up, excluded
            streamed(4 * args.in_flight)
            streamed_q0(4 * args.in_flight)
            ceiling.throughput(20)
            for chain in raw_chains.values():
                raw(chain)(4 * args.in_flight)
            wrong = failed = 0
            sides: dict[str, Callable[[int], float]] = {
                "local": sequential,
                "split": streamed,
                "split_q0": streamed_q0,
                "ceiling": ceiling.throughput,
                **{name: raw(chain) for name, chain in raw_chains.items()},
            }
            rps: dict[str, list[float]] = {name: [] for name in sides}
            for index in range(rounds):  # the side that goes first rotates
                names = list(sides)
                turn = index % len(names)
                for name in names[turn:] + names[:turn]:
                    rps[name].append(sides[name](requests))
            ceiling.close()
            for chain in raw_chains.values():
                chain.close()

    def median_ratio(a: str, b: str) -> float:
        """The median over rounds of side ``a``'s throughput over side ``b``'s."""
        return statistics.median(x / y for x, y in zip(rps[a], rps[b], strict=True))

    local_rps, split_rps, ceiling_rps = rps["local"], rps["split"], rps["ceiling"]
    raw_rps, floor_rps = rps["raw"], rps["raw_broker"]
    ratio, share = median_ratio("split", "local"), median_ratio("split", "ceiling")
    ceiling_ratio, raw_ratio = median_ratio("ceiling", "local"), median_ratio("raw", "local")
    floor_ratio, floor_share = (
        median_ratio("raw_broker", "local"),
        median_ratio("split", "raw_broker"),
    )
    floor_share_q0 = median_ratio("split_q0", "raw_broker")
    floor_q1_ratio = median_ratio("raw_broker_q1", "local")
    floor_share_q1 = median_ratio("split", "raw_broker_q1")
    correct = wrong == 0 and failed == 0
    stages = ", ".join(f"[{s.start_op},{s.end_op}) {s.replicas[0]}" for s in deployment.stages)
    rows = [
        Row("3 pipeline", "setup", f"2 stages {stages}, {args.in_flight} in flight"),
        Row(
            "3 pipeline",
            "shard invoke, this process",
            " + ".join(f"{ms:.2f}" for ms in stage_ms) + " ms",
        ),
        Row("3 pipeline", "unsplit, sequential", f"{statistics.median(local_rps):.1f} req/s"),
        Row("3 pipeline", "splitmq stream", f"{statistics.median(split_rps):.1f} req/s"),
        Row(
            "3 pipeline",
            "splitmq stream, hop_qos=0",
            f"{statistics.median(rps['split_q0']):.1f} req/s",
        ),
        Row(
            "3 pipeline",
            "ceiling: the 2 shards side by side, no messaging",
            f"{statistics.median(ceiling_rps):.1f} req/s ({ceiling_ratio:.2f}x unsplit)",
            value=ceiling_ratio,
        ),
        Row(
            "3 pipeline",
            "2 processes over bare sockets, no broker",
            f"{statistics.median(raw_rps):.1f} req/s ({raw_ratio:.2f}x unsplit)",
            value=raw_ratio,
        ),
        Row(
            "3 pipeline",
            "floor: 2 processes, bare MQTT through the broker",
            f"{statistics.median(floor_rps):.1f} req/s ({floor_ratio:.2f}x unsplit)",
            value=floor_ratio,
        ),
        Row(
            "3 pipeline",
            "floor at QoS 1: the same, each hop acknowledged",
            f"{statistics.median(rps['raw_broker_q1']):.1f} req/s ({floor_q1_ratio:.2f}x unsplit)",
            value=floor_q1_ratio,
        ),
        Row(
            "3 pipeline",
            "splitmq / the floor at QoS 1 (both at least once)",
            percent_down(floor_share_q1),
            f">= {GOAL_FLOOR:.0%}",
            floor_share_q1 >= GOAL_FLOOR,
            floor_share_q1,
        ),
        Row(
            "3 pipeline",
            "splitmq, hop_qos=0 / the floor (both at most once)",
            percent_down(floor_share_q0),
            f">= {GOAL_FLOOR:.0%}",
            floor_share_q0 >= GOAL_FLOOR,
            floor_share_q0,
        ),
        Row(
            "3 pipeline",
            "splitmq / the floor (at least once / at most once: what at-least-once costs)",
            f"{floor_share:.0%}",
            value=floor_share,
        ),
        Row(
            "3 pipeline",
            "splitmq / ceiling",
            f"{share:.0%}",
            value=share,
        ),
        Row(
            "3 pipeline",
            "throughput splitmq / unsplit",
            f"{ratio:.2f}x (the first goal, {SUPERSEDED}x, is above the floor's "
            f"{floor_q1_ratio:.2f}x: restated against the floor above)",
            value=ratio,
        ),
        Row(
            "3 pipeline",
            "outputs checked in the run",
            f"{5 * rounds * requests} (splitmq at both QoS, raw chains) bit-identical to the chain"
            if correct
            else f"{wrong} wrong, {failed} failed",
            "correct",
            correct,
        ),
    ]
    report(
        "pipelined throughput: MobileNetV3Large 224 float32, 2 stages, 2 agents",
        rows,
        {
            "rounds": rounds,
            "requests_per_round": requests,
            "in_flight": args.in_flight,
            "threads": THREADS,
            "runtime": f"{runtime.kind} {runtime.version}",
            "stages": [
                {"start_op": s.start_op, "end_op": s.end_op, "agent": s.replicas[0]}
                for s in deployment.stages
            ],
            "stage_invoke_ms": stage_ms,
            "local_rps": local_rps,
            "split_rps": split_rps,
            "split_q0_rps": rps["split_q0"],
            "ceiling_rps": ceiling_rps,
            "ratio": ratio,
            "ceiling_ratio": ceiling_ratio,
            "share_of_ceiling": share,
            "raw_rps": raw_rps,
            "raw_ratio": raw_ratio,
            "floor_rps": floor_rps,
            "floor_ratio": floor_ratio,
            "share_of_floor": floor_share,
            "share_of_floor_q0": floor_share_q0,
            "floor_q1_rps": rps["raw_broker_q1"],
            "floor_q1_ratio": floor_q1_ratio,
            "share_of_floor_q1": floor_share_q1,
            "wrong": wrong,
            "failed": failed,
        },
    )


if __name__ == "__main__":
    main()
