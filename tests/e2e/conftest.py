"""A whole fleet as separate processes: a broker, ``splitmq coordinator`` and three agents.

:func:`start_fleet` starts the coordinator and the agents (rpi4, phone, laptop) on a
broker URL, waits until all of them are online and the coordinator answers, deploys the
digits model through the control topic as ``splitmq deploy`` does, and watches the
retained deployments and the agents' presence from a connection of its own. Each
fleet has a topic namespace of its own, so what other tests left retained on the
session's broker (deployments, statuses) does not reach it. The brokers: the
session's Mosquitto, or the embedded Python broker as a process.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from splitmq import processes
from splitmq.broker_options import add_broker_options
from splitmq.converter.runner import make_interpreter, run_model
from splitmq.coordinator.cli import request_deployment
from splitmq.transport import MqttTransport, parse_broker_url
from splitmq.watch import Watcher
from splitmq.wire import (
    Deployment,
    DeployReply,
    DeployRequest,
    PlanRequest,
)
from splitmq.wire.topics import DEPLOYMENTS, PLAN_REQUESTS, PLANS, STATUS, TELEMETRY
from tests import processes as spawn
from tests.data import digits_test

PROFILES = {"pi-1": "rpi4", "phone-1": "phone", "laptop-1": "laptop"}
"""The three agents and their device profiles."""
MODEL = "digits"
TELEMETRY_PERIOD_S = 0.5
START_TIMEOUT_S = 40.0


class Watch(Watcher):
    """The fleet as seen from a connection of its own: statuses, telemetry, deployments,
    and the answers to its own plan requests (each kept with its arrival time)."""

    def __init__(self, url: str, namespace: str):
        self.client_id = f"e2e-watch-{_tag()}"
        super().__init__(MqttTransport(parse_broker_url(url, client_id=self.client_id)), namespace)

    def start(self) -> None:
        self.transport.start()
        self.watch(STATUS).watch(TELEMETRY).watch(DEPLOYMENTS)
        self.watch(PLANS, client=self.client_id)

    def close(self) -> None:
        self.transport.close()

    def deployment_after(
        self, epoch: int, where: Callable[[Deployment], bool], timeout_s: float
    ) -> tuple[float, Deployment]:
        """The first deployment message past ``epoch`` that satisfies ``where``, and
        when it arrived."""
        found: list[tuple[float, Deployment]] = []

        def arrived() -> bool:
            found[:] = [
                (r.arrived_s, r.message)
                for r in self.received
                if isinstance(r.message, Deployment)
                and r.message.epoch > epoch
                and where(r.message)
            ]
            return bool(found)

        self.wait(arrived, timeout_s, f"deployment past epoch {epoch}")
        return found[0]

    def coordinator_answers(self, timeout_s: float) -> None:
        """Ask for a plan until the coordinator answers (a refusal will do)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            request = PlanRequest(request_id=_tag(), client_id=self.client_id, model=MODEL)
            PLAN_REQUESTS.publish(self.transport, request, self.namespace).wait(5)
            try:
                self.wait_answer(request.request_id, 1.0)
                return
            except TimeoutError:
                continue
        raise AssertionError(f"the coordinator did not answer a plan request in {timeout_s} s")


@dataclass
class Fleet:
    """A coordinator and three agents (processes) on one broker, the model deployed."""

    url: str
    namespace: str
    workdir: Path
    coordinator: subprocess.Popen[bytes]
    agents: dict[str, subprocess.Popen[bytes]]
    watch: Watch
    deployment: Deployment
    reply: DeployReply
    stream: Stream

    def kill(self, agent_id: str) -> float:
        """SIGKILL an agent; returns when (``time.monotonic()``) it was killed."""
        killed_s = time.monotonic()
        processes.kill(self.agents[agent_id])
        return killed_s

    def logs(self) -> str:
        """The tail of every process's log, for failure messages."""
        parts = []
        for path in sorted(self.workdir.glob("*.log")):
            lines = path.read_text(errors="replace").splitlines()[-15:]
            parts.append(f"--- {path.name}\n" + "\n".join(lines))
        return "\n".join(parts)


