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
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from splitmq.connection import add_broker_options
from splitmq.converter.runner import make_interpreter, run_model
from splitmq.coordinator.cli import request_deployment
from splitmq.transport import InboundMessage, MqttTransport, parse_broker_url
from splitmq.wire import (
    AgentState,
    AgentStatus,
    Deployment,
    DeployReply,
    DeployRequest,
    Plan,
    PlanRefused,
    PlanRequest,
    Telemetry,
    decode,
    encode,
)
from splitmq.wire.topics import DEPLOYMENTS, PLAN_REQUESTS, PLANS, STATUS, TELEMETRY
from tests import processes as spawn
from tests.data import digits_test

PROFILES = {"pi-1": "rpi4", "phone-1": "phone", "laptop-1": "laptop"}
"""The three agents and their device profiles."""
MODEL = "digits"
TELEMETRY_PERIOD_S = 0.5
START_TIMEOUT_S = 40.0


class Watch:
    """The fleet as seen from a connection of its own: statuses, telemetry, deployments.

    Every message is kept with its arrival time (``time.monotonic()``).
    """

    def __init__(self, url: str, namespace: str):
        self.namespace = namespace
        self.client_id = f"e2e-watch-{_tag()}"
        self.transport = MqttTransport(parse_broker_url(url, client_id=self.client_id))
        self._cond = threading.Condition()
        self.statuses: list[tuple[float, AgentStatus]] = []
        self.telemetry: dict[str, Telemetry] = {}
        self.deployments: list[tuple[float, Deployment]] = []
        self.plans: list[Plan | PlanRefused] = []

    def start(self) -> None:
        self.transport.start()
        ns, on_message = self.namespace, self._on_message
        self.transport.subscribe(STATUS.filter(ns), on_message, qos=STATUS.qos)
        self.transport.subscribe(TELEMETRY.filter(ns), on_message, qos=TELEMETRY.qos)
        self.transport.subscribe(DEPLOYMENTS.filter(ns), on_message, qos=DEPLOYMENTS.qos)
        self.transport.subscribe(PLANS.name(ns, client=self.client_id), on_message, qos=PLANS.qos)

    def close(self) -> None:
        self.transport.close()

    def _on_message(self, message: InboundMessage) -> None:
        if not message.payload:
            return
        decoded = decode(message.payload)
        now = time.monotonic()
        with self._cond:
            if isinstance(decoded, AgentStatus):
                self.statuses.append((now, decoded))
            elif isinstance(decoded, Telemetry):
                self.telemetry[decoded.agent_id] = decoded
            elif isinstance(decoded, Deployment):
                self.deployments.append((now, decoded))
            elif isinstance(decoded, Plan | PlanRefused):
                self.plans.append(decoded)
            self._cond.notify_all()

    def wait(self, predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
        with self._cond:
            if not self._cond.wait_for(predicate, timeout_s):
                raise AssertionError(f"no {what} within {timeout_s} s")

    def online(self, agent_id: str) -> bool:
        """Whether the agent's latest status says online (call under the lock or in wait)."""
        latest = [s for _, s in self.statuses if s.agent_id == agent_id]
        return bool(latest) and latest[-1].state is AgentState.ONLINE

    def deployment_after(
        self, epoch: int, where: Callable[[Deployment], bool], timeout_s: float
    ) -> tuple[float, Deployment]:
        """The first deployment message past ``epoch`` that satisfies ``where``."""
        found: list[tuple[float, Deployment]] = []

        def arrived() -> bool:
            found[:] = [(t, d) for t, d in self.deployments if d.epoch > epoch and where(d)]
            return bool(found)

        self.wait(arrived, timeout_s, f"deployment past epoch {epoch}")
        return found[0]

    def coordinator_answers(self, timeout_s: float) -> None:
        """Ask for a plan until the coordinator answers (a refusal will do)."""
        deadline = time.monotonic() + timeout_s
        topic = PLAN_REQUESTS.name(self.namespace)
        while time.monotonic() < deadline:
            plan_id = _tag()
            request = PlanRequest(request_id=plan_id, client_id=self.client_id, model=MODEL)
            self.transport.publish(topic, encode(request), qos=1).wait(5)
            with self._cond:
                if self._cond.wait_for(
                    lambda: any(p.request_id == plan_id for p in self.plans),  # noqa: B023
                    1.0,
                ):
                    return
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

    def kill(self, agent_id: str) -> float:
        """SIGKILL an agent; returns when (``time.monotonic()``) it was killed."""
        process = self.agents[agent_id]
        process.send_signal(signal.SIGKILL)
        killed_s = time.monotonic()
        process.wait(10)
        return killed_s

    def logs(self) -> str:
        """The tail of every process's log, for failure messages."""
        parts = []
        for path in sorted(self.workdir.glob("*.log")):
            lines = path.read_text(errors="replace").splitlines()[-15:]
            parts.append(f"--- {path.name}\n" + "\n".join(lines))
        return "\n".join(parts)


def start_fleet(
    url: str, workdir: Path, entry: Any, *, replicas: int = 2, stages: int = 2
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
    return Fleet(url, namespace, workdir, coordinator, agents, watch, deployment, reply)


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


@dataclass
class EmbeddedBrokerProcess:
    process: subprocess.Popen[str]
    url: str


@pytest.fixture(scope="module")
def embedded_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBrokerProcess]:
    """``python -m splitmq.embedded_broker --port 0`` as a process; its URL from stdout."""
    log = (tmp_path_factory.mktemp("embedded-broker") / "broker.log").open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "splitmq.embedded_broker", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # "embedded MQTT broker listening on mqtt://..."
        assert "mqtt://" in line, f"the embedded broker said {line!r}"
        yield EmbeddedBrokerProcess(process, line.split()[-1])
    finally:
        spawn.stop([process])  # type: ignore[list-item]


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
