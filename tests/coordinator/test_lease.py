"""The leader lease's state machine, driven from tables and a simulated broker.

Time is a parameter (seconds on the coordinator's own clock); the default lease renews
every 1 s, expires after 3 s of silence, and a leader acts for 2.4 s on one
acknowledged renewal.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field
from typing import Any

import pytest

from splitmq.coordinator.lease import (
    EPOCH_STRIDE,
    LeaseConfig,
    LeaseLost,
    LeaseState,
    Role,
    advised_telemetry_period_s,
    beats,
    term_of_epoch,
)
from splitmq.errors import ConfigError
from splitmq.wire import Lease

CONFIG = LeaseConfig(period_s=1.0)


def lease(holder: str, term: int, *, released: bool = False) -> Lease:
    return Lease(holder, term, CONFIG.period_s, CONFIG.expiry_s, released=released)


@pytest.mark.parametrize(
    ("a", "b", "a_wins"),
    [
        (lease("b", 2), lease("a", 1), True),  # the higher term
        (lease("a", 1), lease("b", 2), False),
        (lease("a", 3), lease("b", 3), True),  # then the smaller holder
        (lease("ab", 3), lease("abc", 3), True),  # a prefix is smaller
        (lease("b", 3), lease("a", 3), False),
        (lease("a", 3), lease("a", 3), False),  # never over itself
    ],
)
def test_claims_are_totally_ordered(a: Lease, b: Lease, a_wins: bool) -> None:
    assert beats(a, b) is a_wins
    if a != b:
        assert beats(b, a) is not a_wins


# A step: (time, event, argument); events:
#   "due"      -> call due(t); the argument is the term of the lease it must return
#                 (None: nothing to publish); what it returns is acknowledged at once
#   "due-lost" -> call due(t); what it returns is never acknowledged (cut off)
#   "lease"    -> on_lease(argument, t)
#   "down"/"up"-> the connection drops / comes back
#   "leader?"  -> is_leader(t) must equal the argument
#   "role?"    -> the role must equal the argument
Step = tuple[float, str, object]

SCENARIOS: dict[str, list[Step]] = {
    "alone: claims after hearing the retained lease, leads after settling": [
        (0.5, "due", None),  # still listening for the retained lease
        (1.0, "due", 1),
        (1.5, "leader?", False),
        (1.9, "due", None),
        (2.0, "due", 1),  # leading: the first renewal
        (2.0, "leader?", True),
        (2.5, "due", None),
        (3.0, "due", 1),
    ],
    "a live holder: wait for its expiry, then take over with a long settle": [
        (0.2, "lease", lease("other", 4)),
        (1.0, "due", None),
        (3.1, "due", None),
        (3.3, "due", 5),  # 3 s of silence: claim the next term
        (3.8, "due", None),
        (4.3, "due", 5),  # taking over: settle as long as it might still act (2.4 s),
        (5.3, "due", 5),  # renewing the claim meanwhile
        (5.6, "leader?", False),
        (5.8, "due", None),
        (5.8, "leader?", True),
        (6.3, "due", 5),
    ],
    "a holder that keeps renewing is never challenged": [
        (0.2, "lease", lease("other", 4)),
        (2.0, "lease", lease("other", 4)),
        (4.0, "lease", lease("other", 4)),
        (4.9, "due", None),
        (6.0, "lease", lease("other", 4)),
        (8.9, "due", None),
        (8.9, "role?", Role.FOLLOWER),
    ],
    "the holder's will: claim at once": [
        (0.2, "lease", lease("other", 4)),
        (1.5, "lease", lease("other", 0, released=True)),
        (1.5, "due", 5),
        (2.5, "due", 5),
        (3.5, "due", 5),
        (3.8, "leader?", False),  # it may not know yet that it lost the broker
        (4.0, "due", None),
        (4.0, "leader?", True),
    ],
    "a clean release keeps the term and needs no long settle": [
        (0.2, "lease", lease("other", 4, released=True)),
        (1.0, "due", 5),
        (2.0, "due", 5),
        (2.0, "leader?", True),
    ],
    "the will of a coordinator that did not hold the lease changes nothing": [
        (0.2, "lease", lease("other", 4)),
        (1.0, "lease", lease("third", 0, released=True)),
        (1.5, "due", None),
        (2.0, "lease", lease("other", 4)),
        (4.5, "due", None),
    ],
    "two candidates: the smaller holder wins, the other withdraws": [
        (1.0, "due", 1),
        (1.1, "lease", lease("aaa", 1)),  # "aaa" < "me"
        (1.1, "role?", Role.FOLLOWER),
        (2.5, "due", None),
        (3.0, "leader?", False),
    ],
    "two candidates: we win; the loser's last claim delays our settling": [
        (1.0, "due", 1),
        (1.4, "lease", lease("zzz", 1)),
        (2.0, "due", 1),  # settles from 1.4 now, renewing its claim
        (2.3, "leader?", False),
        (2.4, "due", None),
        (2.4, "leader?", True),
    ],
    "a leader cut off stops before anyone may take over": [
        (1.0, "due", 1),
        (2.0, "due", 1),  # renewal sent at 2.0, acknowledged
        (3.0, "due-lost", 1),
        (4.0, "due-lost", 1),
        (4.3, "leader?", True),
        (4.4, "leader?", False),  # 2.0 + 2.4: the others take over at 2.0 + 3.0 at best
        (4.5, "due", None),
        (4.5, "role?", Role.FOLLOWER),
    ],
    "losing the connection stops it at once, and it listens before claiming again": [
        (1.0, "due", 1),
        (2.0, "due", 1),
        (2.1, "down", None),
        (2.1, "leader?", False),
        (2.5, "due", None),  # cut off: nothing to publish
        (3.0, "up", None),
        (4.0, "due", None),
        (5.0, "due", None),
        (5.2, "due", 2),  # 2.1 + 3.0 later, nobody else led: claim a new term
    ],
    "a leader that hears a better claim steps down at once": [
        (1.0, "due", 1),
        (2.0, "due", 1),
        (2.5, "lease", lease("other", 2)),
        (2.5, "leader?", False),
        (2.5, "role?", Role.FOLLOWER),
    ],
    "a leader that hears a lesser holder pauses while that one may still act": [
        (1.0, "due", 1),
        (2.0, "due", 1),
        (2.5, "lease", lease("zzz", 1)),
        (2.5, "leader?", False),
        (2.5, "due", 1),  # and tells it at once
        (3.5, "due", 1),
        (4.5, "due", 1),
        (4.8, "leader?", False),
        (5.0, "leader?", True),
    ],
}


@pytest.mark.parametrize("steps", SCENARIOS.values(), ids=SCENARIOS.keys())
def test_lease_scenarios(steps: list[Step]) -> None:
    state = LeaseState("me", CONFIG, now=0.0)
    for now, event, argument in steps:
        where = f"at {now} s ({event} {argument})"
        if event in ("due", "due-lost"):
            published = state.due(now)
            assert (published.term if published else None) == argument, where
            if published is not None:
                assert published.holder == "me" and not published.released
                if event == "due":
                    state.acked(published, now, now)
        elif event == "lease":
            assert isinstance(argument, Lease)
            state.on_lease(argument, now)
        elif event in ("down", "up"):
            state.on_connection(event == "up", now)
        elif event == "leader?":
            assert state.is_leader(now) is argument, where
        elif event == "role?":
            assert state.role is argument, where


def test_the_next_term_is_above_every_epoch_seen() -> None:
    state = LeaseState("me", CONFIG, now=0.0)
    state.observe_epoch(7 * EPOCH_STRIDE + 12)  # a leader of term 7 published it
    claim = state.due(1.0)
    assert claim is not None and claim.term == 8


def test_epochs_are_fenced_by_term() -> None:
    state = LeaseState("me", CONFIG, now=0.0)
    with pytest.raises(LeaseLost):
        state.next_epoch(None, 0.0)  # a follower gives out no epoch
    state.on_lease(lease("other", 2, released=True), 0.1)
    claim = state.due(1.0)
    assert claim is not None and claim.term == 3
    state.acked(claim, 1.0, 1.0)
    assert state.due(2.0) == claim and state.is_leader(2.0)
    state.acked(claim, 2.0, 2.0)
    assert state.next_epoch(None, 2.0) == 3 * EPOCH_STRIDE
    assert state.next_epoch(5, 2.0) == 3 * EPOCH_STRIDE  # from before the lease
    assert state.next_epoch(3 * EPOCH_STRIDE + 4, 2.0) == 3 * EPOCH_STRIDE + 5
    assert term_of_epoch(3 * EPOCH_STRIDE + 4) == 3
    with pytest.raises(LeaseLost, match="gave out all its epochs"):
        state.next_epoch(4 * EPOCH_STRIDE - 1, 2.0)
    assert state.role is Role.FOLLOWER
    assert state.term_seen == 4  # the next claim starts term 5


def test_a_clean_stop_releases_with_the_term() -> None:
    state = LeaseState("me", CONFIG, now=0.0)
    claim = state.due(1.0)
    assert claim is not None
    state.acked(claim, 1.0, 1.0)
    state.due(2.0)
    release = state.release()
    assert release == Lease("me", 1, 1.0, 3.0, released=True)
    assert state.due(10.0) is None and not state.is_leader(10.0)


def test_a_follower_releases_nothing() -> None:
    assert LeaseState("me", CONFIG, now=0.0).release() is None


def test_a_coordinator_that_may_not_lead_never_claims() -> None:
    state = LeaseState("me", LeaseConfig(candidate=False), now=0.0)
    assert all(state.due(t / 10) is None for t in range(100))


@pytest.mark.parametrize(
    "options", [{"period_s": 0.0}, {"expiry_periods": 1.5}, {"guard": 1.0}, {"guard": 0.0}]
)
def test_bad_settings_are_refused(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="lease"):
        LeaseConfig(**options)


@pytest.mark.parametrize(
    ("agents", "budget_per_s", "floor_s", "advice_s"),
    [
        (10, 1000.0, 1.0, 0.0),  # within the budget: no advice
        (1000, 1000.0, 1.0, 0.0),
        (1001, 1000.0, 1.0, 2.0),  # the 1-2-5 series, rounded up
        (2500, 1000.0, 1.0, 5.0),
        (10_000, 1000.0, 1.0, 10.0),
        (10_001, 1000.0, 1.0, 20.0),
        (3, 10.0, 0.1, 0.5),
        (3, 10.0, 1.0, 0.0),
        (10_000, 0.0, 1.0, 0.0),  # no budget
    ],
)
def test_the_telemetry_advice_keeps_the_fleet_within_its_budget(
    agents: int, budget_per_s: float, floor_s: float, advice_s: float
) -> None:
    assert advised_telemetry_period_s(agents, budget_per_s, floor_s) == advice_s
    if advice_s:
        assert agents / advice_s <= budget_per_s


# -- a simulated broker: several coordinators, random delays, pauses and partitions --------


@dataclass(order=True)
class _Event:
    at: float
    seq: int
    kind: str = field(compare=False)
    node: int = field(compare=False)
    lease: Lease | None = field(compare=False, default=None)
    sent: float = field(compare=False, default=0.0)
    epoch: int = field(compare=False, default=0)


class _Simulation:
    """Coordinators around one broker; the broker delivers to every connected node in
    the order it received, each link adding a random delay up to ``max_delay_s``."""

    def __init__(self, nodes: int, seed: int, max_delay_s: float = 0.3):
        self.rng = random.Random(seed)
        self.max_delay_s = max_delay_s
        self.states = [LeaseState(f"c{i}", CONFIG, now=0.0) for i in range(nodes)]
        self.events: list[_Event] = []
        self.seq = 0
        self.cut: set[int] = set()  # nodes partitioned from the broker (they do not know)
        self.paused: dict[int, float] = {}  # node -> when it runs again
        self.leaders_at: list[tuple[float, list[int]]] = []
        self.epochs: list[tuple[int, int]] = []  # (epoch, node) as published
        self.latest_epoch = [0] * nodes  # as each node knows it
        self.retained_lease: Lease | None = None
        self.retained_epoch = 0

    def push(self, at: float, kind: str, node: int, **extra: object) -> None:
        self.seq += 1
        heapq.heappush(self.events, _Event(at, self.seq, kind, node, **extra))  # type: ignore[arg-type]

    def delay(self) -> float:
        return self.rng.uniform(0.001, self.max_delay_s)

    def run(self, until_s: float, step_s: float = 0.05) -> None:
        now = 0.0
        while now < until_s:
            now += step_s
            self._chaos(now)
            while self.events and self.events[0].at <= now:
                event = heapq.heappop(self.events)
                if event.node in self.paused and event.kind != "broker":
                    event.at = self.paused[event.node]
                    heapq.heappush(self.events, event)
                    continue
                self._handle(event, event.at)
            for node, state in enumerate(self.states):
                if node in self.paused:
                    continue
                published = state.due(now)
                if published is not None and node not in self.cut:
                    self.push(now + self.delay(), "broker", node, lease=published, sent=now)
                if state.is_leader(now) and self.rng.random() < 0.05:
                    epoch = state.next_epoch(self.latest_epoch[node], now)
                    self.latest_epoch[node] = epoch
                    self.epochs.append((epoch, node))
                    if node not in self.cut:
                        self.push(now + self.delay(), "broker-epoch", node, epoch=epoch)
            leaders = [n for n, s in enumerate(self.states) if s.is_leader(now)]
            self.leaders_at.append((now, leaders))

    def _chaos(self, now: float) -> None:
        for node in list(self.paused):
            if self.paused[node] <= now:
                del self.paused[node]
        roll = self.rng.random()
        node = self.rng.randrange(len(self.states))
        if roll < 0.004 and node not in self.paused:
            self.paused[node] = now + self.rng.uniform(0.5, 6.0)  # SIGSTOP, later SIGCONT
        elif roll < 0.008:
            if node in self.cut:
                self.cut.discard(node)
                self.push(now, "up", node)
            else:
                self.cut.add(node)
                if self.rng.random() < 0.5:  # sometimes the node notices at once
                    self.push(now, "down", node)
                if self.rng.random() < 0.5:  # sometimes the broker publishes its will
                    will = Lease(f"c{node}", 0, 1.0, 3.0, released=True)
                    self.push(now + self.delay(), "broker", node, lease=will, sent=now)

    def _handle(self, event: _Event, now: float) -> None:
        if event.kind == "broker":  # the broker got a lease: to everyone, an ack to its sender
            assert event.lease is not None
            if event.node in self.cut and not event.lease.released:
                return
            if not event.lease.released:  # a will is not retained
                self.retained_lease = event.lease
            for other in range(len(self.states)):
                if other not in self.cut:
                    self.push(now + self.delay(), "deliver", other, lease=event.lease)
            if not event.lease.released:
                self.push(now + self.delay(), "ack", event.node, lease=event.lease, sent=event.sent)
        elif event.kind == "broker-epoch":
            if event.node not in self.cut:
                self.retained_epoch = event.epoch
                for other in range(len(self.states)):
                    if other not in self.cut:
                        self.push(now + self.delay(), "epoch", other, epoch=event.epoch)
        elif event.node in self.cut and event.kind in ("deliver", "ack", "epoch"):
            return  # lost on the cut link
        elif event.kind == "deliver":
            assert event.lease is not None
            self.states[event.node].on_lease(event.lease, now)
        elif event.kind == "ack":
            assert event.lease is not None
            self.states[event.node].acked(event.lease, event.sent, now)
        elif event.kind == "epoch":
            self.states[event.node].observe_epoch(event.epoch)
            known = self.latest_epoch[event.node]
            self.latest_epoch[event.node] = max(known, event.epoch)
        elif event.kind in ("down", "up"):
            self.states[event.node].on_connection(event.kind == "up", now)
            if event.kind == "up":  # subscribing again: the retained messages
                if self.retained_lease is not None:
                    self.push(now + self.delay(), "deliver", event.node, lease=self.retained_lease)
                self.push(now + self.delay(), "epoch", event.node, epoch=self.retained_epoch)


@pytest.mark.parametrize("seed", range(12))
def test_never_two_leaders_nor_one_epoch_twice(seed: int) -> None:
    simulation = _Simulation(nodes=3, seed=seed)
    simulation.run(until_s=240.0)
    overlaps = [(t, leaders) for t, leaders in simulation.leaders_at if len(leaders) > 1]
    assert overlaps == [], overlaps[:5]
    published = [epoch for epoch, _node in simulation.epochs]
    assert len(published) == len(set(published)), "an epoch was given out twice"
    led = sum(1 for _t, leaders in simulation.leaders_at if leaders)
    assert led > len(simulation.leaders_at) / 3, "the fleet was hardly ever led"
