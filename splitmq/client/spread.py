"""Which replica of a stage takes the next request of a stream. Pure; the engine holds one.

A plan is made once and reused for many requests (the client caches it), so the plan
alone would send a whole stream to the same first replica of every stage while its
fallbacks idle. The pick is therefore made per request, here, from what this client
knows best of all: its own requests in flight at each replica, and each replica's
*service time* measured on the traces of its results.

At each stage the route's first replica (the planner's choice, unless the client
routes around it: :func:`~splitmq.client.routes.choose_route`) keeps the request while
none of this client's requests is in flight there: the plan weighs energy and battery
too, and a free replica needs no relief. Once it has some, among the replicas a
request may go to first (alive, not failed or suspected by this request), the pick is
the one with the least expected delay::

    (requests of this client in flight there + 1) x service time

where delays within :data:`TIE` of the least count as equal, and among equals the
replica with fewer in flight wins, then the one of less delay, then the plan's order.
A service time is a smoothed measurement that moves by several percent, and a request
sent to a replica with fewer of ours adds capacity, where one more behind a busy
replica only waits: without the tolerance, a replica three times slower got no request
of a stream with 3 in flight whenever it measured a hair slower than three requests
queued at the faster one (three quarters of the replicas' summed capacity). Equal
replicas take turns; a replica three times slower gets about a third of the requests
once the others have a queue (so a stream reaches the replicas' summed capacity); one
request at a time always goes to the plan's choice. A replica never measured is taken to be as
fast as the fastest measured one (or as the speed its telemetry reports), so it is
tried and measured early.

A replica's service time is what one request costs it apart from waiting in its
queue: from the previous stage's finish (the client's send for stage 0) to its
receipt, its compute (started to finished), and from its finish to the next receipt
(the next stage's agent, or the client for the last stage: the emulated link or a slow
network shows there). Clock skews between devices are clamped out (no part below 0).

What a single client cannot see, other clients' requests, the coordinator's planner
weighs (telemetry's queue depths, when it orders a stage's replicas in a plan): so
clients asking at different times start on different replicas. Only touched under the
client's lock.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from splitmq.client.routes import Knowledge, smoothed
from splitmq.wire import Route, Telemetry, TraceEntry

Where = tuple[str, int, str]
"""``(deployment, stage, agent_id)``."""

TIE = 0.15
"""Expected delays within this fraction of the least are taken as equal (see the
module docstring): a request may then wait this much longer than at the replica of
least delay, so that a replica with fewer of our requests is not left idle."""
MIN_SERVICE_MS = 0.01
"""No replica is taken to serve faster than this, so queues still count when the
measured times are all near zero."""


class Spread:
    """This client's requests in flight per replica, and the replicas' service times."""

    def __init__(self) -> None:
        self._in_flight: dict[Where, int] = {}
        self._service_ms: dict[Where, float] = {}
        self._reported_ms: dict[Where, float] = {}

    # -- what the client does -----------------------------------------------------------

    def sent(self, deployment: str, route: Route) -> tuple[Where, ...]:
        """An attempt on ``route`` went out: count it at each stage's first agent. The
        returned key must be given back to :meth:`ended` when the attempt ends."""
        counted = tuple([(deployment, s, agents[0]) for s, agents in enumerate(route) if agents])
        for where in counted:
            self._in_flight[where] = self._in_flight.get(where, 0) + 1
        return counted

    def ended(self, counted: tuple[Where, ...]) -> None:
        """The attempt counted as ``counted`` (:meth:`sent`) ended (answered, failed, given up)."""
        for where in counted:
            left = self._in_flight.get(where, 0) - 1
            if left > 0:
                self._in_flight[where] = left
            else:
                self._in_flight.pop(where, None)

    def in_flight(self, deployment: str, stage: int, agent_id: str) -> int:
        return self._in_flight.get((deployment, stage, agent_id), 0)

    # -- what it learns -----------------------------------------------------------------

    def observe(
        self, deployment: str, trace: Sequence[TraceEntry], sent_ms: float, received_ms: float
    ) -> None:
        """A result of ``deployment`` whose attempt was sent at ``sent_ms`` came at
        ``received_ms`` (client clock): each trace entry's service time (module docstring)."""
        previous_ms = sent_ms
        for position, entry in enumerate(trace):
            following = trace[position + 1].received_ms if position + 1 < len(trace) else None
            next_ms = received_ms if following is None else following
            sample = (
                max(0.0, entry.received_ms - previous_ms)
                + max(0.0, entry.finished_ms - entry.started_ms)
                + max(0.0, next_ms - entry.finished_ms)
            )
            where = (deployment, entry.stage, entry.agent_id)
            self._service_ms[where] = smoothed(self._service_ms.get(where), sample)
            previous_ms = entry.finished_ms

    def telemetry(self, telemetry: Telemetry) -> None:
        """An agent's telemetry: its compute time per hosted stage, a first estimate."""
        for key, compute_ms in telemetry.compute_ms.items():
            deployment, _, stage = key.rpartition("/")
            if deployment and stage.isdigit():
                self._reported_ms[(deployment, int(stage), telemetry.agent_id)] = compute_ms

    def service_ms(self, deployment: str, stage: int, agent_id: str) -> float | None:
        """The replica's measured service time, else its reported compute time, else None."""
        where = (deployment, stage, agent_id)
        measured = self._service_ms.get(where)
        return measured if measured is not None else self._reported_ms.get(where)

    # -- the pick -----------------------------------------------------------------------

    def pick(
        self,
        deployment: str,
        route: Route,
        knowledge: Knowledge | None = None,
        dead: Collection[str] = (),
    ) -> Route:
        """``route`` with, at each stage where its first replica has requests of this
        client in flight, the replica of least expected delay first (of those a first
        attempt may go to: alive, never failed or suspected here)."""
        barred = {*knowledge.failed, *knowledge.suspects} if knowledge else set()
        chosen: list[tuple[str, ...]] = []
        for stage, agents in enumerate(route):
            candidates = [a for a in agents if a not in dead and (stage, a) not in barred]
            if len(candidates) < 2 or not self.in_flight(deployment, stage, candidates[0]):
                chosen.append(agents)  # the preferred replica is free: the plan's choice
                continue
            best = self.best(deployment, stage, candidates)
            chosen.append((best, *(a for a in agents if a != best)))
        return tuple(chosen)

    def best(self, deployment: str, stage: int, candidates: Sequence[str]) -> str:
        """Among the candidates whose ``(in flight + 1) x service time`` is within
        :data:`TIE` of the least, the one with fewer requests in flight, then less
        delay, then the first."""
        known = [self.service_ms(deployment, stage, a) for a in candidates]
        measured = [ms for ms in known if ms is not None]
        default_ms = min(measured) if measured else 1.0
        keyed: list[tuple[int, float, int]] = []  # (in flight, delay, plan's order)
        for order, (agent_id, service_ms) in enumerate(zip(candidates, known, strict=True)):
            waiting = self._in_flight.get((deployment, stage, agent_id), 0)
            each_ms = max(MIN_SERVICE_MS, default_ms if service_ms is None else service_ms)
            keyed.append((waiting, (waiting + 1) * each_ms, order))
        within_ms = min(delay_ms for _, delay_ms, _ in keyed) * (1.0 + TIE)
        _, _, order = min(key for key in keyed if key[1] <= within_ms)
        return candidates[order]
