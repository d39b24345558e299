"""Where to send a request next: route fallbacks, retries and per-attempt timeouts. Pure.

A plan's route lists, per stage, agents in the order to try them. Agents forward to
``route[s][0]`` only, so "trying a fallback" means sending a new attempt whose route
has another agent first at the stage that failed. What a request learns over its
attempts is its :class:`Knowledge`; :func:`choose_route` turns a plan's route and that
knowledge into the next route, stage by stage:

1. agents not known to be dead, that never failed at this stage and are not suspects,
   in the plan's order;
2. then suspects of this stage, the one suspected longest ago first;
3. then agents that failed at this stage, the one that failed longest ago first;
4. then dead agents (the client's view of liveness may be stale).

A stage with nothing in 1 and 2 is *spent*: its fallbacks are used up.

Within group 1 the client's own observations count too (:class:`HopTimes`): an agent
whose hop time (transfer in, queueing and compute) is clearly worse than the fastest
observed replica's (:func:`slower`) goes after the others, so a replica that answers,
but slowly, is routed around before it ever times out. Every :data:`PROBE_EVERY`-th
request is a *probe*: its first attempt goes, at each stage, to the replica of group 1
the client knows least of, among those never observed and those routed around
(:func:`by_speed`): how a fast fallback gets noticed, and how a slow agent that
recovered gets its traffic back.

Failures and what they teach (:func:`after_failure` decides the next step):

- an error message names its stage and agent: that pair has *failed*;
- the agent went offline (its will), or the attempt timed out and a first agent of
  the route is now dead (offline status, or telemetry older than a few periods): each
  such first agent has failed at its stage;
- an unexplained timeout: every first agent of the route becomes a *suspect* at its
  stage, and the client asks the coordinator for a fresh plan. Suspects go after the
  other agents, so whether or not the fresh plan changed, each stage with a fallback
  rotates to it: a first rotation moves every stage at once, and a stage returns to a
  suspect only when all its agents are suspects (then the oldest suspect first).

When a stage is spent, or an agent says ``unknown_deployment`` (the plan is stale),
the client asks for a fresh plan, then sends on whatever route :func:`choose_route`
makes of it, even spent (transient errors may pass; ``overloaded``, below, waits
first), until the attempts run out. Errors caused by the input itself are not
retried, and no attempt is sent when the time left is below the plan's predicted
latency. How long an attempt is waited for: :func:`attempt_timeout_s`.

``overloaded`` says an agent is busy, not broken: its queue was full and it did no
work. Such a refusal does not count against the request's attempts; the next attempt
goes at once to a fallback that has not refused the request, but one that goes back to
an agent that has (no fresh fallback is left) waits first (:func:`backoff_s`, doubling
for each refusal), so the agents' queues drain instead of the request's attempts; the
deadline bounds the waits.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from splitmq.client.errors import ATTEMPTS_SPENT, DEADLINE
from splitmq.wire import ErrorCode, Route, TraceEntry

TIMEOUT = "timeout"
"""The outcome of an attempt that did not answer in time."""
OFFLINE = "offline"
"""The outcome of an attempt whose agent went offline (its will) while it was in flight."""
LOST = "lost"
"""The outcome of an attempt the client's broker link went down around: unanswered, and
no agent to blame (the broker keeps no session, so its answer may be gone)."""

NOT_RETRYABLE_AT_INPUT = frozenset({ErrorCode.SHAPE_MISMATCH, ErrorCode.BAD_MESSAGE})
"""Codes that, at stage 0, blame the client's input: another agent would say the same."""
REPLAN_CODES = frozenset({ErrorCode.UNKNOWN_DEPLOYMENT})
"""Codes that mean the plan is stale: ask for a fresh one at once."""
BUSY_CODES = frozenset({ErrorCode.OVERLOADED})
"""Codes that mean the agent is busy: an attempt sent back to it waits (:func:`backoff_s`)."""


def retryable(code: str, stage: int | None) -> bool:
    """Whether an attempt that failed with ``code`` at ``stage`` is worth another attempt.

    ``shape_mismatch`` and ``bad_message`` at stage 0 judge the input the client sent;
    at a later stage they judge what an agent forwarded, and another route may do.
    """
    return not (stage == 0 and code in NOT_RETRYABLE_AT_INPUT)


