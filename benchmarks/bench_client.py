"""The client's own work per request, against a responder that answers at once (no goal).

``bench_cpu`` finds the client the largest share of what splitmq adds to the
pipeline's CPU. Here nothing else runs: a real Mosquitto, and in another process a
responder that plays the coordinator (a fixed plan, a retained deployment) and the one
agent of a one-stage deployment (each activation answered at once with a fixed result,
1,000 float32 scores and a trace entry, as an agent lays it out). The input is
MobileNetV3Large's (1, 224, 224, 3) float32, 602 kB, as in the split and the pipeline.

Rounds alternate one request at a time (``Client.infer``) and a stream
(``Client.stream``, 8 in flight); each figure is the median over the rounds:

- the client's CPU per request (user and system, this process), and by thread: the
  caller's and the network thread's (from ``/proc``);
- with ``--instructions`` (valgrind installed), the instructions per request each way,
  counted by callgrind around the measured requests alone: unlike times, they do not
  drift with the machine's load, so a change to the client's code can be weighed in
  one run of each side.

    .venv/bin/python benchmarks/bench_client.py [--quick] [--rounds 5] [--requests 1000]
        [--instructions]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
from _report import Row, report

from splitmq.client import Client, ClientConfig
from splitmq.transport import InboundMessage, MqttTransport, parse_broker_url
from splitmq.wire import (
    Deployment,
    Plan,
    PlanRequest,
    StageSpec,
    Tensor,
    TensorSpec,
    decode,
    encode,
    hop,
)
from splitmq.wire.topics import DEPLOYMENTS, PLAN_REQUESTS, PLANS, STAGE

MODEL = "bench-client"
AGENT = "responder"
INPUT = TensorSpec("input", (1, 224, 224, 3), "float32")
OUTPUT = TensorSpec("scores", (1, 1000), "float32")
IN_FLIGHT = 8
MODES = ("one at a time", "stream")


@dataclass(frozen=True)
class Round:
    """One round of one mode, per request: ms of CPU, of wall time, and the two threads'
    (user, system) ms."""

    cpu_ms: float
    wall_ms: float
    caller_ms: tuple[float, float]
    network_ms: tuple[float, float]


def respond(url: str) -> None:
    """The coordinator and the agent, answering at once; until stdin closes."""
    transport = MqttTransport(parse_broker_url(url))
    transport.start()
    stage = StageSpec(0, 0, 1, "0" * 64, 1, inputs=(INPUT,), outputs=(OUTPUT,), replicas=(AGENT,))
    plan = Plan("", "d", 1, MODEL, "v1", "float32", ((AGENT,),), 1.0, 0.0)
    scores = np.random.default_rng(0).standard_normal(OUTPUT.shape).astype(np.float32)
    outputs = (Tensor(OUTPUT.name, scores),)

    def on_plan(message: InboundMessage) -> None:
        asked = decode(message.payload, expect=PlanRequest)
        answer = encode(replace(plan, request_id=asked.request_id))
        transport.publish(PLANS.name(client=asked.client_id), answer)

    def on_activation(message: InboundMessage) -> None:
        activation = hop.read(message.payload)
        assert activation is not None
        now_ms = time.time() * 1000.0
        entry = hop.trace_entry(
            stage=0,
            agent_id=AGENT,
            received_ms=now_ms,
            started_ms=now_ms,
            finished_ms=now_ms,
            bytes_in=len(message.payload),
            attempt=activation.attempt,
            bytes_out=scores.nbytes,
            energy_j=0.0,
        )
        result = hop.result_parts(activation, outputs, entry, AGENT)
        transport.publish(activation.callback, result, qos=message.qos)

    transport.subscribe(PLAN_REQUESTS.name(), on_plan)
    transport.subscribe(STAGE.name(deployment="d", stage=0, agent=AGENT), on_activation)
    deployment = Deployment("d", MODEL, "v1", "float32", 1, stages=(stage,))
    transport.publish(DEPLOYMENTS.name(deployment="d"), encode(deployment), retain=True).wait(10)
    print("ready", flush=True)
    sys.stdin.read()
    transport.close()


def thread_cpu_s() -> dict[str, tuple[float, float]]:
    """User and system CPU seconds of this process's threads, by the name's last word."""
    tick = os.sysconf("SC_CLK_TCK")
    found = {}
    for thread in threading.enumerate():
        try:
            fields = Path(f"/proc/self/task/{thread.native_id}/stat").read_text()
        except OSError:
            continue
        values = fields.rsplit(")", 1)[1].split()
        found[thread.name.rsplit("-", 1)[-1]] = (int(values[11]) / tick, int(values[12]) / tick)
    return found


def requests(client: Client, image: np.ndarray, mode: str, count: int) -> Callable[[], None]:
    def run() -> None:
        if mode == "stream":
            for _ in client.stream([image] * count, max_in_flight=IN_FLIGHT):
                pass
        else:
            for _ in range(count):
                client.infer(image)

    return run


def per_request(
    before: dict[str, tuple[float, float]],
    after: dict[str, tuple[float, float]],
    name: str,
    count: int,
) -> tuple[float, float]:
    """Thread ``name``'s (user, system) ms of CPU per request between the two readings."""
    (user, system), (was_user, was_system) = after[name], before[name]
    return (user - was_user) * 1000 / count, (system - was_system) * 1000 / count


