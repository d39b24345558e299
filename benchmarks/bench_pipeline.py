"""Pipelined throughput: two stages on two agents against the unsplit model run in turn (goal 3).

MobileNetV3Large float32 224x224 is deployed by the coordinator in 2 stages (objective
``throughput``: the two stages balanced) on 2 agent processes (``host`` profile, one
interpreter thread each, XNNPACK). The client streams requests with many in flight
(``Client.stream``), so while agent 2 runs request n, agent 1 runs request n + 1.
Against it, in interleaved rounds on the same inputs: the unsplit model invoked in
this process one request after another, same runtime and one thread.

This machine has two cores: two stages can at best double the throughput (2.0x). The
broker, the client and both agents' network threads share the same two cores.

Every streamed output is checked against the same two shards chained in this process
(bit-identical), in the run.

    .venv/bin/python benchmarks/bench_pipeline.py [--quick] [--rounds 9] [--requests 120]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from _fleet import MODEL, AgentSpec, fleet, image, mobilenet
from _report import Row, report

from splitmq.agent import find_runtime
from splitmq.client import Client, ClientConfig, InferenceResult
from splitmq.converter import cut

THREADS = 1
AGENTS = ("agent-1", "agent-2")
GOAL = 1.7
IN_FLIGHT = 8
DISTINCT_INPUTS = 4


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a smoke run: few rounds")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--requests", type=int, help="requests per side per round")
    parser.add_argument("--in-flight", type=int, default=IN_FLIGHT)
    args = parser.parse_args()
    rounds = args.rounds or (2 if args.quick else 9)
    requests = args.requests or (30 if args.quick else 120)

    entry = mobilenet()
    inputs = [image(entry, seed) for seed in range(DISTINCT_INPUTS)]
    model = entry.variant_path("float32").read_bytes()
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
    with fleet(specs) as running:
        deployment = running.deploy(stages=2, objective="throughput", expect_agents=AGENTS)
        shards = cut(model, [stage.start_op for stage in deployment.stages[1:]])
        if [s.sha256 for s in shards] != [stage.digest for stage in deployment.stages]:
            raise SystemExit("the shards cut here differ from the deployed ones")
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

        config = ClientConfig(model=MODEL, deadline_s=60.0, max_in_flight=args.in_flight)
        wrong = 0
        failed = 0
        with Client(running.url, config=config) as client:

            def streamed(count: int) -> float:
                nonlocal wrong, failed
                start = time.perf_counter()
                frames = (inputs[i % DISTINCT_INPUTS] for i in range(count))
                for item in client.stream(frames, ordered=False):
                    if not isinstance(item, InferenceResult):
                        failed += 1
                        continue
                    assert item.index is not None
                    got = item.outputs[output_spec.name]
                    if not np.array_equal(got, expected[item.index % DISTINCT_INPUTS]):
                        wrong += 1
                return count / (time.perf_counter() - start)

            sequential(20)  # warm-up, excluded
            streamed(4 * args.in_flight)
            wrong = failed = 0
            local_rps: list[float] = []
            split_rps: list[float] = []
            for index in range(rounds):
                if index % 2:
                    split_rps.append(streamed(requests))
                    local_rps.append(sequential(requests))
                else:
                    local_rps.append(sequential(requests))
                    split_rps.append(streamed(requests))

    ratio = statistics.median(s / lo for s, lo in zip(split_rps, local_rps, strict=True))
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
            "throughput splitmq / unsplit",
            f"{ratio:.2f}x",
            f">= {GOAL}x (2.0x limit)",
            ratio >= GOAL,
            ratio,
        ),
        Row(
            "3 pipeline",
            "outputs checked in the run",
            f"{rounds * requests} bit-identical to the chain"
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
            "ratio": ratio,
            "wrong": wrong,
            "failed": failed,
        },
    )


if __name__ == "__main__":
    main()