def firsts(route: Route) -> tuple[str, ...]:
    """Per stage, the agent an attempt on ``route`` is sent to."""
    return tuple([agents[0] if agents else "" for agents in route])  # a list: one call


@dataclass(frozen=True)
class Knowledge:
    """What one request has learned about the agents of its route.

    Attributes:
        failed: ``(stage, agent)`` pairs that failed, oldest first.
        suspects: ``(stage, agent)`` pairs first on a route that timed out unexplained,
            oldest first.
    """

    failed: tuple[tuple[int, str], ...] = ()
    suspects: tuple[tuple[int, str], ...] = ()

    def fail(self, stage: int, agent_id: str) -> Knowledge:
        pair = (stage, agent_id)
        return Knowledge((*(p for p in self.failed if p != pair), pair), self.suspects)

    def suspect(self, route: Route) -> Knowledge:
        pairs = [(s, a) for s, a in enumerate(firsts(route)) if a]
        kept = tuple(p for p in self.suspects if p not in pairs)
        return Knowledge(self.failed, (*kept, *pairs))


NOTHING_KNOWN = Knowledge()
"""A new request's knowledge (immutable: shared, not made per request)."""


def choose_route(
    route: Route,
    knowledge: Knowledge,
    dead: Collection[str] = (),
    hops: Hops | None = None,
    *,
    probe: bool = False,
) -> tuple[Route, tuple[int, ...]]:
    """The route to try next, and the stages that are spent (see the module docstring).

    ``hops``: the client's observations of the plan's deployment (:meth:`HopTimes.of`);
    ``probe``: the attempt is a probe (:func:`by_speed`).
    """
    if not knowledge.failed and not knowledge.suspects and not dead:  # a first attempt
        orders = [
            by_speed(stage, agents, hops or {}, probe=probe) for stage, agents in enumerate(route)
        ]
        spent_now = tuple([stage for stage, order in enumerate(orders) if not order])
        return tuple([tuple(dict.fromkeys(order)) for order in orders]), spent_now
    chosen: list[tuple[str, ...]] = []
    spent: list[int] = []
    for stage, agents in enumerate(route):
        failed = [a for s, a in knowledge.failed if s == stage and a in agents]
        suspects = [a for s, a in knowledge.suspects if s == stage and a in agents]
        alive = [a for a in agents if a not in dead]
        untried = [a for a in alive if a not in failed and a not in suspects]
        fresh = by_speed(stage, untried, hops or {}, probe=probe)
        order = [
            *fresh,
            *(a for a in suspects if a in alive and a not in failed),
            *(a for a in failed if a in alive),
            *(a for a in agents if a in dead),
        ]
        if not any(a in alive and a not in failed for a in order):
            spent.append(stage)
        chosen.append(tuple(dict.fromkeys(order)))
    return tuple(chosen), tuple(spent)


class Failure(NamedTuple):
    """How one attempt failed (a named tuple, as :class:`RetryBudget`: made in C).

    Attributes:
        outcome: an agent's error code, :data:`TIMEOUT`, :data:`OFFLINE`, or the
            client's own (``send_failed``).
        message: in words.
        stage, agent_id: where it failed, when known (an error message, a will).
        final: no other attempt can do better (an input too large for the broker).
    """

    outcome: str
    message: str = ""
    stage: int | None = None
    agent_id: str | None = None
    final: bool = False


@dataclass(frozen=True)
class Retry:
    """Send the next attempt on ``route``."""

    route: Route


@dataclass(frozen=True)
class Replan:
    """Ask the coordinator for a fresh plan first (fallbacks spent, or nothing known)."""

    reason: str


@dataclass(frozen=True)
class GiveUp:
    """Fail the request: ``code`` and ``reason`` go into the final error."""

    code: str
    reason: str


class RetryBudget(NamedTuple):
    """How many attempts a request may still make, and the time it has left.

    Attributes:
        attempts_made: attempts sent so far (the failed one included).
        max_attempts: the limit (``ClientConfig.max_attempts``).
        remaining_s: time to the deadline.
        predicted_latency_ms: the plan's prediction for one attempt.
    """

    attempts_made: int
    max_attempts: int
    remaining_s: float
    predicted_latency_ms: float = 0.0


@dataclass(frozen=True)
class Decision:
    """What :func:`after_failure` decided, and the knowledge to keep."""

    step: Retry | Replan | GiveUp
    knowledge: Knowledge = field(default_factory=Knowledge)


