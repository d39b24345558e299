"""Slow links: the coordinator's plan against every fixed split and against offloading (goal 4).

Two agents on one emulated network link (each agent waits latency + bytes x 8 /
bandwidth before it publishes, ``docs/agent.md``): a slow ``device`` (compute factor
8: it runs MobileNetV3Large float32 8 times slower than this machine) where the input
is born, and a fast ``server`` (this machine's speed). Two settings: 10 Mbit/s with
5 ms, and 100 Mbit/s with 1 ms.

Per setting, the coordinator deploys the model (``stages`` chosen by the optimizer,
objective latency, the device named as the input's source) for float32 and for int8
(int8 activations on the wire: a quarter of the bytes). float32 is deployed twice: the
first time the coordinator knows the agents' speeds from their calibration only; the
second time it has learned them from the shards they ran (its steady state: the plan
the goal is about; the first plan is reported too). Against the chosen float32
plan, measured through the same agents, in interleaved rounds, one request in flight:

- the device running the whole model (nothing crosses the link but the answer);
- the input sent to the server to run whole (the input crosses the device's link,
  emulated here with the agents' own formula before it is published);
- the model split at fixed points along it (the device runs ``[0, p)``, the server
  ``[p, end)``), every block boundary where one tensor crosses.

Every option is first screened (3 rounds); then the coordinator's plans and the four
best fixed options run again, side by side in fresh interleaved rounds, so that the
best of many near-equal options is not picked on its luck; the ratio is the median
over those rounds of the chosen plan's time over the best option's. The chosen plan is
measured as a configuration loaded like every fixed option (the same split and agents
is that option); the coordinator's own deployment of it is measured for reference. Goal: the chosen
plan within 5% of the best one measured, in both settings. Every option's output is
checked against the same shards chained in this process (bit-identical).

    .venv/bin/python benchmarks/bench_links.py [--quick] [--rounds 15]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from _fleet import AgentSpec, Fleet, deployed_shards, fleet, image, mobilenet
from _report import Row, report

from splitmq.agent import find_runtime
from splitmq.converter import Shard, cut
from splitmq.transport import InboundMessage, MqttTransport, parse_broker_url
from splitmq.wire import (
    Activation,
    Deployment,
    LoadShard,
    Result,
    ShardReady,
    Tensor,
    TensorSpec,
    decode,
    encode,
)
from splitmq.wire.manifest import Variant
from splitmq.wire.topics import COMMANDS, EVENTS, RESULTS, STAGE

THREADS = 1
DEVICE, SERVER = "device", "server"
DEVICE_FACTOR = 8.0
SETTINGS = ((10.0, 5.0), (100.0, 1.0))  # (Mbit/s, ms)
GOAL = 1.05
PROBE = "bench-probe"
SCREEN_ROUNDS = 3
FINALISTS = 4


@dataclass
class Option:
    """One way to run a request: stages of shards on agents."""

    name: str
    shards: list[Shard]
    agents: list[str]
    deployment: str
    variant: str = "float32"
    chosen: bool = False

    @property
    def wire_bytes(self) -> int:
        """Bytes that cross the link for one request (input if sent, frontiers, answer)."""
        total = 0
        if self.agents[0] != DEVICE:
            total += sum(s.size_bytes for s in self.shards[0].inputs)
        for shard, agent, following in zip(
            self.shards, self.agents, [*self.agents[1:], None], strict=True
        ):
            if following != agent:
                total += sum(s.size_bytes for s in shard.outputs)
        return total


def profile(directory: Path, name: str, factor: float, mbps: float, ms: float) -> Path:
    path = directory / f"{name}-{mbps:g}.json"
    path.write_text(
        json.dumps(
            {
                "name": name,
                "active_power_w": 5.0 if name == DEVICE else 30.0,
                "idle_power_w": 1.0,
                "radio_j_per_mb": 0.5,
                "battery_wh": 20.0,
                "plugged": True,
                "compute_factor": factor,
                "link": {"bandwidth_mbps": mbps, "latency_ms": ms},
            }
        )
    )
    return path


def split_points(variant: Variant) -> list[int]:
    """Block boundaries: cut points where one tensor crosses, smaller than both neighbours."""
    points = variant.cut_points
    chosen = []
    for index in range(1, len(points) - 1):
        here = points[index]
        if len(here.frontier) != 1:
            continue
        if (
            here.frontier_bytes < points[index - 1].frontier_bytes
            and here.frontier_bytes <= points[index + 1].frontier_bytes
        ):
            chosen.append(here.position)
    return chosen


def spec(s: object) -> TensorSpec:
    return TensorSpec(s.name, tuple(s.shape), s.dtype, s.scale, s.zero_point)  # type: ignore[attr-defined]


class Prober:
    """Loads shards straight onto agents and times requests along a route."""

    def __init__(self, running: Fleet, cache_dirs: dict[str, Path]):
        self.running = running
        self.cache_dirs = cache_dirs
        self.transport = MqttTransport(parse_broker_url(running.url, client_id=PROBE))
        self.transport.start()
        self._results: dict[bytes, Result] = {}
        self._ready: dict[str, ShardReady] = {}
        self._cond = threading.Condition()
        self.transport.subscribe(RESULTS.name(client=PROBE), self._on_result)
        self.transport.subscribe(EVENTS.filter(), self._on_event)

    def close(self) -> None:
        self.transport.close()

    def _on_result(self, message: InboundMessage) -> None:
        result = decode(message.payload)
        if isinstance(result, Result):
            with self._cond:
                self._results[result.request_id] = result
                self._cond.notify_all()

    def _on_event(self, message: InboundMessage) -> None:
        event = decode(message.payload)
        if isinstance(event, ShardReady):
            with self._cond:
                self._ready[event.command_id] = event
                self._cond.notify_all()

    def load(self, option: Option) -> None:
        """Put each shard in its agent's cache (no fetch) and load it as a stage."""
        commands = []
        for stage, (shard, agent) in enumerate(zip(option.shards, option.agents, strict=True)):
            cache = self.cache_dirs[agent]
            cache.mkdir(parents=True, exist_ok=True)
            path = cache / f"{shard.sha256}.tflite"
            if not path.exists():
                path.write_bytes(shard.data)
            command = LoadShard(
                command_id=uuid.uuid4().hex,
                issuer="coordinator",
                deployment=option.deployment,
                stage=stage,
                digest=shard.sha256,
                size_bytes=shard.size_bytes,
                inputs=tuple(spec(s) for s in shard.inputs),
                outputs=tuple(spec(s) for s in shard.outputs),
                threads=THREADS,
            )
            self.transport.publish(COMMANDS.name(agent=agent), encode(command)).wait(10)
            commands.append(command.command_id)
        with self._cond:
            if not self._cond.wait_for(lambda: all(c in self._ready for c in commands), 120):
                raise SystemExit(f"agents did not load {option.name}")

    def run(
        self, option: Option, x: np.ndarray, source: tuple[float, float]
    ) -> tuple[float, Result]:
        """Seconds for one request along ``option``; the input leaves the device."""
        (input_spec,) = option.shards[0].inputs
        activation = Activation(
            request_id=os.urandom(16),
            attempt=0,
            deployment=option.deployment,
            stage=0,
            route=tuple((agent,) for agent in option.agents),
            callback=RESULTS.name(client=PROBE),
            deadline_ms=0,
            tensors=(Tensor(input_spec.name, x),),
            client_id=PROBE,
        )
        payload = encode(activation)
        topic = STAGE.name(deployment=option.deployment, stage=0, agent=option.agents[0])
        start = time.perf_counter()
        if option.agents[0] != DEVICE:  # the input is born on the device: it crosses its link
            mbps, ms = source
            time.sleep(ms / 1e3 + x.nbytes * 8 / (mbps * 1e6))
        self.transport.publish(topic, payload)
        with self._cond:
            if not self._cond.wait_for(lambda: activation.request_id in self._results, 60):
                raise SystemExit(f"no answer along {option.name}")
            result = self._results.pop(activation.request_id)
        return time.perf_counter() - start, result