def start_fleet(
    url: str, workdir: Path, entry: Any, *, stream: Stream, replicas: int = 2, stages: int = 2
) -> Fleet:
    """Coordinator and agents as processes on ``url``; ``entry`` deployed (see the module)."""
    pool_dir = workdir / "pool"
    target = pool_dir / entry.name / entry.version
    shutil.copytree(entry.path, target)
    (target.parent / "latest").write_text(entry.version + "\n")
    namespace = f"e2e-{_tag()}/v1"
    watch = Watch(url, namespace)
    watch.start()
    coordinator = spawn.start_coordinator(url, pool_dir, workdir, "--namespace", namespace)
    agents = {
        agent_id: spawn.start_agent(
            url,
            agent_id,
            workdir,
            "--profile",
            profile,
            "--namespace",
            namespace,
            telemetry_period_s=TELEMETRY_PERIOD_S,
        )
        for agent_id, profile in PROFILES.items()
    }
    processes = [coordinator, *agents.values()]
    try:
        watch.wait(
            lambda: all(watch.online(a) and a in watch.telemetry for a in agents),
            START_TIMEOUT_S,
            "online status and telemetry from every agent",
        )
        watch.coordinator_answers(START_TIMEOUT_S)
        request = DeployRequest(
            request_id=uuid.uuid4().hex,
            client_id=f"e2e-operator-{_tag()}",
            model=entry.name,
            stages=stages,
            replicas=replicas,
            ready_timeout_s=30.0,
        )
        reply = request_deployment(_broker_args(url, namespace), request, 40.0)
        assert reply.ok, reply.message
        _, deployment = watch.deployment_after(
            reply.epoch - 1, lambda d: d.deployment == reply.deployment, 10.0
        )
    except BaseException:
        spawn.stop(processes)
        watch.close()
        raise
    return Fleet(url, namespace, workdir, coordinator, agents, watch, deployment, reply, stream)


def stop_fleet(fleet: Fleet) -> None:
    spawn.stop([fleet.coordinator, *fleet.agents.values()])
    fleet.watch.close()


def _broker_args(url: str, namespace: str) -> argparse.Namespace:
    """The options ``splitmq deploy --broker URL --namespace NS`` would have."""
    parser = argparse.ArgumentParser()
    add_broker_options(parser)
    return parser.parse_args(["--broker", url, "--namespace", namespace])


def _tag() -> str:
    return uuid.uuid4().hex[:8]


@dataclass(frozen=True)
class Stream:
    """How many requests a broker's run streams, how many at once, in order or not."""

    requests: int
    max_in_flight: int
    ordered: bool


BROKERS = {
    "mosquitto": Stream(requests=300, max_in_flight=32, ordered=False),
    # python -m splitmq.embedded_broker, a process of its own: a smaller run
    "embedded": Stream(requests=60, max_in_flight=16, ordered=True),
}


@pytest.fixture(scope="module", params=list(BROKERS))
def fleet(
    request: pytest.FixtureRequest, digits_pool: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fleet]:
    """The fleet on a real Mosquitto (the session's), then on the embedded broker."""
    workdir = tmp_path_factory.mktemp(f"e2e-{request.param}")
    broker: processes.Process | None = None
    if request.param == "mosquitto":
        url = request.getfixturevalue("mosquitto").url()
    else:
        broker, url = processes.start_embedded_broker(workdir / "broker.log")
    try:
        started = start_fleet(url, workdir, digits_pool, stream=BROKERS[request.param])
        yield started
        stop_fleet(started)
    finally:
        if broker is not None:
            processes.stop([broker])


@pytest.fixture(scope="session")
def test_images() -> np.ndarray:
    """Held-out digits, ``(450, 8, 8, 1)`` float32."""
    return digits_test()[0]


@pytest.fixture(scope="session")
def reference(digits_pool: Any, test_images: np.ndarray) -> np.ndarray:
    """The unsplit float32 model's output for every test image, with the agents' kernels
    (LiteRT builtin kernels, no XNNPACK, one thread: bit-exact with the chained shards)."""
    interpreter = make_interpreter(digits_pool.variant_path("float32"), num_threads=1)
    outputs = []
    for index in range(len(test_images)):
        (output,) = run_model(interpreter, [test_images[index : index + 1]]).values()
        outputs.append(output)
    return np.stack(outputs)