def after_failure(
    route: Route,
    plan_route: Route,
    knowledge: Knowledge,
    failure: Failure,
    *,
    budget: RetryBudget,
    dead: Collection[str] = (),
    hops: Hops | None = None,
) -> Decision:
    """The next step after an attempt on ``route`` failed; ``plan_route`` is the plan's.

    Give up when the error blames the input, when the attempts are spent, or when the
    time left is below the plan's predicted latency; otherwise retry on a fallback or
    ask for a fresh plan (see the module docstring).
    """
    if failure.final or not retryable(failure.outcome, failure.stage):
        return Decision(GiveUp(failure.outcome, failure.message), knowledge)
    if budget.attempts_made >= budget.max_attempts:
        return Decision(
            GiveUp(ATTEMPTS_SPENT, f"all {budget.max_attempts} attempts failed"), knowledge
        )
    if not deadline_allows(budget.remaining_s, budget.predicted_latency_ms):
        return Decision(GiveUp(DEADLINE, too_late(budget)), knowledge)
    if failure.stage is not None and failure.agent_id is not None:
        knowledge = knowledge.fail(failure.stage, failure.agent_id)
    elif failure.outcome == TIMEOUT:
        culprits = [(s, a) for s, a in enumerate(firsts(route)) if a in dead]
        if not culprits:
            return Decision(
                Replan("an attempt timed out and no agent of its route is known dead"),
                knowledge.suspect(route),
            )
        for stage, agent_id in culprits:
            knowledge = knowledge.fail(stage, agent_id)
    if failure.outcome in REPLAN_CODES:
        return Decision(Replan(f"{failure.outcome}: the plan is stale"), knowledge)
    next_route, spent = choose_route(plan_route, knowledge, dead, hops)
    if spent:
        stages = ", ".join(str(s) for s in spent)
        return Decision(Replan(f"the fallbacks of stage {stages} are spent"), knowledge)
    return Decision(Retry(next_route), knowledge)


def deadline_allows(remaining_s: float, predicted_latency_ms: float) -> bool:
    """Whether an attempt predicted to take ``predicted_latency_ms`` can finish in time."""
    return remaining_s > 0 and remaining_s * 1000.0 >= predicted_latency_ms


def too_late(budget: RetryBudget) -> str:
    if budget.remaining_s <= 0:
        return "the deadline passed"
    return (
        f"{budget.remaining_s * 1000.0:.0f} ms remain before the deadline, below the "
        f"plan's predicted latency of {budget.predicted_latency_ms:.0f} ms"
    )


def attempt_timeout_s(
    predicted_latency_ms: float,
    remaining_s: float,
    *,
    observed_ms: float | None = None,
    last: bool,
    factor: float,
    margin_s: float,
    minimum_s: float,
) -> float:
    """How long to wait for one attempt's answer before trying another route.

    ``min(remaining, max(minimum_s, factor * expected + margin_s))`` where ``expected``
    is the larger of the plan's predicted latency and ``observed_ms``, the smoothed
    latency of recent answers on the same deployment (:func:`smoothed`): the plan knows
    nothing of queues, and a client keeping many requests in flight builds some. The
    last attempt a request may make waits for whatever remains of the deadline.
    """
    if last:
        return max(0.0, remaining_s)
    expected_ms = max(predicted_latency_ms, observed_ms or 0.0)
    wait = max(minimum_s, factor * expected_ms / 1000.0 + margin_s)
    return max(0.0, min(remaining_s, wait))


def backoff_s(busy_answers: int, expected_ms: float, *, minimum_s: float, jitter: float) -> float:
    """How long to wait before sending an attempt back to an agent that said it is busy.

    The longer of ``minimum_s`` and the expected latency (the plan's, or the one observed
    lately when queues make it longer: about what a queue needs to drain), doubled for
    each busy answer the request had before its latest, times ``jitter`` (around 1), so
    that requests turned away together do not come back together.
    """
    base_s = max(minimum_s, expected_ms / 1000.0)
    return base_s * 2.0 ** max(0, busy_answers - 1) * jitter


SMOOTHING = 0.2
"""Weight of the newest sample in :func:`smoothed`."""