def signature(option: Option) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """What makes two options the same configuration: their shards and agents."""
    return tuple(s.sha256 for s in option.shards), tuple(option.agents)


def measure(
    prober: Prober, options: list[Option], x: np.ndarray, source: tuple[float, float], rounds: int
) -> dict[str, list[float]]:
    """Milliseconds per request of each option, in interleaved rounds."""
    times: dict[str, list[float]] = {o.name: [] for o in options}
    for index in range(rounds):
        for option in options if index % 2 == 0 else options[::-1]:
            times[option.name].append(prober.run(option, x, source)[0] * 1e3)
    return times


def chained(runtime: object, shards: list[Shard], x: np.ndarray, output: str) -> np.ndarray:
    tensors = {shards[0].inputs[0].name: x}
    for shard in shards:
        loaded = runtime.load(shard.data, threads=THREADS)  # type: ignore[attr-defined]
        outputs, _ = loaded.run({s.name: tensors[s.name] for s in loaded.inputs})
        tensors.update({t.name: np.array(t.array) for t in outputs})
    return tensors[output]


def from_deployment(deployment: Deployment, model: bytes, variant: str) -> Option:
    shards = deployed_shards(model, deployment)
    cuts = ",".join(str(s.start_op) for s in deployment.stages[1:])
    agents = [s.replicas[0] for s in deployment.stages]
    name = f"chosen {variant}: " + (f"split at {cuts}" if cuts else f"whole on {agents[0]}")
    return Option(name, shards, agents, deployment.deployment, variant, chosen=True)


