"""What an agent tells the fleet about itself: the retained birth status (again after
every reconnect: the broker may have lost it), the telemetry every period, and the
broker's round trip, measured with pings the agent sends itself through the broker."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import TYPE_CHECKING

import splitmq
from splitmq.agent import probes
from splitmq.agent.requests import now_ms
from splitmq.errors import DecodeError, TransportError
from splitmq.transport import InboundMessage
from splitmq.wire import AgentState, AgentStatus, Ping, Telemetry
from splitmq.wire.topics import COMMANDS, LEASE, STATUS, TELEMETRY

if TYPE_CHECKING:
    from splitmq.agent.agent import Agent

log = logging.getLogger(__name__)

RTT_WINDOW = 10
"""Broker round trips remembered; the lowest is reported. It is what a hop through the
broker costs this agent (the planner's hop cost), not what it cost at a moment the
agent was busy calibrating or loading a shard: one slow first probe, smoothed, made the
partition optimizer shun an agent for a dozen periods."""
RTT_MIN_PROBES = 3
"""Round trips needed before one is reported: the first ones meet a fleet still starting."""
PROBE_BYTES = 64 * 1024
"""A throughput probe's padding: about an activation of a small model's middle."""
THROUGHPUT_EVERY = 5
"""One probe in this many carries :data:`PROBE_BYTES`, so the broker carries a few kB a
second per agent for it at most; until :data:`THROUGHPUT_WINDOW` have, every other one
does (the first measurements meet a fleet still starting)."""
THROUGHPUT_WINDOW = 4
"""Throughput probes remembered; the fastest is taken, as for the round trip."""
MAX_HOP_MBPS = 100_000.0
"""The most :attr:`Presence.hop_mbps` reports: a large probe no slower than a small one
(loopback, within the noise) means more than any link, not infinity."""
ECHO_WAIT_S = 0.5
"""How long the telemetry thread waits for its probe's echo before it builds the
period's telemetry. Building it (psutil's readings) holds the interpreter: an echo
arriving meanwhile waited for it, and the probes read a hop at 1 to 2 ms where the
requests' traces measure 0.35 ms."""


