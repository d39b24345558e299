"""The fleet registry: who is online, with what battery, speed, link and shards.

Built from three retained or periodic sources (the topic table: docs/architecture.md):

- ``agents/{agent}/status``: the birth message (runtime, cores, memory, power figures,
  calibrated speed, link, cached shards, the tensor dtypes it can pass at a shard's
  boundary), or the will the broker published (offline);
- ``agents/{agent}/telemetry``: every period, battery, load, free memory, queue depths
  and the smoothed compute time of each hosted stage;
- ``agents/{agent}/events``: ``ShardReady`` with the benchmark time of a freshly
  loaded shard.

An agent counts as gone when its status says offline or when no telemetry has arrived
for ``stale_periods`` of its own period (a crashed device whose will has not fired yet,
or a silent link). Times are taken on arrival with a monotonic clock: device clocks need
not agree.

Speed: only what was measured on the device itself. Once shards have run on an agent,
their measured times say how fast it really runs *our* graphs; before that, the figure
its status carries, measured at start on the same device with the same runtime and
kernels (a small calibration net). Nothing is carried over from other devices: an
emulated Pi or a browser page runs the calibration net and our graphs in proportions
no x86 agent's ratio predicts. No I/O here: the coordinator's service feeds messages in.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from splitmq.coordinator.planner import AgentView
from splitmq.wire import AgentState, AgentStatus, Link, ShardReady, Telemetry

DEFAULT_STALE_PERIODS = 3.0
DEFAULT_SPEED_GFLOPS = 1.0
FLOPS_PER_MS_PER_GFLOPS = 1e6


def stage_key(deployment: str, stage: int) -> str:
    """How agents name a hosted stage in their telemetry (``deployment/stage``)."""
    return f"{deployment}/{stage}"


@dataclass
class AgentRecord:
    """Everything the registry knows of one agent.

    Attributes:
        agent_id: the agent.
        status: its last status message (birth or will).
        telemetry: its last telemetry.
        seen_s: monotonic time of the last status or telemetry received.
        telemetry_s: monotonic time the last telemetry was received.
        bench_ms: per hosted stage key, the benchmark time its ``ShardReady`` reported.
        measured: per shard digest, ``(flops, ms)`` measured on this agent.
    """

    agent_id: str
    status: AgentStatus | None = None
    telemetry: Telemetry | None = None
    seen_s: float = 0.0
    telemetry_s: float = 0.0
    bench_ms: dict[str, float] = field(default_factory=dict)
    measured: dict[str, tuple[int, float]] = field(default_factory=dict)

    @property
    def period_s(self) -> float:
        return self.telemetry.period_s if self.telemetry is not None else 1.0

    def compute_ms(self, key: str) -> float | None:
        """The stage's smoothed compute time from telemetry, else its benchmark time."""
        if self.telemetry is not None and key in self.telemetry.compute_ms:
            return self.telemetry.compute_ms[key]
        return self.bench_ms.get(key)


