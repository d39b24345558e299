"""A Raspberry Pi in the fleet, emulated: an ARM64 Debian root under QEMU user-mode
emulation, its agent beside an x86 agent and an x86 coordinator, through Mosquitto.

- the Pi says what it is: aarch64, a Pi 4's Cortex-A72 (its /proc/cpuinfo), emulated
  (QEMU), its kernels and runtime, in its retained status; telemetry flows;
- the digits model (stage 0 on the Pi, stage 1 on x86) and MobileNetV3Small (stage 0
  on x86, stage 1 on the Pi): the Pi downloads and caches its shards, and the answers
  equal the unsplit model by the rule that fits: within the float32 tolerance (the Pi's
  ARM kernels are not x86's), the arg-max always equal;
- killed with SIGKILL, the Pi's will says offline (retained), the coordinator heals
  both deployments onto x86, the answers are then bit-identical; started again, the
  Pi finds its shards in its cache.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from splitmq import processes
from splitmq.client import Client, ClientConfig
from splitmq.client import equality as eq
from splitmq.converter.runner import make_interpreter, run_model
from splitmq.wire import AgentState, AgentStatus, Deployment
from tests.data import digits_test
from tests.e2e.conftest import Watch

from .conftest import MOBILENET, PI, X86, PiFleet

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DIGITS_REQUESTS = 8
MOBILENET_REQUESTS = 3
HEAL_TIMEOUT_S = 60.0


def reference_outputs(path: Any, inputs: np.ndarray) -> list[dict[str, np.ndarray]]:
    """The unsplit model here on x86, LiteRT's builtin kernels, one thread."""
    interpreter = make_interpreter(path, num_threads=1)
    return [run_model(interpreter, [inputs[i : i + 1]]) for i in range(len(inputs))]


def infer_and_compare(
    fleet: PiFleet, model: str, variant_path: Any, inputs: np.ndarray
) -> tuple[eq.Tally, list[tuple[str, ...]]]:
    """Send every input; compare each answer with the unsplit model by its rule."""
    expected = reference_outputs(variant_path, inputs)
    reference = eq.reference_kind()
    tally = eq.Tally("float32")
    routes = []
    config = ClientConfig(model=model)
    with Client(fleet.url, namespace=fleet.namespace, config=config) as client:
        for index in range(len(inputs)):
            result = client.infer(inputs[index], deadline_s=60.0)
            agents = tuple(entry.agent_id for entry in result.trace)
            comparison, reason = eq.check(
                result.outputs,
                expected[index],
                stage_agents=agents,
                status_of=client.agent_status,
                reference=reference,
            )
            tally.add(comparison, reason)
            routes.append(agents)
    print("\n" + "\n".join(f"{model}: {line}" for line in tally.lines()))
    return tally, routes


def test_the_pi_says_what_it_is_in_its_retained_status(pi_fleet: PiFleet) -> None:
    pi, x86 = pi_fleet.watch.status[PI], pi_fleet.watch.status[X86]
    assert pi.machine == "aarch64" and x86.machine == "x86_64"
    assert "Raspberry Pi 4" in (pi.cpu_model or "") and "Cortex-A72" in (pi.cpu_model or "")
    assert pi.emulator == "qemu-user cortex-a72" and x86.emulator is None
    assert pi.runtime == x86.runtime == "litert" and pi.kernels == x86.kernels == "builtin"
    # its speed as measured there: emulation is orders of magnitude slower than native
    assert 0 < pi.speed_gflops < x86.speed_gflops / 5, (pi.speed_gflops, x86.speed_gflops)
    telemetry = pi_fleet.watch.telemetry[PI]
    assert telemetry.profile == "rpi4" and telemetry.mem_free_bytes > 0
    # retained: a connection made now gets the Pi's status and telemetry at once
    late = retained_view(pi_fleet)
    assert late.status[PI] == pi and PI in late.telemetry