class Presence:
    """The status, telemetry and broker round trip of one :class:`~splitmq.agent.Agent`."""

    def __init__(self, agent: Agent):
        self.agent = agent
        self.rtt_ms: float | None = None
        """The lowest of the last :data:`RTT_WINDOW` round trips (None before
        :data:`RTT_MIN_PROBES` came back)."""
        self._rtts: deque[float] = deque(maxlen=RTT_WINDOW)
        self._large: deque[float] = deque(maxlen=THROUGHPUT_WINDOW)
        """Round trips of the throughput probes (:data:`PROBE_BYTES` of padding)."""
        self._sequence = 0
        self._advised_s = 0.0  # the leading coordinator's advice (0: none)
        self._advice_changed = threading.Event()
        self._echoed = threading.Event()

    @property
    def period_s(self) -> float:
        """The telemetry period: ours, or longer when the leading coordinator advises it
        (a large fleet: the broker's telemetry load stays bounded)."""
        return max(self.agent.config.telemetry_period_s, self._advised_s)

    def on_lease(self, message: InboundMessage) -> None:
        """The coordinators' lease: its holder's advice on the telemetry period."""
        if not message.payload:
            return
        try:
            lease = LEASE.decode(message.payload, topic=message.topic)
        except DecodeError as error:
            log.warning("ignored a bad lease: %s", error)
            return
        if lease.released or lease.telemetry_period_s == self._advised_s:
            return
        before = self.period_s
        self._advised_s = max(0.0, lease.telemetry_period_s)
        if self.period_s != before:
            log.info("telemetry every %.1f s (the coordinator's advice)", self.period_s)
            self._advice_changed.set()  # say the new period at once: silence counts by it

    def status(self) -> AgentStatus:
        agent = self.agent
        profile = agent.config.profile
        factor = agent.link.compute_factor
        me = agent.device
        return AgentStatus(
            agent_id=agent.agent_id,
            state=AgentState.ONLINE,
            ts_ms=int(now_ms()),
            version=splitmq.__version__,
            runtime=str(agent.runtime.kind),
            runtime_version=agent.runtime.version,
            cores=me.cores,
            memory_bytes=me.memory_bytes,
            profile=profile.name,
            cached_shards=tuple(agent.cache.digests()),
            speed_gflops=agent.speed_gflops / factor,
            active_power_w=profile.active_power_w,
            idle_power_w=profile.idle_power_w,
            radio_j_per_mb=profile.radio_j_per_mb,
            compute_factor=factor,
            link=profile.link if agent.config.emulate else None,
            site=agent.config.site or None,
            machine=me.machine,
            cpu_model=me.cpu_model or None,
            kernels="xnnpack" if agent.config.xnnpack else "builtin",
            emulator=me.emulator,
        )

    def telemetry(self) -> Telemetry:
        agent = self.agent
        hosted = agent.hosted_stages()
        stats = agent.transport.stats
        profile = agent.config.profile
        return Telemetry(
            agent_id=agent.agent_id,
            ts_ms=int(now_ms()),
            period_s=self.period_s,
            cpu_pct=probes.cpu_pct(),
            mem_free_bytes=probes.mem_free_bytes(),
            battery=agent.energy.battery(),
            profile=profile.name,
            temperature_c=probes.temperature_c(),
            queue_depth={s.key: s.queue.qsize() for s in hosted},
            compute_ms={s.key: ms for s in hosted if (ms := s.compute_ms) is not None},
            msgs_in=stats.msgs_in,
            msgs_out=stats.msgs_out,
            bytes_in=stats.bytes_in,
            bytes_out=stats.bytes_out,
            broker_rtt_ms=self.rtt_ms,
            hop_mbps=self.hop_mbps,
            energy_j=agent.energy.energy_j,
            link=profile.link if agent.config.emulate else None,
            duplicates=agent.counters.duplicates,
            unroutable=agent.counters.unroutable,
            joins=agent.workers.joins.stats.counts(),
        )

    def announce(self) -> None:
        """Publish the status (retained)."""
        agent = self.agent
        STATUS.publish(agent.transport, self.status(), agent.config.namespace, agent=agent.agent_id)

    def on_connection(self, up: bool) -> None:
        if up:  # the birth message, again after every reconnect
            try:
                self.announce()
            except TransportError as error:
                log.warning("could not announce: %s", error)

    def run(self) -> None:
        """The telemetry thread: probe the broker and publish telemetry every period."""
        agent = self.agent
        try:
            agent.transport.subscribe(
                LEASE.name(agent.config.namespace), self.on_lease, qos=LEASE.qos
            )
        except TransportError as error:
            log.warning("cannot hear the coordinators' telemetry advice: %s", error)
        while not agent.stopping.is_set():
            self._advice_changed.clear()
            try:
                self.probe_broker()
                self._echoed.wait(ECHO_WAIT_S)  # nothing of ours in its way
                TELEMETRY.publish(
                    agent.transport, self.telemetry(), agent.config.namespace, agent=agent.agent_id
                )
            except TransportError as error:
                log.debug("telemetry not sent: %s", error)
            agent.pace_acks()  # from this period's stage-times
            deadline = time.monotonic() + self.period_s
            while not self._advice_changed.is_set() and (left := deadline - time.monotonic()) > 0:
                if agent.stopping.wait(min(left, 0.25)):
                    return

    def probe_broker(self) -> None:
        """Send ourselves a ping through the broker; its return gives the round trip."""
        agent = self.agent
        self._sequence += 1
        self._echoed.clear()
        early = self._sequence <= 2 * THROUGHPUT_WINDOW
        large = self._sequence % (2 if early else THROUGHPUT_EVERY) == 0
        probe = Ping(
            command_id=f"rtt-{self._sequence}",
            issuer=agent.agent_id,
            sent_ms=time.monotonic() * 1000.0,
            padding=bytes(PROBE_BYTES) if large else None,
        )
        COMMANDS.publish(agent.transport, probe, agent.config.namespace, agent=agent.agent_id)

    def on_echo(self, ping: Ping, received_s: float) -> None:
        """One of our probes came back: it arrived at ``received_s`` (``time.monotonic()``,
        on the network thread). The round trip ends there, not when the command worker
        got round to it: a hop's cost to the planner is the broker's, and the time an
        agent spends handling a request it received is in its stage's compute time
        already (counted twice, it made the planner predict a hop at three times what
        the traces measure)."""
        rtt_ms = received_s * 1000.0 - ping.sent_ms
        if ping.padding:
            self._large.append(rtt_ms)
        else:
            self._rtts.append(rtt_ms)
        self._echoed.set()
        if len(self._rtts) >= RTT_MIN_PROBES:
            self.rtt_ms = min(self._rtts)

    @property
    def hop_mbps(self) -> float | None:
        """What a hop through the broker carries per second (Mbit/s): the padding of a
        throughput probe over its round trip beyond a small probe's (the fastest of
        each); None until both were measured."""
        if self.rtt_ms is None or not self._large:
            return None
        extra_ms = min(self._large) - self.rtt_ms
        bits = PROBE_BYTES * 8
        return min(MAX_HOP_MBPS, bits / (extra_ms * 1e3)) if extra_ms > 0 else MAX_HOP_MBPS
