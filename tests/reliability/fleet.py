"""A real fleet for the fault tests: Mosquitto, a coordinator process, agent processes.

The test process is the operator (deploy requests), an observer of the retained state
(statuses, telemetry, deployments) and the client. Every part can be killed, paused and
restarted: agents keep their cache directory across restarts unless it is wiped (a
replaced device), the broker comes back on the same port.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from splitmq import processes
from splitmq.client import Client, ClientConfig, RequestRecord
from splitmq.mosquitto import Mosquitto
from splitmq.transport import MqttTransport, parse_broker_url
from splitmq.watch import Watcher
from splitmq.wire import (
    Deployment,
    DeploymentState,
    DeployReply,
    DeployRequest,
    encode,
)
from splitmq.wire.topics import DEPLOY_REPLIES, DEPLOY_REQUESTS, DEPLOYMENTS, STATUS, TELEMETRY
from tests import processes as spawn

OPERATOR = "reliability-ops"
MODEL = "digits"
DEPLOYMENT = "digits-float32"


def watch(transport: MqttTransport) -> Watcher:
    """The latest status, telemetry and deployment of everything, from retained topics,
    and the operator's deploy replies."""
    watcher = Watcher(transport).watch(STATUS).watch(TELEMETRY).watch(DEPLOYMENTS)
    return watcher.watch(DEPLOY_REPLIES, client=OPERATOR)


@dataclass
class Fleet:
    """Processes of one fault test module (see the module docstring)."""

    broker: Mosquitto
    workdir: Path
    pool_dir: Path
    entry: Any  # splitmq.converter.PoolEntry
    observer: MqttTransport
    watch: Watcher
    agents: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    coordinator: subprocess.Popen[bytes] | None = None
    agent_options: dict[str, tuple[str, ...]] = field(default_factory=dict)
    coordinator_options: tuple[str, ...] = ()
    clients: list[Client] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.broker.url()

    # -- agents ---------------------------------------------------------------------------

    def start_agent(self, agent_id: str, *extra: str, wipe_cache: bool = False) -> None:
        if wipe_cache:
            shutil.rmtree(self.workdir / agent_id, ignore_errors=True)
        options = extra or self.agent_options.get(agent_id, ("--profile", "host"))
        self.agent_options[agent_id] = options
        self.agents[agent_id] = spawn.start_agent(self.url, agent_id, self.workdir, *options)

    def kill_agent(self, agent_id: str) -> None:
        processes.kill(self.agents[agent_id])  # a paused agent dies as well

    def pause_agent(self, agent_id: str) -> None:
        self.agents[agent_id].send_signal(signal.SIGSTOP)

    def resume_agent(self, agent_id: str) -> None:
        self.agents[agent_id].send_signal(signal.SIGCONT)

    def alive(self, agent_id: str) -> bool:
        return self.agents[agent_id].poll() is None

    def wait_online(self, agent_ids: list[str] | None = None, timeout_s: float = 40.0) -> None:
        wanted = list(agent_ids or self.agents)
        self.watch.wait(
            lambda: all(self.watch.online(a) for a in wanted), timeout_s, f"{wanted} online"
        )

    # -- coordinator --------------------------------------------------------------------------

    def start_coordinator(self, timeout_s: float = 30.0) -> None:
        """Start the coordinator process and wait until it serves (its log says so)."""
        log = self.workdir / "coordinator.log"
        before = log.read_text().count("serving the pool") if log.exists() else 0
        self.coordinator = spawn.start_coordinator(
            self.url,
            self.pool_dir,
            self.workdir,
            *self.coordinator_options,
        )
        deadline = time.monotonic() + timeout_s
        while log.read_text().count("serving the pool") <= before:
            assert self.coordinator.poll() is None, log.read_text()[-2000:]
            assert time.monotonic() < deadline, "the coordinator did not start"
            time.sleep(0.05)

    def kill_coordinator(self) -> None:
        if self.coordinator is not None:
            processes.kill(self.coordinator)

    # -- broker -------------------------------------------------------------------------------

    def restart_broker(self, down_s: float) -> None:
        """Kill Mosquitto (a crash: no wills, no retained state kept) and start it again.

        The watch forgets what it heard: presence and deployments waited for afterwards
        are those said again to the new broker."""
        self.broker.kill()
        self.watch.forget()
        time.sleep(down_s)
        self.broker.start()

    # -- deployments --------------------------------------------------------------------------

    def deployment(self, name: str = DEPLOYMENT) -> Deployment | None:
        return self.watch.deployments.get(name)

    def deploy(self, *, stages: int, replicas: int, timeout_s: float = 60.0) -> Deployment:
        request = DeployRequest(
            request_id=uuid.uuid4().hex,
            client_id=OPERATOR,
            model=MODEL,
            stages=stages,
            replicas=replicas,
            ready_timeout_s=timeout_s - 5,
        )
        self.observer.publish(DEPLOY_REQUESTS.name(), encode(request)).wait(10)
        reply = self.watch.wait_answer(request.request_id, timeout_s)
        assert isinstance(reply, DeployReply) and reply.ok, reply
        self.watch.wait(
            lambda: (d := self.deployment(reply.deployment)) is not None and d.epoch >= reply.epoch,
            10,
            "the deployment",
        )
        deployment = self.deployment(reply.deployment)
        assert deployment is not None
        return deployment

    def healthy(self, replicas: int, name: str = DEPLOYMENT) -> bool:
        """Every stage has ``replicas`` replicas, each alive, online and serving the stage."""
        deployment = self.watch.deployments.get(name)
        if deployment is None or deployment.state is not DeploymentState.ACTIVE:
            return False
        for stage in deployment.stages:
            if len(stage.replicas) < replicas:
                return False
            for agent_id in stage.replicas:
                telemetry = self.watch.telemetry.get(agent_id)
                if (
                    agent_id not in self.agents
                    or not self.alive(agent_id)
                    or not self.watch.online(agent_id)
                    or telemetry is None
                    or f"{name}/{stage.stage}" not in telemetry.queue_depth
                ):
                    return False
        return True

    def wait_healthy(self, replicas: int, timeout_s: float = 60.0) -> Deployment:
        self.watch.wait(lambda: self.healthy(replicas), timeout_s, "a healthy deployment")
        deployment = self.deployment()
        assert deployment is not None
        return deployment

    # -- clients and measures -----------------------------------------------------------------

    def client(
        self,
        client_id: str | None = None,
        *,
        recorder: Callable[[RequestRecord], None] | None = None,
        **overrides: Any,
    ) -> Client:
        settings: dict[str, Any] = {
            "model": MODEL,
            "deadline_s": 10.0,
            "plan_timeout_s": 2.0,
            "min_attempt_timeout_s": 0.3,
            "attempt_timeout_margin_s": 0.3,
        }
        settings.update(overrides)
        client = Client(
            self.url,
            client_id or f"rel-{uuid.uuid4().hex[:6]}",
            config=ClientConfig(**settings),
            recorder=recorder,
        )
        client.start()
        self.clients.append(client)
        return client

    def rss_bytes(self) -> dict[str, int]:
        """Resident memory of every running part (the test process is the client)."""
        parts = {
            agent_id: process.pid
            for agent_id, process in self.agents.items()
            if process.poll() is None
        }
        if self.coordinator is not None and self.coordinator.poll() is None:
            parts["coordinator"] = self.coordinator.pid
        parts["client"] = os.getpid()
        sizes = {}
        for name, pid in parts.items():
            try:
                sizes[name] = psutil.Process(pid).memory_info().rss
            except psutil.Error:
                continue
        return sizes

    def close(self) -> None:
        for client in self.clients:
            client.close()
        processes.stop([*self.agents.values(), *([self.coordinator] if self.coordinator else [])])
        self.observer.close()
        self.broker.stop()