def smoothed(previous: float | None, sample: float, weight: float = SMOOTHING) -> float:
    """An exponentially weighted moving average: ``previous`` moved ``weight`` toward ``sample``."""
    return sample if previous is None else previous + weight * (sample - previous)


class Liveness:
    """The client's view of which agents are alive, from statuses and telemetry.

    An agent is dead when its last status says ``offline`` (its will fired, or it
    stopped), or when its telemetry is older than ``stale_periods`` of its own period
    (at least ``min_stale_s``). Agents never heard of are not dead: the coordinator
    knows them. Times are ``time.monotonic()`` seconds.
    """

    def __init__(self, stale_periods: float = 3.0, min_stale_s: float = 1.0):
        self.stale_periods = stale_periods
        self.min_stale_s = min_stale_s
        self._offline: set[str] = set()
        self._telemetry: dict[str, tuple[float, float]] = {}

    def status(self, agent_id: str, online: bool) -> None:
        if online:
            self._offline.discard(agent_id)
        else:
            self._offline.add(agent_id)

    def telemetry(self, agent_id: str, seen_s: float, period_s: float) -> None:
        """A telemetry message of ``agent_id`` taken at ``seen_s``, sent every ``period_s``."""
        previous = self._telemetry.get(agent_id)
        if previous is None or seen_s >= previous[0]:
            self._telemetry[agent_id] = (seen_s, period_s)

    def dead(self, now_s: float) -> frozenset[str]:
        stale = {
            agent_id
            for agent_id, (seen_s, period_s) in self._telemetry.items()
            if now_s - seen_s > max(self.min_stale_s, self.stale_periods * period_s)
        }
        return frozenset(self._offline | stale)


SLOW_FACTOR = 2.0
"""An agent is routed around when its hop time is above this many times the fastest's..."""
SLOW_MARGIN_MS = 20.0
"""...and above the fastest's by this much: a few ms of noise never reroute."""
PROBE_EVERY = 20
"""One request in this many is a probe (:func:`by_speed`)."""
HALF_LIFE_S = 1.0
"""How fast an observation ages: a sample after this long without one weighs half."""


class Hop(NamedTuple):
    """A smoothed time (ms) and when its latest sample came (``time.monotonic()``).

    A named tuple: every result makes one per stage, and every request's route one per
    agent seen (:meth:`HopTimes.of`)."""

    ms: float
    at_s: float

    def updated(self, sample_ms: float, now_s: float, half_life_s: float = HALF_LIFE_S) -> Hop:
        """Moved toward ``sample_ms``: by :data:`SMOOTHING` while samples come often, by
        more the older this one is (an agent probed seldom is judged on its latest probe)."""
        age_s = max(0.0, now_s - self.at_s)
        weight = max(SMOOTHING, 1.0 - 0.5 ** (age_s / half_life_s))
        return make_hop(smoothed(self.ms, sample_ms, weight), now_s)


_TUPLE_NEW = tuple.__new__


def make_hop(ms: float, at_s: float) -> Hop:
    """``Hop(ms, at_s)`` made without the named tuple's generated ``__new__``, which is a
    Python function even where this module is compiled."""
    return _TUPLE_NEW(Hop, (ms, at_s))


NO_TRANSFER = Hop(0.0, 0.0)
"""An agent's transfer before any was seen."""

Hops = Mapping[tuple[int, str], Hop]
"""Hop times of one deployment by ``(stage, agent)`` (:meth:`HopTimes.of`)."""


class Sample(NamedTuple):
    """How long one agent held up one attempt at one stage (ms, see :func:`samples`)."""

    stage: int
    agent_id: str
    transfer_ms: float | None
    work_ms: float


