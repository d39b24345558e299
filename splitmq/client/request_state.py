"""One request's state as the client keeps it, from ``infer_async`` to its end.

A request is in one :class:`Phase` at a time; the client moves it, under its lock:

- ``PLANNING``: waiting for the coordinator's plan (a cached plan skips this);
- ``DEPLOYMENT``: it has a plan, but the plan's retained deployment message (the
  stage 0 input specs the input is fitted to) has not arrived yet;
- ``SENT``: an attempt is in flight. When it fails, it is closed (back to
  ``PLANNING``) and the request is either sent again on a fallback (``SENT``) or
  asks for a fresh plan;
- ``BACKOFF``: the next attempt goes back to an agent that answered ``overloaded``
  and waits a little first (:func:`splitmq.client.routes.backoff_s`);
- ``UNAVAILABLE``: the coordinator said a stage has no replica online (it heals the
  deployment): the request asks for a plan again a little later;
- ``DONE``: it ended in a result or an error (deadline, refusal, attempts spent,
  client closed) and left the client's table.

In ``SENT`` exactly one attempt is current (``attempt``, on ``route``); an attempt that
ends is closed into ``attempts`` (an :class:`~splitmq.client.records.AttemptRecord`),
and the request's :class:`~splitmq.client.records.RequestRecord` is made from it all
when it finishes.
"""

from __future__ import annotations

import time
from concurrent.futures import Future
from enum import Enum
from typing import Any

from splitmq.client import routes
from splitmq.client.inputs import Inputs
from splitmq.client.plans import PlanKey
from splitmq.client.records import AttemptRecord, RequestRecord, request_record
from splitmq.client.result import InferenceResult
from splitmq.client.routes import NOTHING_KNOWN, Knowledge
from splitmq.client.timers import Timer
from splitmq.wire import Plan, PlanRefused, Route, Tensor


def now_ms() -> float:
    """Wall-clock time in epoch milliseconds (what records and deadlines on the wire use)."""
    return time.time() * 1000.0


class Phase(Enum):
    """Where a request is in its life (see the module docstring)."""

    PLANNING = "waiting for a plan"
    DEPLOYMENT = "waiting for the plan's deployment"
    SENT = "sent"
    BACKOFF = "waiting to go back to a busy agent"
    UNAVAILABLE = "waiting for a stage to have a replica online again"
    DONE = "done"


class RequestState:
    """One request's state; only touched under the client's lock.

    A plain class with its ``__init__`` written out, not a dataclass: compiled, a
    dataclass's generated ``__init__`` stays an interpreted function (28 fields, some
    from factories), and every request makes one.
    """

    request_id: bytes
    key: PlanKey
    inputs: Inputs
    deadline_s: float
    deadline_ms: int
    run: str
    future: Future[InferenceResult]
    sent_ms: float
    phase: Phase
    plan: Plan | None
    route: Route
    tensors: tuple[Tensor, ...]
    fitted_for: tuple[str, int] | None
    outputs: tuple[str, ...]
    attempt: int
    attempt_sent_ms: float
    attempts: list[AttemptRecord]
    knowledge: Knowledge
    bytes_sent: int
    busy: set[tuple[int, str]]
    """``(stage, agent)`` pairs that refused an attempt of this request as ``overloaded``."""
    busy_answers: int
    """Attempts an agent refused with ``overloaded``."""
    maybe_lost: bool
    """The current attempt may have been dropped by the broker, whoever is alive: the
    client's link went down since it was sent, or an agent of its route (re)subscribed."""
    lost_to_outages: int
    """Attempts that timed out while ``maybe_lost``: they count against no one."""
    wait_if_busy: bool
    """The last attempt was refused as ``overloaded``: the next waits if it goes back to
    an agent in ``busy``."""
    plan_asks: int
    """Plan requests of its own that no coordinator answered in time."""
    waited: bool
    """It waited for a plan: its first send measures more than the client's own work."""
    unavailable: PlanRefused | None
    """The coordinator's last answer that a stage has no replica online: what the
    request reports if its deadline passes while it asks again."""
    probe: bool
    """Its first attempt measures replicas the client knows least of
    (:func:`splitmq.client.routes.by_speed`)."""
    timers: list[Timer]
    """Its deadline, attempt timeouts and waits: cancelled when it ends."""
    counted: tuple[tuple[str, int, str], ...]
    """Where its attempt in flight is counted (:meth:`splitmq.client.spread.Spread.sent`)."""
    index: int | None
    """Its input's position in a stream: its result's or error's ``index``."""

    def __init__(
        self,
        request_id: bytes,
        key: PlanKey,
        inputs: Inputs,
        *,
        deadline_s: float,
        deadline_ms: int,
        run: str,
        index: int | None = None,
    ) -> None:
        self.request_id = request_id
        self.key = key
        self.inputs = inputs
        self.deadline_s = deadline_s
        self.deadline_ms = deadline_ms
        self.run = run
        self.future = Future()
        self.sent_ms = now_ms()
        self.phase = Phase.PLANNING
        self.plan = None
        self.route = ()
        self.tensors = ()
        self.fitted_for = None
        self.outputs = ()
        self.attempt = -1
        self.attempt_sent_ms = 0.0
        self.attempts = []
        self.knowledge = NOTHING_KNOWN
        self.bytes_sent = 0
        self.busy = set()
        self.busy_answers = 0
        self.maybe_lost = False
        self.lost_to_outages = 0
        self.wait_if_busy = False
        self.plan_asks = 0
        self.waited = False
        self.unavailable = None
        self.probe = False
        self.timers = []
        self.counted = ()
        self.index = index

    @property
    def attempts_spent(self) -> int:
        """Attempts that count against ``ClientConfig.max_attempts``: those sent, except
        the ones an agent refused as busy (they cost it nothing; the next one waits) and
        the ones a broker outage may have swallowed (no agent is to blame)."""
        return self.attempt + 1 - self.busy_answers - self.lost_to_outages

    def close_attempt(self, outcome: str, message: str) -> None:
        route = routes.firsts(self.route)
        self.attempts.append(
            AttemptRecord(self.attempt, route, self.attempt_sent_ms, outcome, message)
        )
        self.phase = Phase.PLANNING

    def record(self, *, ok: bool, **fields: Any) -> RequestRecord:
        plan = self.plan
        values: dict[str, Any] = {
            "request_id": self.request_id.hex(),
            "model": plan.model if plan is not None and self.key.task else self.key.model,
            "sent_ms": self.sent_ms,
            "finished_ms": now_ms(),
            "ok": ok,
            "attempts": tuple(self.attempts),
            "bytes_sent": self.bytes_sent,
            "run": self.run,
            "task": self.key.task or "",
        }
        if plan is None:
            values["version"] = self.key.version or ""
        else:
            values["version"] = plan.version
            values["variant"] = plan.variant
            values["deployment"] = plan.deployment
            values["epoch"] = plan.epoch
            values["predicted_latency_ms"] = plan.predicted_latency_ms
            values["predicted_energy_j"] = plan.predicted_energy_j
            values["predicted_stages"] = plan.predicted_stages or ()
            values["predicted_final_hop_ms"] = plan.predicted_final_hop_ms
            values["accuracy"] = plan.accuracy
            values["candidates"] = plan.candidates or ()
        values.update(fields)
        return request_record(values)
