"""What the fleet benchmarks share: the cached model, a broker, agent processes, a coordinator.

- :func:`mobilenet` converts MobileNetV3Large (224x224, ``weights=None``, float32 and
  int8) once and keeps the pool entry under ``benchmarks/results/pool`` (git-ignored):
  later runs open it and skip TensorFlow entirely.
- :class:`Fleet` starts a Mosquitto on a free loopback port (``broker-config/dev.conf``),
  a coordinator process (``python -m splitmq coordinator``) and agent processes
  (``python -m splitmq.agent``), one per :class:`AgentSpec`, and deploys models through
  the coordinator the way ``splitmq deploy`` does. Everything stops on exit.

Nothing here downloads anything.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import psutil

from splitmq import processes
from splitmq.converter import PoolEntry, Shard, convert, cut, open_entry
from splitmq.errors import SplitMQError
from splitmq.mosquitto import Mosquitto, config_dir
from splitmq.transport import MqttTransport, parse_broker_url
from splitmq.watch import Watcher
from splitmq.wire import (
    AgentState,
    AgentStatus,
    Deployment,
    DeployReply,
    DeployRequest,
    Message,
    Plan,
    PlanRequest,
    Telemetry,
    encode,
)
from splitmq.wire.topics import (
    DEPLOY_REPLIES,
    DEPLOY_REQUESTS,
    DEPLOYMENTS,
    PLAN_REQUESTS,
    PLANS,
    STATUS,
    TELEMETRY,
)

RESULTS = Path(__file__).resolve().parent / "results"
POOL = RESULTS / "pool"
MODEL = "mnv3l"
INPUT_SIZE = 224
VARIANTS = ("float32", "int8")
OPERATOR = "bench-operator"

M = TypeVar("M", bound=Message)


def mobilenet(variants: Sequence[str] = VARIANTS) -> PoolEntry:
    """MobileNetV3Large 224x224 (weights=None) in the benchmark pool, converted at most once."""
    with contextlib.suppress(SplitMQError):
        entry = open_entry(POOL, MODEL)
        if all(v in entry.manifest.variants for v in variants):
            return entry
    print(f"converting MobileNetV3Large once (cached in {POOL}) ...", file=sys.stderr, flush=True)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return convert(
        "MobileNetV3Large",
        name=MODEL,
        pool_dir=POOL,
        variants=tuple(variants),
        input_size=INPUT_SIZE,
    )


def image(entry: PoolEntry, seed: int = 1) -> np.ndarray:
    """A fixed random input in the model's [0, 255] range, the same on every side."""
    (spec,) = entry.manifest.inputs
    shape = tuple(1 if d < 0 else d for d in spec.shape)
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 255, shape).astype(np.float32)


def deployed_shards(model: bytes, deployment: Deployment) -> list[Shard]:
    """``model`` cut where ``deployment`` cuts it, checked against the deployed shards."""
    shards = cut(model, [stage.start_op for stage in deployment.stages[1:]])
    if [s.sha256 for s in shards] != [stage.digest for stage in deployment.stages]:
        raise SystemExit("the shards cut here differ from the deployed ones")
    return shards


def cpu_s(pid: int) -> float:
    """A process's CPU time so far (user and system, all its threads)."""
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def wakes(pid: int) -> int:
    """A process's voluntary context switches so far, all its threads: each time one of
    them slept and was woken (Linux: ``/proc``; psutil counts the main thread's only)."""
    return sum(thread_wakes(pid).values())


def thread_wakes(pid: int) -> dict[int, int]:
    """Each thread's voluntary context switches so far, by native id."""
    found = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):  # a thread that ended meanwhile
            for line in (task / "status").read_text().splitlines():
                if line.startswith("voluntary_ctxt_switches:"):
                    found[int(task.name)] = int(line.split()[1])
    return found


def thread_cpu_s(pid: int) -> dict[int, float]:
    """Each thread's CPU time so far (user and system), by native id."""
    return {t.id: t.user_time + t.system_time for t in psutil.Process(pid).threads()}


def float32_and_images(count: int) -> tuple[bytes, list[np.ndarray]]:
    """The model's float32 variant (converted once), and ``count`` distinct inputs."""
    entry = mobilenet()
    model = entry.variant_path("float32").read_bytes()
    return model, [image(entry, seed) for seed in range(count)]


@dataclass(frozen=True)
class AgentSpec:
    """One agent process.

    Attributes:
        agent_id: its id.
        profile: a shipped profile name or a path to a profile file.
        threads: interpreter threads.
        xnnpack: the runtime's default delegate (the agent's default is on).
        extra: more command-line options.
    """

    agent_id: str
    profile: str = "host"
    threads: int = 1
    xnnpack: bool = True
    extra: tuple[str, ...] = ()


def answering(request_id: str) -> Callable[[Message], bool]:
    """A predicate: an answer (plan, refusal, deploy reply) to ``request_id``."""
    return lambda message: getattr(message, "request_id", None) == request_id


def published(reply: DeployReply) -> Callable[[Deployment], bool]:
    """A predicate: the deployment ``reply`` announced, at its epoch or later."""
    return lambda d: d.deployment == reply.deployment and d.epoch >= reply.epoch


def online(agent_id: str) -> Callable[[AgentStatus], bool]:
    return lambda status: status.agent_id == agent_id and status.state is AgentState.ONLINE


def built_after(agent_id: str, after_ms: float) -> Callable[[Telemetry], bool]:
    """A predicate: ``agent_id``'s telemetry, built after ``after_ms`` (epoch ms)."""
    return lambda telemetry: telemetry.agent_id == agent_id and telemetry.ts_ms > after_ms