def samples(trace: Sequence[TraceEntry], sent_ms: float, received_ms: float) -> list[Sample]:
    """Per trace entry of an attempt sent at ``sent_ms`` and answered at ``received_ms``:

    - ``transfer_ms``: from the previous stage's finish (the client's send, for the
      first stage) to the agent's receipt; ``None`` when the previous stage ran on the
      same agent (handed over in memory). A stalled or paused process, or a slow link,
      shows here: it reads what it is sent late, while its own times stay short.
    - ``work_ms``: its queueing and compute, from its receipt to its finish; for the
      last stage, on to the client's receipt of the result (its transfer out).

    What starts on one clock and ends on another (a transfer, the last stage's way back)
    is clamped between 0 (or the agent's own time) and the attempt's latency: a clock
    skew between devices biases it, within those bounds.
    """
    total_ms = received_ms - sent_ms
    found: list[Sample] = []
    previous_agent, previous_ms = "", sent_ms
    for position, entry in enumerate(trace):
        transfer_ms = None
        if entry.agent_id != previous_agent:
            transfer_ms = min(total_ms, max(0.0, entry.received_ms - previous_ms))
        work_ms = entry.finished_ms - entry.received_ms
        if position == len(trace) - 1:
            work_ms = max(work_ms, min(total_ms, received_ms - entry.received_ms))
        found.append(Sample(entry.stage, entry.agent_id, transfer_ms, work_ms))
        previous_agent, previous_ms = entry.agent_id, entry.finished_ms
    return found


def slower(ms: float, best_ms: float) -> bool:
    """Whether a hop time of ``ms`` is clearly worse than ``best_ms``: worth routing around."""
    return ms > SLOW_FACTOR * best_ms and ms > best_ms + SLOW_MARGIN_MS


def by_speed(stage: int, agents: Sequence[str], hops: Hops, *, probe: bool = False) -> list[str]:
    """A stage's live, untried ``agents`` (in the plan's order) in the order to try them.

    The plan's order, except that an agent :func:`slower` than the fastest observed one
    goes last; agents never observed keep their place. A probe puts first, instead, the
    one observed longest ago (never: the first in the plan's order) of those never
    observed and those routed around: a fallback the client knows nothing of gets
    measured, and a slow agent keeps being measured so it comes back once it recovers.
    """
    seen = {a: hops[(stage, a)] for a in agents if (stage, a) in hops}
    best_ms = min((hop.ms for hop in seen.values()), default=0.0)
    slow = {a for a, hop in seen.items() if slower(hop.ms, best_ms)}
    if not slow and not probe:  # the plan's order as it is
        return list(agents)
    order = [*(a for a in agents if a not in slow), *(a for a in agents if a in slow)]
    unsure = [a for a in agents if a not in seen or a in slow]
    if probe and unsure:
        first = min(unsure, key=lambda a: seen[a].at_s if a in seen else float("-inf"))
        order = [first, *(a for a in order if a != first)]
    return order


class HopTimes:
    """What the client observed of the agents, from the traces of results.

    An agent's hop time at a stage is its smoothed work there (per deployment, stage
    and agent: the work differs by stage) plus its smoothed transfer (per agent: how
    late it reads what it is sent is the agent's, whatever the stage). So an agent seen
    stalling at one stage is routed around at another too, even where it was only seen
    receiving from itself. A transfer out is the next agent's transfer in: counting it
    at both ends would make a slow agent's neighbours look slow too. Only touched under
    the client's lock.
    """

    def __init__(self, half_life_s: float = HALF_LIFE_S):
        self.half_life_s = half_life_s
        self._work: dict[str, dict[tuple[int, str], Hop]] = {}
        self._transfer: dict[str, Hop] = {}

    def observe(
        self,
        deployment: str,
        trace: Sequence[TraceEntry],
        sent_ms: float,
        received_ms: float,
        now_s: float,
    ) -> None:
        """A result of ``deployment``, its attempt sent at ``sent_ms``, came at ``received_ms``."""
        work = self._work.setdefault(deployment, {})
        for sample in samples(trace, sent_ms, received_ms):
            key = (sample.stage, sample.agent_id)
            work[key] = self._updated(work.get(key), sample.work_ms, now_s)
            if sample.transfer_ms is not None:
                transfer = self._transfer.get(sample.agent_id)
                self._transfer[sample.agent_id] = self._updated(transfer, sample.transfer_ms, now_s)

    def of(self, deployment: str) -> Hops:
        """The hop times of ``deployment``'s agents, by ``(stage, agent)``."""
        return {
            (stage, agent_id): make_hop(
                hop.ms + self._transfer.get(agent_id, NO_TRANSFER).ms, hop.at_s
            )
            for (stage, agent_id), hop in self._work.get(deployment, {}).items()
        }

    def _updated(self, previous: Hop | None, sample_ms: float, now_s: float) -> Hop:
        if previous is None:
            return make_hop(sample_ms, now_s)
        return previous.updated(sample_ms, now_s, self.half_life_s)