def test_digits_with_a_stage_on_the_pi_and_one_on_x86(pi_fleet: PiFleet) -> None:
    deployment = pi_fleet.deploy(
        "digits", variant="float32", stages=2, replicas=1, pin_first=PI, pin_last=X86
    )
    assert [s.replicas for s in deployment.stages] == [(PI,), (X86,)]
    # the Pi downloaded its shard from the pool and keeps it, under its digest
    assert (pi_fleet.pi_cache / f"{deployment.stages[0].digest}.tflite").is_file()
    images = digits_test()[0][:DIGITS_REQUESTS]
    entry = pi_fleet.entries["digits"]
    tally, routes = infer_and_compare(pi_fleet, "digits", entry.variant_path("float32"), images)
    assert all(route == (PI, X86) for route in routes), routes
    assert tally.equal == tally.total == DIGITS_REQUESTS, tally.lines()
    # the Pi's ARM kernels: held to the tolerance, never claimed bit-identical
    assert set(tally.counts) == {eq.Rule.TOLERANCE}
    assert any("aarch64" in reason for reason in tally.reasons)


def test_mobilenet_with_a_stage_on_x86_and_one_on_the_pi(pi_fleet: PiFleet) -> None:
    name = f"{MOBILENET[0].lower()}-{MOBILENET[1]}"
    deployment = pi_fleet.deploy(
        name, variant="float32", stages=2, replicas=1, pin_first=X86, pin_last=PI
    )
    assert [s.replicas for s in deployment.stages] == [(X86,), (PI,)]
    assert (pi_fleet.pi_cache / f"{deployment.stages[1].digest}.tflite").is_file()
    size = MOBILENET[1]
    frames = np.random.default_rng(7).uniform(0, 255, (MOBILENET_REQUESTS, size, size, 3))
    entry = pi_fleet.entries[name]
    tally, routes = infer_and_compare(
        pi_fleet, name, entry.variant_path("float32"), frames.astype(np.float32)
    )
    assert all(route == (X86, PI) for route in routes), routes
    assert tally.equal == tally.total == MOBILENET_REQUESTS, tally.lines()
    assert set(tally.counts) == {eq.Rule.TOLERANCE}


def test_a_killed_pi_goes_offline_and_the_fleet_heals_without_it(pi_fleet: PiFleet) -> None:
    watch = pi_fleet.watch
    if not pi_fleet.deployments:
        pytest.skip("needs the deployments of the tests above")
    epochs = {m: d.epoch for m, d in pi_fleet.deployments.items()}
    downloaded = {
        s.digest for d in pi_fleet.deployments.values() for s in d.stages if PI in s.replicas
    }
    processes.kill(pi_fleet.agents[PI])
    watch.wait(lambda: not watch.online(PI), 30.0, "the Pi's will (offline)")
    assert watch.status[PI].state is AgentState.OFFLINE
    assert retained_view(pi_fleet).status[PI].state is AgentState.OFFLINE  # the will, retained
    healed = {model: healed_without_pi(pi_fleet, model, epochs[model]) for model in epochs}
    assert all(X86 in s.replicas for d in healed.values() for s in d.stages)
    # x86 only now: the answers are the unsplit model's bits
    images = digits_test()[0][:3]
    entry = pi_fleet.entries["digits"]
    tally, _ = infer_and_compare(pi_fleet, "digits", entry.variant_path("float32"), images)
    assert tally.counts == {eq.Rule.IDENTICAL: [3, 3]} and tally.worst == 0.0
    # started again, the Pi announces the shards it kept in its cache
    watch.forget()
    pi_fleet.start_pi()
    status = watch.wait_for(
        AgentStatus, lambda s: s.agent_id == PI and s.state is AgentState.ONLINE, 90.0
    )
    assert downloaded <= set(status.cached_shards)


def healed_without_pi(fleet: PiFleet, model: str, epoch: int) -> Deployment:
    name = fleet.deployments[model].deployment

    def healed(deployment: Deployment) -> bool:
        return (
            deployment.deployment == name
            and deployment.epoch > epoch
            and all(PI not in s.replicas for s in deployment.stages)
        )

    return fleet.watch.wait_for(Deployment, healed, HEAL_TIMEOUT_S)


def retained_view(fleet: PiFleet) -> Watch:
    """What a connection made now is given of the Pi at once: the retained messages."""
    late = Watch(fleet.url, fleet.namespace)
    late.start()
    try:
        late.wait(lambda: PI in late.status and PI in late.telemetry, 10.0, "retained messages")
    finally:
        late.close()
    return late