def start_fleet(
    workdir: Path,
    entry: Any,
    agent_ids: list[str],
    *,
    coordinator_options: tuple[str, ...] = ("--watch-period", "0.3", "--ready-timeout", "10"),
    agent_options: Mapping[str, tuple[str, ...]] | None = None,
) -> Fleet:
    """Start Mosquitto (dev.conf, own port), a coordinator process and the agents."""
    from splitmq.mosquitto import config_dir

    broker = Mosquitto(config_dir() / "dev.conf", workdir / "broker").start()
    pool_dir = workdir / "pool"
    target = pool_dir / entry.name / entry.version
    shutil.copytree(entry.path, target)
    (target.parent / "latest").write_text(entry.version + "\n")
    observer = MqttTransport(
        parse_broker_url(broker.url(), reconnect_min_s=0.05, reconnect_max_s=0.5)
    )
    observer.start()
    fleet = Fleet(
        broker,
        workdir,
        pool_dir,
        entry,
        observer,
        watch(observer),
        agent_options=dict(agent_options or {}),
        coordinator_options=coordinator_options,
    )
    try:
        fleet.start_coordinator()
        for agent_id in agent_ids:
            fleet.start_agent(agent_id)
        fleet.wait_online(agent_ids)
    except BaseException:
        fleet.close()
        raise
    return fleet


class Reference:
    """The unsplit float32 model's output for each test image (bit-exact reference)."""

    def __init__(self, entry: Any, images: np.ndarray):
        from splitmq.converter.runner import make_interpreter, run_model

        interpreter = make_interpreter(entry.variant_path("float32"))
        self.images = images
        self.outputs = [
            next(iter(run_model(interpreter, [images[i : i + 1]]).values()))
            for i in range(len(images))
        ]

    def check(self, index: int, outputs: dict[str, np.ndarray]) -> bool:
        (output,) = outputs.values()
        return bool(np.array_equal(output, self.outputs[index % len(self.outputs)]))


def paced(images: np.ndarray, count: int, rate_per_s: float) -> Iterator[np.ndarray]:
    """``count`` images (cycling through ``images``) at a steady ``rate_per_s``."""
    started = time.monotonic()
    for index in range(count):
        delay = started + index / rate_per_s - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        yield images[index % len(images)]


def percentile_ms(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")