def measure_setting(mbps: float, ms: float, rounds: int, quick: bool) -> dict[str, object]:
    entry = mobilenet()
    x = image(entry)
    runtime = find_runtime()
    models = {v: entry.variant_path(v).read_bytes() for v in ("float32", "int8")}
    float32 = entry.manifest.variants["float32"]
    output = float32.outputs[0].name
    points = split_points(float32)
    if quick:
        points = points[:: max(1, len(points) // 3)]
    profiles = tempfile.TemporaryDirectory(prefix="splitmq-profiles-")
    agents = [
        AgentSpec(DEVICE, str(profile(Path(profiles.name), DEVICE, DEVICE_FACTOR, mbps, ms))),
        AgentSpec(SERVER, str(profile(Path(profiles.name), SERVER, 1.0, mbps, ms))),
    ]
    with profiles, fleet(agents) as running:
        chosen: dict[str, Option] = {}
        predicted = {}
        # float32 twice: first on the agents' calibrated speeds alone, then again once
        # the coordinator has learned their speeds from the first shards they ran (the
        # steady state: the plan this goal is about). Then int8.
        for variant in ("float32", "float32", "int8"):
            deployment = running.deploy(
                client_id=DEVICE, variant=variant, objective="latency", stages=0
            )
            assert running.last_reply is not None
            if variant in chosen and "first" not in chosen:
                chosen["first"] = chosen[variant]
            predicted[variant] = running.last_reply.predicted_latency_ms
            chosen[variant] = from_deployment(deployment, models[variant], variant)
        whole = cut(models["float32"], [])
        options = [
            chosen["float32"],
            chosen["int8"],
            Option("device runs it whole", whole, [DEVICE], "fixed-device"),
            Option("input to the server, runs whole", whole, [SERVER], "fixed-server"),
            *(
                Option(f"split at {p}", cut(models["float32"], [p]), [DEVICE, SERVER], f"fixed-{p}")
                for p in points
            ),
        ]

        # The chosen plans as configurations, loaded and measured like every fixed option
        # (two identical interpreters in one process can differ by a few percent); the
        # instance the coordinator deployed is measured too, for reference.
        def as_configuration(plan: Option, label: str, deployment: str) -> Option:
            same = [o for o in options if not o.chosen and signature(o) == signature(plan)]
            if same:
                return same[0]
            option = Option(
                plan.name.replace("chosen float32: ", label), plan.shards, plan.agents, deployment
            )
            options.append(option)
            return option

        plan_option = as_configuration(chosen["float32"], "the chosen plan: ", "fixed-chosen")
        first_option = as_configuration(chosen["first"], "the first plan: ", "fixed-first")
        caches = {agent: running.workdir / "cache" / agent for agent in (DEVICE, SERVER)}
        prober = Prober(running, caches)
        try:
            for option in options:
                if not option.chosen:
                    prober.load(option)
            expected = {
                option.name: chained(runtime, option.shards, x, option.shards[-1].outputs[0].name)
                for option in options
            }
            correct = {}
            for option in options:  # warm-up, excluded; and the outputs, checked
                _, result = prober.run(option, x, (mbps, ms))
                (tensor,) = result.tensors
                correct[option.name] = bool(np.array_equal(tensor.array, expected[option.name]))
            screening = measure(prober, options, x, (mbps, ms), SCREEN_ROUNDS)
            fixed = [o for o in options if not o.chosen]
            leaders = sorted(fixed, key=lambda o: statistics.median(screening[o.name]))
            finalists = [
                *(o for o in options if o.chosen),
                *leaders[:FINALISTS],
                *(o for o in (plan_option, first_option) if o not in leaders[:FINALISTS]),
            ]
            finalists = list({o.name: o for o in finalists}.values())  # the plans may be one
            times = measure(prober, finalists, x, (mbps, ms), rounds)
        finally:
            prober.close()
    medians = {name: statistics.median(values) for name, values in screening.items()}
    medians.update({name: statistics.median(values) for name, values in times.items()})
    best = min((o for o in finalists if not o.chosen), key=lambda o: medians[o.name])

    def ratio_to_best(option: Option) -> float:  # per round: the load drifts between rounds
        pairs = zip(times[option.name], times[best.name], strict=True)
        return statistics.median(c / b for c, b in pairs)

    ratio = ratio_to_best(plan_option)
    del output
    return {
        "ratio_chosen_best": ratio,
        "ratio_first_best": ratio_to_best(first_option),
        "first_plan": first_option.name,
        "mbps": mbps,
        "latency_ms": ms,
        "median_ms": medians,
        "screening_ms": screening,
        "finalists_ms": times,
        "wire_bytes": {o.name: o.wire_bytes for o in options},
        "chosen": {v: o.name for v, o in chosen.items() if v != "first"},
        "chosen_plan": plan_option.name,
        "predicted_ms": predicted,
        "best": best.name,
        "correct": correct,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a smoke run: one setting, few points")
    parser.add_argument("--rounds", type=int)
    args = parser.parse_args()
    rounds = args.rounds or (3 if args.quick else 15)
    settings = SETTINGS[1:] if args.quick else SETTINGS
    outcomes = [measure_setting(mbps, ms, rounds, args.quick) for mbps, ms in settings]
    rows: list[Row] = []
    for outcome in outcomes:
        label = f"4 links {outcome['mbps']:g} Mbit/s {outcome['latency_ms']:g} ms"
        medians: dict[str, float] = outcome["median_ms"]  # type: ignore[assignment]
        wire: dict[str, int] = outcome["wire_bytes"]  # type: ignore[assignment]
        chosen: dict[str, str] = outcome["chosen"]  # type: ignore[assignment]
        predicted: dict[str, float] = outcome["predicted_ms"]  # type: ignore[assignment]
        best = str(outcome["best"])
        finalists: dict[str, list[float]] = outcome["finalists_ms"]  # type: ignore[assignment]
        f32, i8 = chosen["float32"], chosen["int8"]
        ratio = float(outcome["ratio_chosen_best"])  # type: ignore[arg-type]
        for name in sorted(medians, key=medians.__getitem__):
            if name in (f32, i8):
                continue
            final = " (finalist)" if name in finalists else ""
            rows.append(
                Row(label, name, f"{medians[name]:.1f} ms, {wire[name] / 1e3:.1f} kB{final}")
            )
        plan = str(outcome["chosen_plan"])
        rows.append(
            Row(
                label,
                f32 + " (as deployed)",
                f"{medians[f32]:.1f} ms, {wire[f32] / 1e3:.1f} kB "
                f"(predicted {predicted['float32']:.1f})",
            )
        )
        rows.append(
            Row(
                label,
                "chosen plan / best measured",
                f"{ratio:.3f}x ({plan} vs {best})" if plan != best else f"{ratio:.3f}x ({best})",
                f"<= {GOAL}x",
                ratio <= GOAL,
                ratio,
            )
        )
        saved = 1 - medians[i8] / medians[f32]
        change = f"{abs(100 * saved):.0f}% {'less' if saved >= 0 else 'more'} time"
        rows.append(
            Row(
                label,
                i8,
                f"{medians[i8]:.1f} ms, {wire[i8] / 1e3:.1f} kB on the wire "
                f"({change} than float32; predicted {predicted['int8']:.1f})",
            )
        )
        first = str(outcome["first_plan"])
        first_ratio = float(outcome["ratio_first_best"])  # type: ignore[arg-type]
        rows.append(
            Row(
                label,
                "first plan (calibrated speeds only) / best",
                f"{first_ratio:.3f}x ({first})",
            )
        )
        correct: dict[str, bool] = outcome["correct"]  # type: ignore[assignment]
        ok = all(correct.values())
        rows.append(
            Row(
                label,
                "outputs checked in the run",
                f"{len(correct)} options bit-identical to their chains"
                if ok
                else f"FAILED {[k for k, v in correct.items() if not v]}",
                "correct",
                ok,
            )
        )
    report(
        f"slow links: MobileNetV3Large 224, device x{DEVICE_FACTOR:g} slower, server 1x",
        rows,
        {"rounds": rounds, "device_factor": DEVICE_FACTOR, "settings": outcomes},
    )


if __name__ == "__main__":
    main()