def toggle_callgrind(on: bool) -> None:
    subprocess.run(
        ["callgrind_control", "-i", "on" if on else "off", str(os.getpid())],
        stdout=subprocess.DEVNULL,
        check=True,
    )


def run_client(url: str, rounds: int, count: int, counted: str | None) -> dict[str, list[Round]]:
    """Each mode's rounds; with ``counted`` (a mode), only that mode once, callgrind on."""
    image = np.random.default_rng(1).standard_normal(INPUT.shape).astype(np.float32)
    config = ClientConfig(model=MODEL, deadline_s=30.0, max_in_flight=IN_FLIGHT)
    measured: dict[str, list[Round]] = {mode: [] for mode in MODES}
    with Client(url, config=config) as client:
        for mode in MODES:  # warm: the plan, the deployment, the layouts remembered
            requests(client, image, mode, 100)()
        if counted is not None:
            toggle_callgrind(True)
            requests(client, image, counted, count)()
            toggle_callgrind(False)
            return measured
        for _ in range(rounds):
            for mode in MODES:
                run = requests(client, image, mode, count)
                threads, cpu, wall = thread_cpu_s(), time.process_time(), time.perf_counter()
                run()
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                after = thread_cpu_s()

                measured[mode].append(
                    Round(
                        cpu * 1000 / count,
                        wall * 1000 / count,
                        per_request(threads, after, "MainThread", count),
                        per_request(threads, after, "mqtt", count),
                    )
                )
    return measured


def instructions(url: str, mode: str, count: int, workdir: Path) -> float | None:
    """The client's instructions per request in ``mode``, counted by callgrind."""
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        return None
    out = workdir / f"callgrind-{mode.replace(' ', '-')}.out"
    command = ["valgrind", "--tool=callgrind", "--instr-atstart=no"]
    command += [f"--callgrind-out-file={out}", sys.executable, __file__]
    command += ["--counted", mode, "--url", url, "--requests", str(count)]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    totals = [line for line in out.read_text().splitlines() if line.startswith("totals:")]
    return int(totals[-1].split()[1]) / count if totals else None


def rows(measured: dict[str, list[Round]], counted: dict[str, float | None]) -> list[Row]:
    table = []
    for mode, runs in measured.items():
        cpu = [r.cpu_ms for r in runs]
        caller = [statistics.median(r.caller_ms[part] for r in runs) for part in (0, 1)]
        network = [statistics.median(r.network_ms[part] for r in runs) for part in (0, 1)]
        table.append(
            Row(
                mode,
                "client CPU per request (range over rounds); wall time per request",
                f"{statistics.median(cpu):.3f} ms ({min(cpu):.3f} to {max(cpu):.3f}); "
                f"{statistics.median(r.wall_ms for r in runs):.3f} ms",
                value=statistics.median(cpu),
            )
        )
        table.append(
            Row(
                mode,
                "the caller's thread / the network thread, user + system",
                f"{caller[0]:.3f} + {caller[1]:.3f} ms / {network[0]:.3f} + {network[1]:.3f} ms",
            )
        )
        instructions_per_request = counted.get(mode)
        if instructions_per_request is not None:
            table.append(
                Row(
                    mode, "instructions per request (callgrind)", f"{instructions_per_request:,.0f}"
                )
            )
    return table


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="a smoke run: short rounds")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=1000, help="requests per round")
    parser.add_argument("--instructions", action="store_true", help="also count them (valgrind)")
    parser.add_argument("--respond", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--counted", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.respond:
        respond(args.url)
        return
    if args.counted:
        run_client(args.url, 0, args.requests, args.counted)
        return
    if args.quick:
        args.rounds, args.requests = 2, 200
    from splitmq.mosquitto import Mosquitto, config_dir

    with tempfile.TemporaryDirectory(prefix="bench-client-") as tmp:
        workdir = Path(tmp)
        with Mosquitto(config_dir() / "dev.conf", workdir / "broker") as broker:
            url = broker.url()
            responder = subprocess.Popen(
                [sys.executable, __file__, "--respond", "--url", url],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            assert responder.stdin is not None and responder.stdout is not None
            try:
                if responder.stdout.readline().strip() != "ready":
                    raise SystemExit("the responder did not start")
                measured = run_client(url, args.rounds, args.requests, None)
                counted = {
                    mode: instructions(url, mode, min(args.requests, 300), workdir)
                    if args.instructions
                    else None
                    for mode in MODES
                }
            finally:
                responder.stdin.close()
                responder.wait(10)
    figures = {mode: [asdict(r) for r in runs] for mode, runs in measured.items()}
    report("the client's own work per request", rows(measured, counted), figures)


if __name__ == "__main__":
    main()