@dataclass
class Fleet:
    """A broker, a coordinator and agents, started by :func:`fleet`."""

    broker: Mosquitto
    workdir: Path
    operator: MqttTransport
    inbox: Watcher
    agents: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    coordinator: subprocess.Popen[bytes] | None = None
    last_reply: DeployReply | None = None
    _telemetry: Watcher | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return self.broker.url()

    @property
    def broker_address(self) -> str:
        """``host:port`` of the broker."""
        settings = parse_broker_url(self.url, client_id="address")
        return f"{settings.host}:{settings.port}"

    def deploy(
        self,
        model: str = MODEL,
        *,
        attempts: int = 40,
        client_id: str = OPERATOR,
        expect_agents: Sequence[str] | None = None,
        **options: Any,
    ) -> Deployment:
        """Deploy through the coordinator; retried while it has not seen every agent yet.

        ``client_id`` is who asks: an agent's id makes that agent the input's source.
        """
        self.last_reply = None
        for _ in range(attempts):
            request = DeployRequest(
                request_id=uuid.uuid4().hex, client_id=client_id, model=model, **options
            )
            self.operator.publish(DEPLOY_REQUESTS.name(), encode(request)).wait(10)
            reply = self.inbox.wait_for(DeployReply, answering(request.request_id), 180)
            if reply.ok:
                self.last_reply = reply
                deployment = self.inbox.wait_for(Deployment, published(reply))
                hosts = {a for s in deployment.stages for a in s.replicas}
                if expect_agents is None or set(expect_agents) <= hosts:
                    return deployment
            time.sleep(0.5)  # the coordinator has not registered every agent yet
        raise SystemExit(f"could not deploy {model} with {options}: {reply.message}")

    def wait_for_coordinator(self, timeout_s: float = 60.0) -> None:
        """Until the coordinator answers a plan request (a refusal will do)."""
        deadline = time.monotonic() + timeout_s
        while True:
            request = PlanRequest(request_id=uuid.uuid4().hex, client_id=OPERATOR, model=MODEL)
            self.operator.publish(PLAN_REQUESTS.name(), encode(request)).wait(10)
            try:
                self.inbox.wait_for(Message, answering(request.request_id), 0.5)
                return
            except TimeoutError:
                if time.monotonic() > deadline:
                    raise

    def plan(self, model: str = MODEL, **options: Any) -> Plan:
        """A fresh plan from the coordinator (its telemetry as of now)."""
        request = PlanRequest(
            request_id=uuid.uuid4().hex, client_id=OPERATOR, model=model, **options
        )
        self.operator.publish(PLAN_REQUESTS.name(), encode(request)).wait(10)
        answer = self.inbox.wait_for(Message, answering(request.request_id), 30)
        if not isinstance(answer, Plan):
            raise SystemExit(f"no plan: {answer}")
        return answer

    def telemetry_since(self, after_ms: float, timeout_s: float = 10.0) -> None:
        """Until every agent's telemetry built after ``after_ms`` (epoch ms) is in: the
        coordinator's figures then carry what the agents did before it. Telemetry is
        watched from the first call on (retained copies older than ``after_ms`` do not
        count)."""
        if self._telemetry is None:
            self._telemetry = Watcher(self.operator).watch(TELEMETRY)
        for agent_id in self.agents:
            self._telemetry.wait_for(Telemetry, built_after(agent_id, after_ms), timeout_s)

    def pids(self) -> dict[str, int]:
        return {name: process.pid for name, process in self.agents.items()}


def agent_command(url: str, spec: AgentSpec, workdir: Path) -> list[str]:
    return processes.agent_command(
        ["--broker", url],
        spec.agent_id,
        workdir / "cache" / spec.agent_id,
        profile=spec.profile,
        threads=spec.threads,
        xnnpack=spec.xnnpack,
        log_level="warning",
        extra=spec.extra,
    )


@contextlib.contextmanager
def fleet(agents: Sequence[AgentSpec], *, pool: Path = POOL) -> Iterator[Fleet]:
    """A running fleet: every agent online and a coordinator serving ``pool``."""
    with (
        tempfile.TemporaryDirectory(prefix="splitmq-bench-") as tmp,
        Mosquitto(config_dir() / "dev.conf", Path(tmp) / "broker") as broker,
    ):
        workdir = Path(tmp)
        operator = MqttTransport(parse_broker_url(broker.url(), client_id="bench-operator"))
        operator.start()
        inbox = Watcher(operator).watch(STATUS).watch(DEPLOY_REPLIES).watch(DEPLOYMENTS)
        inbox.watch(PLANS, client=OPERATOR)
        log = workdir / "processes.log"
        running = Fleet(broker, workdir, operator, inbox)
        try:
            running.coordinator = processes.spawn(
                processes.coordinator_command(
                    ["--broker", broker.url()], pool, extra=("--log-level", "warning")
                ),
                log,
            )
            for spec in agents:
                running.agents[spec.agent_id] = processes.spawn(
                    agent_command(broker.url(), spec, workdir), log
                )
            for spec in agents:
                inbox.wait_for(AgentStatus, online(spec.agent_id), 60)
            running.wait_for_coordinator()
            yield running
        except BaseException:
            tail = log.read_text(errors="replace")[-3000:]
            print(f"--- fleet log (tail) ---\n{tail}", file=sys.stderr)
            raise
        finally:
            started = [*running.agents.values()]
            if running.coordinator is not None:
                started.append(running.coordinator)
            processes.stop(started)
            operator.close()
