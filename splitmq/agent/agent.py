"""The edge agent: its life cycle, its commands (load, unload) and the stages it hosts.

Its other rooms: :mod:`~splitmq.agent.stages` (the stage workers: the request path),
:mod:`~splitmq.agent.presence` (status, telemetry, the broker's round trip),
:mod:`~splitmq.agent.link` (the emulated link every publish goes through),
:mod:`~splitmq.agent.requests` (what a request meets: checks, errors, duplicates,
salvage), :mod:`~splitmq.agent.fetch` and :mod:`~splitmq.agent.cache` (shards).

Threads, and what runs on each:

- the transport's network thread only reads the connection and enqueues: into the
  transport's inbox, or (fast path) straight into a stage's queue;
- the transport's inbox worker dispatches by topic: an activation goes into its stage's
  bounded queue (or is refused at once: unknown deployment, shard not loaded, queue
  full), a pool chunk goes to the fetcher, a ping is answered, a load/unload command
  goes to the command thread;
- the command thread fetches, verifies, caches, loads and benchmarks shards;
- one worker thread per hosted stage decodes, checks, invokes the shard, and forwards
  (or runs the next stage in-process when this agent hosts it too);
- the telemetry thread publishes telemetry and probes the broker's round trip.

Every failure a request meets becomes an :class:`ErrorMessage` on its callback topic;
when even that is unknown it is logged and counted (``Telemetry.unroutable``).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field

from splitmq.agent import device
from splitmq.agent.cache import DigestMismatch, ShardCache
from splitmq.agent.config import AgentConfig
from splitmq.agent.counters import Counters
from splitmq.agent.energy import EnergyMeter
from splitmq.agent.fetch import FetchError, ShardFetcher
from splitmq.agent.held import held_time
from splitmq.agent.link import EmulatedLink
from splitmq.agent.presence import Presence
from splitmq.agent.requests import (
    Job,
    SeenRequests,
    boundary,
    now_ms,
    stage_key,
)
from splitmq.agent.runtime import (
    Runtime,
    Shard,
    ShardLoadError,
    calibrate,
    find_runtime,
)
from splitmq.agent.sites import SiteBook
from splitmq.agent.stage_queue import StageQueue
from splitmq.agent.stages import StageWorkers
from splitmq.errors import DecodeError, TransportError
from splitmq.recent import RecentMedian
from splitmq.transport import InboundMessage, Transport, Will
from splitmq.wire import (
    AgentState,
    AgentStatus,
    CommandReply,
    LoadShard,
    Ping,
    Pong,
    ShardReady,
    StageEdge,
    Telemetry,
    TensorSpec,
    UnloadShard,
    encode,
)
from splitmq.wire.topics import (
    ANY_AGENT,
    COMMANDS,
    EVENTS,
    POOL_CHUNKS,
    STAGE,
    STATUS,
)

log = logging.getLogger(__name__)


def agent_will(config: AgentConfig) -> Will:
    """The last will to register with the broker: a retained ``offline`` status."""
    status = AgentStatus(agent_id=config.agent_id, state=AgentState.OFFLINE)
    return Will(
        STATUS.name(config.namespace, agent=config.agent_id),
        encode(status),
        qos=STATUS.qos,
        retain=STATUS.retain,
    )


@dataclass
class _HostedStage:
    deployment: str
    stage: int
    digest: str
    shard: Shard
    inputs: tuple[TensorSpec, ...]
    queue: StageQueue[Job | None]
    shared_filter: str | None = None
    held: RecentMedian = field(default_factory=held_time)
    """The time requests hold the stage (telemetry's ``compute_ms``):
    :meth:`~splitmq.agent.stages.StageWorkers` measures it."""
    free_ms: float = 0.0
    """When the stage's worker finished its last request (epoch ms)."""
    thread: threading.Thread | None = None
    sources: tuple[StageEdge, ...] | None = None
    targets: tuple[StageEdge, ...] | None = None

    @property
    def key(self) -> str:
        return stage_key(self.deployment, self.stage)

    @property
    def compute_ms(self) -> float | None:
        """The typical time a request holds the stage (see :mod:`splitmq.agent.held`)."""
        return self.held.ms


@dataclass
class _Counters(Counters):
    duplicates: int = 0
    unroutable: int = 0
    errors_sent: int = 0
    results_sent: int = 0


class Agent:
    """One edge agent over any :class:`splitmq.transport.Transport`.

    Create the transport with ``will=agent_will(config)`` so the broker marks the agent
    offline if it vanishes. ``start()`` connects and serves; ``stop()`` says offline and
    disconnects.
    """

    def __init__(
        self, config: AgentConfig, transport: Transport, *, runtime: Runtime | None = None
    ):
        self.config = config
        self.transport = transport
        self.runtime = runtime or find_runtime(config.runtime)
        self.cache = ShardCache(config.cache_dir, config.cache_max_bytes)
        self.energy = EnergyMeter(config.profile, config.battery, initial_pct=config.battery_pct)
        self.counters = _Counters()
        self.link = EmulatedLink(config, transport, self.energy)
        self._ns = config.namespace
        self._fetcher = ShardFetcher(
            transport,
            config.agent_id,
            namespace=self._ns,
            chunk_bytes=config.fetch_chunk_bytes,
            window=config.fetch_window,
            timeout_s=config.fetch_timeout_s,
            retries=config.fetch_retries,
        )
        self._stages: dict[tuple[str, int], _HostedStage] = {}
        self._loading: set[tuple[str, int]] = set()
        self._stages_lock = threading.Lock()
        self._seen = SeenRequests(config.dedup_entries)
        self._commands: queue.Queue[LoadShard | UnloadShard | None] = queue.Queue()
        self.stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._started = False
        self.device = device.detect()
        self.speed_gflops = self._calibrate()
        self.presence = Presence(self)
        self.sites = SiteBook(transport, config.namespace)
        self.workers = StageWorkers(self)

    def _calibrate(self) -> float:
        """GFLOP/s of this runtime on the bundled calibration net (0 when it cannot run)."""
        try:
            return calibrate(self.runtime, threads=self.config.threads, xnnpack=self.config.xnnpack)
        except (ShardLoadError, OSError) as error:
            log.warning("could not calibrate the runtime's speed: %s", error)
            return 0.0

    # -- life cycle ---------------------------------------------------------------------

    @property
    def agent_id(self) -> str:
        return self.config.agent_id

    def start(self, timeout_s: float = 10.0) -> None:
        """Connect, announce, subscribe, and start the command and telemetry threads."""
        if self._started:
            return
        self._started = True
        self.transport.start(timeout_s)
        me = self.agent_id
        self.transport.subscribe(
            COMMANDS.name(self._ns, agent=me), self._on_command, qos=COMMANDS.qos
        )
        self.transport.subscribe(
            POOL_CHUNKS.name(self._ns, agent=me), self._fetcher.on_message, qos=POOL_CHUNKS.qos
        )
        self.transport.subscribe(
            STAGE.filter(self._ns, agent=me),
            self.workers.on_stage,
            qos=STAGE.qos,
            fast_path=self.workers.enqueue,
        )
        self.sites.start()
        # Announced only now, subscribed: whoever sees the birth message may command us
        # at once. After a reconnect the transport subscribes again before telling us.
        self.transport.add_connection_listener(self.presence.on_connection)
        self.presence.announce()
        for target, name in ((self._run_commands, "commands"), (self.presence.run, "telemetry")):
            thread = threading.Thread(target=target, name=f"agent-{me}-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        log.info(
            "agent %s serving (runtime %s %s, profile %s, cache %s)",
            me,
            self.runtime.kind,
            self.runtime.version,
            self.config.profile.name,
            self.config.cache_dir,
        )

    def stop(self) -> None:
        """Publish ``offline``, stop every thread and disconnect cleanly."""
        if not self._started:
            return
        self._started = False
        self.stopping.set()
        self._commands.put(None)
        with self._stages_lock:
            hosted = list(self._stages.values())
            self._stages.clear()
        for stage in hosted:
            stage.queue.put(None)
        for thread in [*self._threads, *(s.thread for s in hosted if s.thread)]:
            if thread is not threading.current_thread():
                thread.join(5.0)
        status = AgentStatus(agent_id=self.agent_id, state=AgentState.OFFLINE, ts_ms=int(now_ms()))
        try:
            STATUS.publish(self.transport, status, self._ns, agent=self.agent_id).wait(2.0)
        except TransportError as error:
            log.warning("could not publish the offline status: %s", error)
        self.transport.close()

    def __enter__(self) -> Agent:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def hosted(self) -> list[str]:
        """The stages this agent serves, as ``deployment/stage``."""
        with self._stages_lock:
            return sorted(s.key for s in self._stages.values())

    # -- presence and telemetry (splitmq.agent.presence) ---------------------------------

    def status(self) -> AgentStatus:
        """The birth message: what this agent is and can do."""
        return self.presence.status()

    def telemetry(self) -> Telemetry:
        """This period's telemetry."""
        return self.presence.telemetry()

    def hosted_stages(self) -> list[_HostedStage]:
        with self._stages_lock:
            return list(self._stages.values())

    def pace_acks(self) -> None:
        """Tell the transport the longest time a request holds one of our stages (0
        when we host none): a PUBACK held for its message then rides the forward it
        becomes, and the broker's acknowledgement of that forward waits for the next
        activation (:meth:`splitmq.transport.Transport.pace_acks`)."""
        held_ms = [ms for s in self.hosted_stages() if (ms := s.compute_ms) is not None]
        self.transport.pace_acks(max(held_ms, default=0.0) / 1000.0)

    # -- commands -------------------------------------------------------------------------

    def _on_command(self, message: InboundMessage) -> None:
        try:
            command = COMMANDS.decode(message.payload, topic=message.topic)
        except DecodeError as error:
            log.warning("ignored a bad command: %s", error)
            return
        if isinstance(command, Ping) and command.issuer == self.agent_id:
            self.presence.on_echo(command, message.received_s)
            return
        if command.issuer != self.config.coordinator_id:
            log.warning("refused %s from %r: not the coordinator", command.KIND, command.issuer)
            self._reply(
                command.command_id,
                ok=False,
                message=(
                    f"{command.issuer!r} may not command this agent: only "
                    f"{self.config.coordinator_id!r} may"
                ),
            )
            return
        if isinstance(command, Ping):
            pong = Pong(
                command_id=command.command_id,
                agent_id=self.agent_id,
                sent_ms=command.sent_ms,
                ts_ms=now_ms(),
            )
            EVENTS.publish(self.transport, pong, self._ns, agent=self.agent_id)
            return
        if isinstance(command, LoadShard):
            with self._stages_lock:
                self._loading.add((command.deployment, command.stage))
        self._commands.put(command)

    def _run_commands(self) -> None:
        while True:
            command = self._commands.get()
            if command is None:
                return
            try:
                if isinstance(command, LoadShard):
                    self._load(command)
                else:
                    self._unload(command)
            except Exception as error:  # a bug must not kill the command thread
                log.exception("command %s failed", command.command_id)
                self._reply(command.command_id, ok=False, message=f"internal error: {error}")

    def _reply(self, command_id: str, *, ok: bool, message: str = "") -> None:
        reply = CommandReply(command_id=command_id, agent_id=self.agent_id, ok=ok, message=message)
        EVENTS.publish(self.transport, reply, self._ns, agent=self.agent_id)

    def _load(self, command: LoadShard) -> None:
        where = (command.deployment, command.stage)
        try:
            hosted = self._install(command)
        except (FetchError, DigestMismatch, ShardLoadError, ValueError) as error:
            with self._stages_lock:
                self._loading.discard(where)
            log.warning("load of %s failed: %s", stage_key(*where), error)
            self._reply(command.command_id, ok=False, message=str(error))
            return
        runs = max(1, self.config.bench_runs)
        cpu_s = time.thread_time()
        bench_s = hosted.shard.benchmark(runs)
        cpu_s = (time.thread_time() - cpu_s) / (runs + 1)  # the warm-up run included
        bench_ms = self.link.device_s(bench_s, cpu_s, hosted.shard.threads) * 1000.0
        hosted.held.reset(bench_ms)
        self._serve(hosted)
        self.pace_acks()
        if command.shared:
            group = f"splitmq-{command.deployment}-{command.stage}"
            hosted.shared_filter = STAGE.shared_filter(
                group, self._ns, deployment=command.deployment, stage=command.stage, agent=ANY_AGENT
            )
            self.transport.subscribe(
                hosted.shared_filter,
                self.workers.on_stage,
                qos=STAGE.qos,
                fast_path=self.workers.enqueue,
            )
        ready = ShardReady(
            command_id=command.command_id,
            agent_id=self.agent_id,
            deployment=command.deployment,
            stage=command.stage,
            digest=command.digest,
            runtime=str(self.runtime.kind),
            bench_ms=bench_ms,
        )
        log.info("serving %s: shard %s, %.2f ms per run", hosted.key, command.digest[:12], bench_ms)
        self.presence.announce()  # the cached shards changed: say so before the shard is ready
        EVENTS.publish(self.transport, ready, self._ns, agent=self.agent_id)

    def _install(self, command: LoadShard) -> _HostedStage:
        data = self.cache.get(command.digest)
        if data is None:
            log.info("shard %s not cached: fetching from the pool", command.digest[:12])
            data = self._fetcher.fetch(command.digest, command.size_bytes)
            with self._stages_lock:
                pinned = {s.digest for s in self._stages.values()}
            self.cache.put(data, command.digest, pinned=pinned)
        else:
            log.info("shard %s found in the cache", command.digest[:12])
        threads = command.threads or self.config.threads
        shard = self.runtime.load(data, threads=threads, xnnpack=self.config.xnnpack)
        for side, announced, actual in (
            ("inputs", command.inputs, shard.inputs),
            ("outputs", command.outputs, shard.outputs),
        ):
            if announced and boundary(announced) != boundary(actual):
                raise ShardLoadError(
                    f"the shard's {side} {boundary(actual)} are not the {boundary(announced)} "
                    "the load command announced"
                )
        return _HostedStage(
            deployment=command.deployment,
            stage=command.stage,
            digest=command.digest,
            shard=shard,
            inputs=shard.inputs,
            queue=StageQueue(self.config.queue_size),
            sources=command.sources,
            targets=command.targets,
        )

    def _serve(self, hosted: _HostedStage) -> None:
        where = (hosted.deployment, hosted.stage)
        hosted.thread = threading.Thread(
            target=self.workers.run,
            args=(hosted,),
            name=f"agent-{self.agent_id}-stage-{hosted.key}",
            daemon=True,
        )
        with self._stages_lock:
            previous = self._stages.get(where)
            self._stages[where] = hosted
            self._loading.discard(where)
        hosted.thread.start()
        if previous is not None:
            self._retire(previous)

    def _unload(self, command: UnloadShard) -> None:
        where = (command.deployment, command.stage)
        with self._stages_lock:
            hosted = self._stages.pop(where, None)
        if hosted is None:
            self._reply(
                command.command_id,
                ok=False,
                message=f"this agent does not host {stage_key(*where)}",
            )
            return
        self._retire(hosted)
        self.pace_acks()
        log.info("unloaded %s", hosted.key)
        self._reply(command.command_id, ok=True)

    def _retire(self, hosted: _HostedStage) -> None:
        if hosted.shared_filter is not None:
            try:
                self.transport.unsubscribe(hosted.shared_filter)
            except TransportError as error:
                log.warning("could not unsubscribe %s: %s", hosted.shared_filter, error)
        hosted.queue.put(None)  # the worker ends after what is queued; then the shard is freed