class Registry:
    """The live fleet, fed by the coordinator's subscriptions. Thread-safe.

    Args:
        stale_periods: telemetry periods of silence after which an agent is gone.
        clock: monotonic seconds (injectable for tests).
    """

    def __init__(
        self,
        *,
        stale_periods: float = DEFAULT_STALE_PERIODS,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.stale_periods = stale_periods
        self._clock = clock
        self._agents: dict[str, AgentRecord] = {}
        self._lock = threading.Lock()

    # -- feeding -----------------------------------------------------------------------

    def on_status(self, status: AgentStatus) -> None:
        with self._lock:
            record = self._record(status.agent_id)
            record.status = status
            record.seen_s = self._clock()
            if status.state is AgentState.OFFLINE:
                record.telemetry = None

    def on_telemetry(self, telemetry: Telemetry) -> None:
        with self._lock:
            record = self._record(telemetry.agent_id)
            record.telemetry = telemetry
            record.seen_s = record.telemetry_s = self._clock()

    def on_shard_ready(self, ready: ShardReady, flops: int | None = None) -> None:
        """A shard's benchmark; ``flops`` (from the manifest) teaches the agent's speed."""
        with self._lock:
            record = self._record(ready.agent_id)
            record.bench_ms[stage_key(ready.deployment, ready.stage)] = ready.bench_ms
            if flops and ready.bench_ms > 0:
                record.measured[ready.digest] = (flops, ready.bench_ms)

    def refresh(self, grace_s: float = 0.0) -> None:
        """Restart every agent's silence clock, with ``grace_s`` more to come back.

        After our own connection was down, the telemetry we missed says nothing of the
        agents; they reconnect with a backoff of their own, so silence counts again only
        ``grace_s`` from now (their will, an offline status, still counts at once).
        """
        with self._lock:
            now = self._clock()
            for record in self._agents.values():
                record.seen_s = max(record.seen_s, now + grace_s)

    def forget(self, agent_id: str) -> None:
        with self._lock:
            self._agents.pop(agent_id, None)

    def _record(self, agent_id: str) -> AgentRecord:
        record = self._agents.get(agent_id)
        if record is None:
            record = self._agents[agent_id] = AgentRecord(agent_id)
        return record

    # -- reading ------------------------------------------------------------------------

    def now(self) -> float:
        """The registry's clock (monotonic seconds)."""
        return self._clock()

    def agent_ids(self) -> list[str]:
        with self._lock:
            return sorted(self._agents)

    def record(self, agent_id: str) -> AgentRecord | None:
        with self._lock:
            return self._agents.get(agent_id)

    def online(self, agent_id: str) -> bool:
        with self._lock:
            record = self._agents.get(agent_id)
            return record is not None and self._online(record, self._clock())

    def online_ids(self) -> list[str]:
        with self._lock:
            now = self._clock()
            return sorted(a for a, r in self._agents.items() if self._online(r, now))

    def _online(self, record: AgentRecord, now: float) -> bool:
        if record.status is None or record.status.state is not AgentState.ONLINE:
            return False
        return now - record.seen_s <= self.stale_periods * record.period_s

    def serves(self, agent_id: str, deployment: str, stage: int, since_s: float) -> bool | None:
        """Whether the agent's telemetry lists the stage among those it serves.

        None (not known yet) unless a telemetry message arrived more than one of the
        agent's periods after ``since_s`` (monotonic): one taken earlier may predate a
        load that has finished since. A restarted agent serves nothing until told again.
        """
        with self._lock:
            record = self._agents.get(agent_id)
            if record is None or record.telemetry is None:
                return None
            if record.telemetry_s <= since_s + record.period_s:
                return None
            return stage_key(deployment, stage) in record.telemetry.queue_depth

    def compute_ms(self, deployment: str, stage: int, agent_id: str) -> float | None:
        with self._lock:
            record = self._agents.get(agent_id)
            return None if record is None else record.compute_ms(stage_key(deployment, stage))

    def queue_depth(self, deployment: str, stage: int, agent_id: str) -> int:
        """Requests waiting for the stage on the agent, by its last telemetry (0 if none)."""
        with self._lock:
            record = self._agents.get(agent_id)
            if record is None or record.telemetry is None:
                return 0
            return record.telemetry.queue_depth.get(stage_key(deployment, stage), 0)

    def site(self, agent_id: str) -> str:
        """The agent's site, as its status says ('' when it says none)."""
        with self._lock:
            record = self._agents.get(agent_id)
            status = record.status if record is not None else None
            return (status.site or "") if status is not None else ""

    def speed_gflops(self, agent_id: str) -> float:
        """Measured speed on our shards, else the agent's own calibrated figure."""
        with self._lock:
            record = self._agents.get(agent_id)
            if record is None:
                return DEFAULT_SPEED_GFLOPS
            return _speed(record)

    def views(self, agent_ids: Iterable[str] | None = None) -> dict[str, AgentView]:
        """The planner's view of every known agent, or of those of ``agent_ids`` that
        are known (gone ones marked offline)."""
        with self._lock:
            now = self._clock()
            if agent_ids is None:
                records = list(self._agents.values())
            else:
                records = [r for a in agent_ids if (r := self._agents.get(a)) is not None]
            return {r.agent_id: self._view(r, now) for r in records}

    def _view(self, record: AgentRecord, now: float) -> AgentView:
        status, telemetry = record.status, record.telemetry
        link = (telemetry.link if telemetry is not None else None) or (
            status.link if status is not None else None
        )
        battery = telemetry.battery if telemetry is not None else None
        defaults = AgentView(record.agent_id)
        return AgentView(
            agent_id=record.agent_id,
            online=self._online(record, now),
            battery_pct=battery.pct if battery is not None else 100.0,
            plugged=battery.plugged if battery is not None else True,
            active_w=status.active_power_w
            if status and status.active_power_w
            else defaults.active_w,
            radio_j_per_mb=(
                status.radio_j_per_mb
                if status and status.radio_j_per_mb
                else defaults.radio_j_per_mb
            ),
            bandwidth_mbps=_bandwidth_mbps(link, telemetry, defaults),
            link_latency_ms=link.latency_ms if link is not None else defaults.link_latency_ms,
            speed_gflops=_speed(record),
            mem_free_bytes=telemetry.mem_free_bytes if telemetry is not None else None,
            # its broker round trip: what a hop through the broker costs it, as measured
            hop_ms=telemetry.broker_rtt_ms if telemetry is not None else None,
            runtime=status.runtime if status is not None else "",
            tensor_dtypes=status.tensor_dtypes if status is not None else None,
            site=(status.site or "") if status is not None else "",
        )


def _bandwidth_mbps(link: Link | None, telemetry: Telemetry | None, defaults: AgentView) -> float:
    """An agent's hop bandwidth: its emulated link's, else what its probes measured
    (``Telemetry.hop_mbps``), else the planner's default."""
    if link is not None:
        return link.bandwidth_mbps
    if telemetry is not None and telemetry.hop_mbps:
        return telemetry.hop_mbps
    return defaults.bandwidth_mbps


def _speed(record: AgentRecord) -> float:
    """What was measured on the agent itself: our shards, else its calibration net (a
    placeholder when it could measure neither)."""
    measured = _measured_speed(record)
    if measured is not None:
        return measured
    calibrated = record.status.speed_gflops if record.status is not None else 0.0
    return calibrated if calibrated > 0 else DEFAULT_SPEED_GFLOPS


def _measured_speed(record: AgentRecord) -> float | None:
    """GFLOP/s over every shard this agent has benchmarked, or None."""
    if not record.measured:
        return None
    flops = sum(f for f, _ in record.measured.values())
    ms = sum(m for _, m in record.measured.values())
    return flops / ms / FLOPS_PER_MS_PER_GFLOPS if ms > 0 else None
