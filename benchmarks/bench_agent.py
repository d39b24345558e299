"""What an edge agent costs: its resident memory beyond its shards, and the time it adds
to a shard's own compute (receive, decode, check, run, encode, publish).

A MobileNetV3Large (weights=None) is converted to float32 and cut in two near the middle
of its FLOPs; one stage (``--stage``, default the second half, whose output goes to a next-stage
topic the benchmark listens on) is served by an agent process (``python -m splitmq.agent``) over a
real Mosquitto. Side by side, with the same runtime and thread count:

- invoke: the stage's own ``invoke()`` in this process, on the same input;
- through the agent: client -> broker -> agent (decode, check, run, encode) -> broker
  -> client, per request, one in flight;
- broker only: the same payload relayed client -> broker -> relay -> broker -> client,
  with no decoding or compute, so the agent's own share can be told apart.

Goal (issue 23): what the agent adds beyond its invoke is at most 0.3 ms per hop: per
request, the time through the agent less its invoke there (its trace) less the relay's
round trip measured right after it.

    .venv/bin/python benchmarks/bench_agent.py [--quick] [--requests 100] [--stage 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
from _fleet import mobilenet
from _report import Row, report

from splitmq import processes
from splitmq.agent import find_runtime
from splitmq.coordinator.pool_service import PoolService
from splitmq.mosquitto import Mosquitto, config_dir
from splitmq.transport import InboundMessage, MqttTransport, parse_broker_url
from splitmq.wire import (
    Activation,
    AgentState,
    AgentStatus,
    LoadShard,
    ShardReady,
    Tensor,
    decode,
    encode,
)
from splitmq.wire.topics import COMMANDS, EVENTS, STAGE, STATUS

THREADS = 1
AGENT = "bench-agent"
SINK = "bench-sink"


def build_stage(stage: int) -> object:
    """Stage ``stage`` (0 or 1) of MobileNetV3Large (224, cached) cut near half its FLOPs."""
    from splitmq.converter import cut

    entry = mobilenet()
    variant = entry.manifest.variants["float32"]
    total = variant.cut_points[-1].cumulative_flops
    point = min(variant.cut_points, key=lambda c: abs(c.cumulative_flops - total / 2)).position
    shards = cut(entry.variant_path("float32").read_bytes(), [point])
    return shards[stage]


class Waiter:
    def __init__(self) -> None:
        self.event = threading.Event()
        self.payload: bytes | bytearray = b""

    def __call__(self, message: InboundMessage) -> None:
        self.payload = message.payload
        self.event.set()

    def wait(self, timeout_s: float = 30.0) -> bytes | bytearray:
        if not self.event.wait(timeout_s):
            raise TimeoutError("no answer")
        self.event.clear()
        return self.payload


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--quick", action="store_true", help="a smoke run: 20 requests")
    parser.add_argument("--stage", type=int, choices=[0, 1], default=1)
    args = parser.parse_args()
    if args.quick:
        args.requests = 20
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with tempfile.TemporaryDirectory(prefix="bench-agent-") as tmp:
        workdir = Path(tmp)
        shard = build_stage(args.stage)
        (in_spec,) = shard.inputs  # type: ignore[attr-defined]
        image = np.random.default_rng(1).random(in_spec.shape, dtype=np.float32)
        stage = args.stage

        loaded = find_runtime().load(shard.data, threads=THREADS)  # type: ignore[attr-defined]
        invoke_s = [loaded.run({in_spec.name: image})[1] for _ in range(args.requests)]

        with Mosquitto(config_dir() / "dev.conf", workdir / "broker") as broker:
            client = MqttTransport(parse_broker_url(broker.url()))
            client.start()
            pool = PoolService(client)
            pool.add(shard.data)  # type: ignore[attr-defined]
            pool.start()
            statuses = Waiter()
            client.subscribe(STATUS.name(agent=AGENT), statuses)
            command = processes.agent_command(
                ["--broker", broker.url()],
                AGENT,
                workdir / "cache",
                profile="host",
                threads=THREADS,
                xnnpack=True,
                battery=None,
                log_level="warning",
            )
            process = subprocess.Popen(command)
            try:
                while decode(statuses.wait(), expect=AgentStatus).state is not AgentState.ONLINE:
                    pass
                time.sleep(1.0)  # let the interpreter settle before reading its memory
                agent_process = psutil.Process(process.pid)
                rss_idle = agent_process.memory_info().rss
                ready = Waiter()
                client.subscribe(EVENTS.name(agent=AGENT), ready)
                load = LoadShard(
                    command_id="bench",
                    issuer="coordinator",
                    deployment="bench",
                    stage=stage,
                    digest=shard.sha256,  # type: ignore[attr-defined]
                    size_bytes=shard.size_bytes,  # type: ignore[attr-defined]
                    inputs=shard.inputs,  # type: ignore[attr-defined]
                    outputs=shard.outputs,  # type: ignore[attr-defined]
                    threads=THREADS,
                )
                client.publish(COMMANDS.name(agent=AGENT), encode(load)).wait()
                answer = decode(ready.wait(120))
                if not isinstance(answer, ShardReady):
                    raise SystemExit(f"load failed: {answer}")
                sink = Waiter()
                client.subscribe(STAGE.name(deployment="bench", stage=stage + 1, agent=SINK), sink)
                topic = STAGE.name(deployment="bench", stage=stage, agent=AGENT)
                relay = MqttTransport(parse_broker_url(broker.url()))
                relay.start()
                relayed: list[bytes | bytearray] = []

                def forward(_message: InboundMessage) -> None:
                    relay.publish("bench/out", relayed[0], qos=1)

                relay.subscribe("bench/in", forward)
                back = Waiter()
                client.subscribe("bench/out", back)
                through_agent, in_agent, broker_only, before_invoke = [], [], [], []
                for _ in range(args.requests + 5):  # interleaved: agent, then relay
                    activation = Activation(
                        request_id=os.urandom(16),
                        attempt=0,
                        deployment="bench",
                        stage=stage,
                        route=((AGENT,),) * stage + ((AGENT,), (SINK,)),
                        callback="splitmq/v1/clients/bench/result",
                        deadline_ms=0,
                        tensors=(Tensor(in_spec.name, image),),
                    )
                    request_bytes = encode(activation)
                    start = time.perf_counter()
                    client.publish(topic, request_bytes)
                    forwarded = sink.wait()
                    through_agent.append(time.perf_counter() - start)
                    (entry,) = decode(forwarded, expect=Activation).trace
                    in_agent.append((entry.finished_ms - entry.started_ms) / 1000)
                    before_invoke.append((entry.started_ms - entry.received_ms) / 1000)
                    relayed[:] = [forwarded]
                    start = time.perf_counter()
                    client.publish("bench/in", request_bytes)
                    back.wait()
                    broker_only.append(time.perf_counter() - start)
                through_agent, in_agent = through_agent[5:], in_agent[5:]
                broker_only = broker_only[5:]
                rss_loaded = agent_process.memory_info().rss
                relay.close()
            finally:
                processes.stop([process])
            client.close()

    invoke_ms = statistics.median(invoke_s) * 1000
    agent_ms = statistics.median(through_agent) * 1000
    broker_ms = statistics.median(broker_only) * 1000
    in_agent_ms = statistics.median(in_agent) * 1000
    before_ms = statistics.median(before_invoke[5:]) * 1000
    added_ms = agent_ms - invoke_ms
    # per request: through the agent, less its own invoke (its trace), less the relay's
    # round trip measured right after it (interleaved, so load drifts cancel)
    own_ms = 1000 * statistics.median(
        total - invoke - relay
        for total, invoke, relay in zip(through_agent, in_agent, broker_only, strict=True)
    )
    shard_bytes = shard.size_bytes  # type: ignore[attr-defined]
    own_pct = 100 * own_ms / in_agent_ms
    rows = [
        Row(
            "agent",
            f"stage {args.stage} of MobileNetV3Large: invoke p50",
            f"{invoke_ms:.2f} ms ({shard_bytes / 1e6:.1f} MB, in {list(in_spec.shape)})",
        ),
        Row(
            "agent",
            "through the agent / its invoke there / broker only, p50",
            f"{agent_ms:.2f} / {in_agent_ms:.2f} / {broker_ms:.2f} ms",
        ),
        Row(
            "agent",
            "added by the agent itself, beyond invoke (median per request)",
            f"{own_ms:.2f} ms ({own_pct:.1f}% of invoke)",
            "<= 0.3 ms",
            own_ms <= 0.3,
            own_ms,
        ),
        Row(
            "agent",
            "from its receipt (network thread) to its invoke: hand-off, decode, checks, p50",
            f"{before_ms:.2f} ms",
        ),
        Row(
            "agent",
            "agent RSS: no shard / serving",
            f"{rss_idle / 1e6:.0f} / {rss_loaded / 1e6:.0f} MB "
            f"({(rss_loaded - shard_bytes) / 1e6:.0f} MB beyond the shard)",
        ),
    ]
    report(
        "edge agent overhead",
        rows,
        {
            "requests": args.requests,
            "stage": args.stage,
            "threads": THREADS,
            "runtime": find_runtime().kind.value,
            "shard_bytes": shard_bytes,
            "invoke_ms_p50": invoke_ms,
            "through_agent_ms_p50": agent_ms,
            "broker_only_ms_p50": broker_ms,
            "agent_own_ms_p50": own_ms,
            "invoke_in_agent_ms_p50": in_agent_ms,
            "agent_overhead_pct": own_pct,
            "agent_and_broker_overhead_pct": 100 * added_ms / invoke_ms,
            "rss_idle_bytes": rss_idle,
            "rss_loaded_bytes": rss_loaded,
        },
    )


if __name__ == "__main__":
    main()
