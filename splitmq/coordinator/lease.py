"""The leader lease: of the coordinators on one broker, exactly one deploys and heals.

Every coordinator answers plan requests; only the holder of the lease changes
deployments. The lease is a retained message on ``coordinators/lease``
(:class:`splitmq.wire.Lease`) that its holder publishes every period.

MQTT has no compare-and-set, so the lease is not taken by one atomic write. It rests
on four rules, each measured on the coordinator's own monotonic clock (never a clock
of another machine: skew between machines does not matter, only their rates, which
differ by parts per million):

1. **Claims are ordered.** A claim is a lease with a term one above every term seen
   (on the lease topic or in the deployments' epochs, see :func:`term_of_epoch`).
   Of two live claims the higher term wins, then the smaller holder id: every
   coordinator picks the same winner from the same messages, whatever order they
   arrive in.
2. **A leader acts only on an acknowledged renewal.** It counts its lease from the
   moment it *sent* the last renewal the broker acknowledged, for ``guard`` of the
   expiry (0.8): the others count from when they *received* it, which is later. A
   leader cut off from the broker stops when that time runs out, before anyone else
   may take over, and at once when its connection drops.
3. **A claim settles before it leads.** A candidate leads only after its claim was
   acknowledged and then ``settle_s`` passed without a better claim; when it takes
   over from a holder that may still be acting (a lease that expired, or was
   released by the broker's will: the holder may not know yet that it lost the
   broker), it waits as long as that holder could still believe it leads.
4. **Epochs are fenced by term.** A leader of term ``t`` gives deployments epochs in
   ``[t * EPOCH_STRIDE, (t + 1) * EPOCH_STRIDE)``: a deployment published by a leader
   that lost the lease without knowing it has a smaller epoch than any of its
   successor, so agents and clients (which keep the highest epoch) ignore it, and two
   leaders can never publish the same epoch.

The release is the holder's will: a non-retained ``released`` lease on the same topic,
so the followers hear at once that the holder vanished, while the retained lease (its
last renewal) still tells a coordinator started later which term was reached.

:class:`LeaseState` is the pure state machine (time is a parameter: the tests drive it
from tables); :class:`LeaseKeeper` runs it over a transport.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import StrEnum

from splitmq.errors import ConfigError, DecodeError, SplitMQError, TransportError
from splitmq.transport import InboundMessage, Transport
from splitmq.transport.base import Will
from splitmq.wire import Lease, encode
from splitmq.wire.topics import DEFAULT_NAMESPACE, LEASE

log = logging.getLogger(__name__)

EPOCH_STRIDE = 1000
"""Epochs a leader may give out in one term (then it hands the lease on to start a new
term, see :meth:`LeaseState.next_epoch`)."""


class LeaseLost(SplitMQError):
    """This coordinator does not (or no longer) hold the lease: it must not deploy."""

    def __init__(self, message: str, leader: str | None = None):
        super().__init__(message)
        self.leader = leader


class Role(StrEnum):
    FOLLOWER = "follower"
    CANDIDATE = "candidate"
    LEADER = "leader"


@dataclass(frozen=True)
class LeaseConfig:
    """Lease settings.

    Attributes:
        period_s: how often the leader renews (the fleet's telemetry period).
        expiry_periods: periods of silence after which the others take the lease as lost.
        guard: the fraction of the expiry a leader counts from its last acknowledged
            renewal; below 1 so that it stops before the others may take over.
        candidate: whether this coordinator may lead (False: it only plans).
    """

    period_s: float = 1.0
    expiry_periods: float = 3.0
    guard: float = 0.8
    candidate: bool = True

    def __post_init__(self) -> None:
        if self.period_s <= 0 or self.expiry_periods < 2 or not 0 < self.guard < 1:
            raise ConfigError(
                "the lease needs a period above 0 s, expiry_periods >= 2 and 0 < guard < 1"
            )

    @property
    def expiry_s(self) -> float:
        return self.period_s * self.expiry_periods

    @property
    def valid_s(self) -> float:
        """How long a leader acts on one acknowledged renewal (from its sending)."""
        return self.expiry_s * self.guard


def term_of_epoch(epoch: int) -> int:
    """The term of the leader that published ``epoch``."""
    return epoch // EPOCH_STRIDE


def beats(a: Lease, b: Lease) -> bool:
    """Whether claim ``a`` wins over claim ``b``: the higher term, then the smaller holder."""
    return (a.term, _inverse(a.holder)) > (b.term, _inverse(b.holder))


def _inverse(holder: str) -> tuple[int, ...]:
    return (*(-ord(c) for c in holder), 0)


class LeaseState:
    """The lease as one coordinator sees it; every method takes the time (monotonic s).

    Drive it with :meth:`on_lease` (each lease message of another holder),
    :meth:`on_connection`, :meth:`due` (what to publish now) and :meth:`acked` (the
    broker took it); ask :meth:`is_leader` before each change of a deployment.
    """

    def __init__(self, holder: str, config: LeaseConfig, now: float):
        self.holder = holder
        self.config = config
        self.role = Role.FOLLOWER
        self.term_seen = 0
        self._current: Lease | None = None  # the best live lease of another holder
        self._current_seen = 0.0
        self._quiet_until = now + config.period_s  # let the retained lease arrive first
        self._takeover = False  # the next claim may take over from a holder still acting
        self._mine: Lease | None = None  # our claim or lease
        self._claim_acked: float | None = None
        self._settle_from = 0.0
        self._renewed: float | None = None  # send time of the last acknowledged renewal
        self._next_renewal = 0.0
        self._paused_until = 0.0  # another holder may still act until then
        self._connected = True
        self.telemetry_period_s = 0.0
        """The telemetry period advised to the agents with each renewal (0: none)."""

    # -- what the others say --------------------------------------------------------------

    def on_lease(self, lease: Lease, now: float) -> None:
        if lease.holder == self.holder:
            return  # our own, echoed (or our will, which we shall not see)
        self.term_seen = max(self.term_seen, lease.term)
        current = self._current
        if lease.released:
            if current is not None and current.holder == lease.holder:
                self._current = None
                self._takeover = True  # its will: it may not know yet that it lost the broker
            return
        if (
            current is None
            or current.holder == lease.holder
            or beats(lease, current)
            or now - self._current_seen > self.config.expiry_s
        ):
            self._current, self._current_seen = lease, now
        mine = self._mine
        if mine is None or self.role is Role.FOLLOWER:
            return
        if beats(lease, mine):
            log.info(
                "lease: %s (term %d) wins over our term %d", lease.holder, lease.term, mine.term
            )
            self._step_down(now, quiet=False)
            return
        # We win, but its holder may act on its last renewal for a while yet.
        if self.role is Role.CANDIDATE:
            self._settle_from = max(self._settle_from, now)
        else:
            self._paused_until = max(self._paused_until, now + self.config.valid_s)
            self._next_renewal = now  # tell it at once

    def on_connection(self, up: bool, now: float) -> None:
        self._connected = up
        if not up:
            if self.role is not Role.FOLLOWER:
                log.warning("lease: lost the broker: no longer leading")
            self._step_down(now, quiet=True)
        else:
            self._quiet_until = max(self._quiet_until, now + self.config.period_s)

    def observe_epoch(self, epoch: int) -> None:
        """A deployment's epoch tells which terms were reached (the lease may be lost)."""
        self.term_seen = max(self.term_seen, term_of_epoch(epoch))

    # -- what to do -------------------------------------------------------------------------

    def due(self, now: float) -> Lease | None:
        """The lease to publish now (a claim or a renewal), or None."""
        config = self.config
        if not self._connected:
            return None  # a claim would wait in the outbox and arrive stale
        if self.role is Role.LEADER:
            if not self._valid(now):
                log.warning("lease: no renewal acknowledged in time: no longer leading")
                self._step_down(now, quiet=True)
                return None
            if now >= self._next_renewal and self._mine is not None:
                self._next_renewal = now + config.period_s
                if self._mine.telemetry_period_s != self.telemetry_period_s:
                    self._mine = replace(self._mine, telemetry_period_s=self.telemetry_period_s)
                return self._mine
            return None
        if self.role is Role.CANDIDATE:
            if self._claim_acked is None:
                if now - self._settle_from > config.expiry_s:
                    self._step_down(now, quiet=False)  # the claim never reached the broker
                return None
            settle = config.valid_s if self._takeover else config.period_s
            if now - max(self._claim_acked, self._settle_from) >= settle and self._valid(now):
                self.role = Role.LEADER
                self._takeover = False
                log.info("lease: %s leading, term %d", self.holder, self.term)
                return self.due(now)
            if now >= self._next_renewal and self._mine is not None:
                self._next_renewal = now + config.period_s  # keep the claim alive
                return self._mine
            return None
        if not config.candidate or now < self._quiet_until:
            return None
        current = self._current
        if current is not None and now - self._current_seen <= config.expiry_s:
            return None
        if current is not None:
            log.info("lease: %s silent for %.1f s", current.holder, now - self._current_seen)
            self._takeover = True
            self._current = None
        self.term_seen += 1
        self._mine = Lease(
            self.holder, self.term_seen, period_s=config.period_s, expiry_s=config.expiry_s
        )
        self.role = Role.CANDIDATE
        self._next_renewal = now + config.period_s
        self._claim_acked = None
        self._settle_from = now
        self._renewed = None
        return self._mine

    def acked(self, lease: Lease, sent: float, now: float) -> None:
        """The broker acknowledged ``lease``, which was sent at ``sent``."""
        mine = self._mine
        if mine is None or (lease.holder, lease.term) != (mine.holder, mine.term):
            return
        if self.role is Role.CANDIDATE and self._claim_acked is None:
            self._claim_acked = now
        if self.role is not Role.FOLLOWER:
            self._renewed = max(self._renewed or sent, sent)

    def release(self) -> Lease | None:
        """Give the lease up (a clean stop): the release to publish, if we led."""
        mine, led = self._mine, self.role is not Role.FOLLOWER
        self.role = Role.FOLLOWER
        self._mine = None
        self.config = LeaseConfig(  # never claim again
            self.config.period_s, self.config.expiry_periods, self.config.guard, candidate=False
        )
        if mine is None or not led:
            return None
        return Lease(mine.holder, mine.term, mine.period_s, mine.expiry_s, released=True)

    # -- questions --------------------------------------------------------------------------

    def is_leader(self, now: float) -> bool:
        return self.role is Role.LEADER and self._valid(now) and now >= self._paused_until

    def leader(self, now: float) -> str | None:
        """Who leads, as far as we know (None: nobody, or an election is under way)."""
        if self.role is Role.LEADER:
            return self.holder
        current = self._current
        if current is not None and now - self._current_seen <= self.config.expiry_s:
            return current.holder
        return None

    @property
    def term(self) -> int:
        return self._mine.term if self._mine is not None else 0

    def next_epoch(self, previous: int | None, now: float) -> int:
        """The epoch for a deployment's next change (``previous``: its epoch now).

        Raises:
            LeaseLost: we do not lead, or this term's epochs are spent (the lease is
                then handed on: the next leader starts a new term).
        """
        if not self.is_leader(now) or self._mine is None:
            raise LeaseLost("this coordinator does not hold the lease", self.leader(now))
        term = self._mine.term
        epoch = max((previous or 0) + 1, term * EPOCH_STRIDE)
        if term_of_epoch(epoch) != term:
            self.term_seen = max(self.term_seen, term_of_epoch(epoch))
            self._step_down(now, quiet=False)
            raise LeaseLost(f"term {term} gave out all its epochs: handing the lease on")
        return epoch

    def _valid(self, now: float) -> bool:
        return self._renewed is not None and now < self._renewed + self.config.valid_s

    def _step_down(self, now: float, *, quiet: bool) -> None:
        self.role = Role.FOLLOWER
        self._mine = None
        self._renewed = None
        self._claim_acked = None
        if quiet:  # hear the others before claiming again
            self._quiet_until = now + self.config.expiry_s


def advised_telemetry_period_s(agents: int, budget_per_s: float, floor_s: float) -> float:
    """The telemetry period that keeps ``agents`` within ``budget_per_s`` messages per
    second through the broker, on the 1-2-5 series (the advice changes seldom), never
    below ``floor_s``; 0 (no advice) while the fleet is within the budget at the floor,
    or without a budget."""
    if budget_per_s <= 0 or agents / budget_per_s <= floor_s:
        return 0.0
    needed = agents / budget_per_s
    decade = 10.0 ** math.floor(math.log10(needed))
    step = next(m for m in (1.0, 2.0, 5.0, 10.0) if m * decade >= needed * (1 - 1e-9))
    return max(floor_s, step * decade)


def lease_will(holder: str, config: LeaseConfig, namespace: str = DEFAULT_NAMESPACE) -> Will:
    """The will to give a coordinator's connection: the release of its lease, not retained
    (the retained lease keeps the term reached)."""
    release = Lease(holder, 0, config.period_s, config.expiry_s, released=True)
    return Will(LEASE.name(namespace), encode(release), qos=LEASE.qos, retain=False)


class LeaseKeeper:
    """Runs a :class:`LeaseState` over a transport: a thread claims and renews.

    ``on_change(leading)`` is called (on that thread) when this coordinator starts or
    stops leading.
    """

    def __init__(
        self,
        transport: Transport,
        config: LeaseConfig = LeaseConfig(),
        namespace: str = DEFAULT_NAMESPACE,
        *,
        on_change: Callable[[bool], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.transport = transport
        self.config = config
        self._ns = namespace
        self._clock = clock
        self._lock = threading.Lock()
        self._state = LeaseState(transport.client_id, config, clock())
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._on_change = on_change
        self._leading = False

    def start(self) -> None:
        """Subscribe and start the thread (after the transport is started)."""
        self.transport.add_connection_listener(self._on_connection)
        self.transport.subscribe(LEASE.filter(self._ns), self._on_message, qos=LEASE.qos)
        with self._lock:
            self._state.on_connection(True, self._clock())
        self._thread = threading.Thread(target=self._run, name="coordinator-lease", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Release the lease (if held) and stop the thread; the transport stays open."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        with self._lock:
            release = self._state.release()
        if release is not None and self.transport.connected:
            try:
                LEASE.publish(self.transport, release, self._ns).wait(2.0)
            except TransportError as error:
                log.info("could not release the lease: %s", error)
        self._changed()

    # -- questions (any thread) ---------------------------------------------------------------

    def is_leader(self) -> bool:
        with self._lock:
            return self._state.is_leader(self._clock())

    def leader(self) -> str | None:
        with self._lock:
            return self._state.leader(self._clock())

    @property
    def term(self) -> int:
        with self._lock:
            return self._state.term

    def next_epoch(self, previous: int | None) -> int:
        with self._lock:
            return self._state.next_epoch(previous, self._clock())

    def observe_epoch(self, epoch: int) -> None:
        with self._lock:
            self._state.observe_epoch(epoch)

    def advise_telemetry(self, period_s: float) -> None:
        """The telemetry period the renewals advise the agents (0: none)."""
        with self._lock:
            self._state.telemetry_period_s = period_s

    def wait_for_leader(self, timeout_s: float) -> str | None:
        """Who leads, waiting up to ``timeout_s`` for an election to end."""
        deadline = time.monotonic() + timeout_s
        while True:
            leader = self.leader()
            if leader is not None and (leader != self.transport.client_id or self.is_leader()):
                return leader
            if time.monotonic() >= deadline or self._stop.is_set():
                return None
            time.sleep(min(0.05, self.config.period_s / 4))

    # -- inbound ------------------------------------------------------------------------------

    def _on_message(self, message: InboundMessage) -> None:
        if not message.payload:
            return
        try:
            lease = LEASE.decode(message.payload, topic=message.topic)
        except DecodeError as error:
            log.warning("ignored a bad lease: %s", error)
            return
        with self._lock:
            self._state.on_lease(lease, self._clock())
        self._wake.set()

    def _on_connection(self, up: bool) -> None:
        with self._lock:
            self._state.on_connection(up, self._clock())
        self._wake.set()

    # -- the thread ---------------------------------------------------------------------------

    def _run(self) -> None:
        tick = self.config.period_s / 4
        while not self._stop.is_set():
            with self._lock:
                lease = self._state.due(self._clock())
            if lease is not None:
                self._publish(lease)
            self._changed()
            self._wake.wait(tick)
            self._wake.clear()

    def _publish(self, lease: Lease) -> None:
        sent = self._clock()
        try:
            LEASE.publish(self.transport, lease, self._ns).wait(self.config.valid_s)
        except TransportError as error:
            log.info("lease publication failed: %s", error)
            return
        with self._lock:
            self._state.acked(lease, sent, self._clock())

    def _changed(self) -> None:
        leading = self.is_leader()
        if leading != self._leading:
            self._leading = leading
            if self._on_change is not None:
                self._on_change(leading)
