"""The client's engine: one request from plan to ending, apart from the API.

:class:`RequestEngine` holds every request in flight under one lock and takes the
decisions: asking for a plan (or using the cached one), fitting and sending the input
to the route's first agent, timing each attempt out, retrying on a fallback after an
error, a timeout or an agent's will (with backoff when the fleet is busy), and ending
each request once, with its result or its error. The effects of a decision
(publishing, the recorder, resolving futures) run after the lock is released. It
follows the fleet too: deployments, agents' presence and telemetry.
:class:`~splitmq.client.client.Client` is the API on top.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING, TypeVar

from splitmq import errors as base_errors
from splitmq.client import errors, routes, spread
from splitmq.client.branches import (
    Fanin,
    StageGraph,
    entry_activations,
    fallback_route,
    graph_of,
    primaries_first,
)
from splitmq.client.config import ClientConfig
from splitmq.client.errors import DeadlineError, InferenceError, InputError, PlanRefusedError
from splitmq.client.inputs import fit_inputs, read_outputs, top_classes
from splitmq.client.own_work import OwnWork
from splitmq.client.plans import PendingPlan, PendingPlans, PlanCache
from splitmq.client.records import RequestRecord
from splitmq.client.request_state import Phase, RequestState, now_ms
from splitmq.client.result import InferenceResult
from splitmq.client.routes import Failure
from splitmq.client.stream_pace import StreamPace
from splitmq.client.timers import Effect, Effects, Timers, apply_effects
from splitmq.errors import TransportError
from splitmq.transport import InboundMessage, Transport
from splitmq.transport.payload import payload_size
from splitmq.wire import (
    PLAN_UNAVAILABLE,
    Activation,
    AgentState,
    AgentStatus,
    Deployment,
    ErrorCode,
    ErrorMessage,
    Message,
    Plan,
    PlanRefused,
    PlanRequest,
    Result,
    Route,
    Telemetry,
    hop,
)
from splitmq.wire import topics as t

if TYPE_CHECKING:
    pass

__all__ = ["RequestEngine", "overloaded"]

log = logging.getLogger(__name__)


class RequestEngine:
    """Requests in flight and the decisions about them (see the module docstring)."""

    def __init__(
        self,
        transport: Transport,
        client_id: str,
        *,
        namespace: str,
        config: ClientConfig,
        recorder: Callable[[RequestRecord], None] | None,
        on_telemetry: Callable[[Telemetry], None] | None,
    ):
        self.config = config
        self.namespace = namespace
        self.client_id = client_id
        self.transport = transport
        self._recorder, self._on_telemetry = recorder, on_telemetry
        self._callback = t.RESULTS.name(namespace, client=self.client_id)
        self._lock = threading.Lock()
        self._start_lock = threading.Lock()
        self._requests: dict[bytes, RequestState] = {}
        self._finished: OrderedDict[bytes, None] = OrderedDict()
        self._awaiting: dict[str, list[bytes]] = {}
        self._hop_topics: dict[tuple[str, int, str], tuple[Deployment | None, str]] = {}
        """First hops' topics by deployment, stage and agent, with the deployment message
        they were rendered for (its sites place the agent)."""
        self._observed_ms: dict[str, float] = {}  # smoothed latency per deployment
        self._hops = routes.HopTimes()  # smoothed hop time per deployment, stage and agent
        self._fanin: dict[bytes, Fanin] = {}  # stage graphs: branch retries, results to join
        self._spread = spread.Spread()  # requests in flight and service time per replica
        self._own = OwnWork()  # the client's own work per request, told to the planner
        self._pace = StreamPace()  # a stream's period: the acknowledgements' deadlines
        self._made = 0  # requests made: every PROBE_EVERY-th is a probe
        self._plans = PlanCache(self.config.plan_ttl_s)
        self._pending = PendingPlans(self.client_id)
        self._liveness = routes.Liveness(self.config.stale_periods, self.config.min_stale_s)
        self._statuses: dict[str, AgentStatus] = {}  # each agent's last status, as it said
        self._timers = Timers(f"client-{self.client_id}-timers")
        self._random = random.Random()  # jitter of the waits: busy agents, unavailable stages
        # start() returns connected; the first connection's event is not a reconnection
        self._link_up, self._first_link_event = True, True
        self._started = self._closed = False
        self.duplicates = 0
        """Results for a request already answered (a late attempt, a QoS 1 redelivery)."""
        self.unknown = 0
        """Results and errors for request ids this client does not know."""

    # -- plans ----------------------------------------------------------------------------

    def _plan(self, request: RequestState, *, fresh: bool, effects: Effects) -> None:
        now = time.monotonic()
        plan, stale = (None, False) if fresh else self._plans.lookup(request.key, now)
        if plan is not None:
            if stale:  # use it now; a fresh one replaces it when the coordinator answers
                self._ask_for_plan(self._pending.revalidate(request.key, now), now, effects)
            self._use_plan(request, plan, effects)
            return
        request.phase = Phase.PLANNING
        request.waited = True
        # the first to wait for this key asks; the others join
        self._ask_for_plan(self._pending.join(request.key, request.request_id, now), now, effects)

    def _ask_for_plan(self, pending: PendingPlan | None, now: float, effects: Effects) -> None:
        if pending is None:  # already asked
            return
        message = pending.key.request(pending.plan_request_id, self.client_id, self._own.ms)
        effects.append(partial(self._publish_plan_request, message))
        expire = partial(self._locked, partial(self._answer, pending.plan_request_id, None))
        pending.timer = self._timers.call_at(now + self.config.plan_timeout_s, expire)

    def _on_plan(self, message: InboundMessage) -> None:
        answer = _decoded(message, t.PLANS)
        if answer is not None:
            self._locked(partial(self._answer, answer.request_id, answer))

    def _answer(
        self, plan_request_id: str, answer: Plan | PlanRefused | None, effects: Effects
    ) -> None:
        """The coordinator answered (or, ``None``, did not in time): on with the waiters."""
        pending = self._pending.take(plan_request_id)
        if pending is None:
            return
        if answer is not None and pending.timer is not None:
            pending.timer.cancel()
        if isinstance(answer, Plan):
            self._plans.put(pending.key, answer, time.monotonic())
        elif isinstance(answer, PlanRefused):  # a stale plan the coordinator would not renew
            self._plans.forget(pending.key)
        for request_id in pending.waiters:
            request = self._requests.get(request_id)
            if request is None or request.phase is not Phase.PLANNING:
                continue
            if isinstance(answer, Plan):
                self._use_plan(request, answer, effects)
            elif isinstance(answer, PlanRefused) and answer.constraint == PLAN_UNAVAILABLE:
                self._plan_later(request, answer, effects)
            elif isinstance(answer, PlanRefused):
                self._give_up(
                    request, errors.PLAN_REFUSED, answer.message, effects, answer.constraint
                )
            elif request.plan is not None:  # no fresh plan for a retry: go on with the old one
                self._send(request, self._route(request, request.plan), effects)
            else:
                self._no_plan(request, effects)

    def _no_plan(self, request: RequestState, effects: Effects) -> None:
        """A plan request went unanswered: ask again while the deadline allows.

        A coordinator may be restarting, or reconnecting after a broker restart, and
        the broker drops a plan request no coordinator is subscribed for.
        """
        request.plan_asks += 1
        if time.monotonic() < request.deadline_s:  # the deadline's timer ends it as no_plan
            self._plan(request, fresh=True, effects=effects)
        else:
            self._give_up(request, errors.NO_PLAN, self._no_plan_reason(request), effects)

    def _no_plan_reason(self, request: RequestState) -> str:
        asks = f"{request.plan_asks} plan requests" if request.plan_asks > 1 else "a plan request"
        return (
            f"no coordinator answered {asks} ({self.config.plan_timeout_s:.1f} s each): is "
            f"a coordinator running on this broker, in namespace {self.namespace!r}?"
        )

    def _plan_later(self, request: RequestState, refusal: PlanRefused, effects: Effects) -> None:
        """A stage has no replica online: passing (the coordinator heals the deployment),
        so ask again after ``replan_wait_s`` while the deadline allows."""
        request.unavailable = refusal
        wait_s = self.config.replan_wait_s * self._random.uniform(0.5, 1.5)
        if time.monotonic() + wait_s >= request.deadline_s:
            self._give_up(
                request, errors.PLAN_REFUSED, refusal.message, effects, refusal.constraint
            )
            return
        request.phase = Phase.UNAVAILABLE
        replan = partial(self._replan, request.request_id)
        self._arm(request, time.monotonic() + wait_s, replan)

    def _replan(self, request_id: bytes, effects: Effects) -> None:
        request = self._requests.get(request_id)
        if request is not None and request.phase is Phase.UNAVAILABLE:
            self._plan(request, fresh=True, effects=effects)

    def _use_plan(self, request: RequestState, plan: Plan, effects: Effects) -> None:
        request.plan = plan
        request.unavailable = None
        deployment = self._plans.deployment(plan.deployment)
        if deployment is None:  # its retained message is on its way: wait (up to the deadline)
            request.phase = Phase.DEPLOYMENT
            request.waited = True
            self._awaiting.setdefault(plan.deployment, []).append(request.request_id)
            return
        if graph_of(deployment) is not None:  # Plan 2: the branches on distinct agents
            plan = request.plan = replace(plan, route=primaries_first(plan.route, deployment))
        if request.fitted_for != (deployment.deployment, deployment.epoch):
            graph = graph_of(deployment)
            try:
                specs = deployment.stages[0].inputs if graph is None else graph.inputs
                request.tensors = fit_inputs(
                    request.inputs, specs, resize=self.config.resize_inputs
                )
            except InputError as error:
                self._give_up(request, errors.BAD_INPUT, str(error), effects)
                return
            request.fitted_for = (deployment.deployment, deployment.epoch)
            request.outputs = (
                tuple(spec.name for spec in deployment.stages[-1].outputs)
                if graph is None
                else graph.outputs
            )
        self._send(request, self._route(request, plan), effects)

    def _route(self, request: RequestState, plan: Plan) -> Route:
        dead = self._liveness.dead(time.monotonic())
        hops = self._hops.of(plan.deployment)
        probe = request.probe and request.attempt < 0  # a probe's first attempt only
        if self._graph(plan.deployment) is not None:  # keep the branches' distinct agents
            return routes.choose_route(plan.route, request.knowledge, dead, {}, probe=False)[0]
        route = routes.choose_route(plan.route, request.knowledge, dead, hops, probe=probe)[0]
        if probe:
            return route
        return self._spread.pick(plan.deployment, route, request.knowledge, dead)

    # -- attempts ------------------------------------------------------------------------

    def _send(self, request: RequestState, route: Route, effects: Effects) -> None:
        plan = request.plan
        assert plan is not None
        now = time.monotonic()
        budget = routes.RetryBudget(
            request.attempt + 1,
            self.config.max_attempts,
            request.deadline_s - now,
            plan.predicted_latency_ms,
        )
        if not routes.deadline_allows(budget.remaining_s, budget.predicted_latency_ms):
            self._give_up(request, errors.DEADLINE, routes.too_late(budget), effects)
            return
        wait_s = self._backoff_s(request, route, budget)
        left_s = budget.remaining_s - budget.predicted_latency_ms / 1000.0
        if wait_s > 0 and wait_s > left_s:  # the fleet stays busy: say so now, not at the deadline
            self._give_up(request, ErrorCode.OVERLOADED.value, overloaded(request, wait_s), effects)
            return
        if wait_s > 0:  # back to an agent that said it is busy: let its queue drain first
            request.phase = Phase.BACKOFF
            resend = partial(self._resend, request.request_id, request.attempt)
            self._arm(request, now + wait_s, resend)
            return
        request.attempt += 1
        request.route, request.phase, request.attempt_sent_ms = route, Phase.SENT, now_ms()
        self._spread.ended(request.counted)
        request.counted = self._spread.sent(plan.deployment, route)
        request.maybe_lost = False
        last = request.attempts_spent >= self.config.max_attempts
        timeout_s = self._attempt_timeout_s(plan, budget.remaining_s, last=last)
        activation = self._first_activation(request, plan.deployment, route)
        self._fanin.pop(request.request_id, None)
        expire = partial(self._timed_out, request.request_id, request.attempt, 0, timeout_s)
        self._arm(request, now + timeout_s, expire)
        graph = self._graph(plan.deployment)
        sent = (
            [activation] if graph is None else entry_activations(graph, activation, request.tensors)
        )
        for each in sent:
            effects.append(partial(self._publish_activation, request, each, budget.remaining_s))

    def _graph(self, deployment_id: str) -> StageGraph | None:
        deployment = self._plans.deployment(deployment_id)
        return None if deployment is None else graph_of(deployment)

    def _timed_out(
        self, request_id: bytes, attempt: int, generation: int, timeout_s: float, effects: Effects
    ) -> None:
        """An attempt's timeout of ``timeout_s`` from its send (``generation`` 0) or from
        its latest branch retry, unless a branch retry since gave it a later one. Its
        failure is made here, not with the timer: most attempts are answered first."""
        fanin = self._fanin.get(request_id)
        if fanin is not None and fanin.generation != generation:
            return
        since = " of a branch retry" if generation else ""
        failure = Failure(routes.TIMEOUT, f"no answer within {timeout_s:.2f} s{since}")
        self._failed(request_id, attempt, failure, effects)

    def _retry_branch(self, request: RequestState, failure: Failure, effects: Effects) -> bool:
        """Plan 2: a branch failed (an error naming its stage, ``branch_missing`` from the
        join, its agent's will): send that branch alone again on its next fallback, in
        the same attempt, so the join still completes. False when the failure is not a
        branch's or its fallbacks are spent: the whole request is retried instead."""
        plan, stage = request.plan, failure.stage
        graph = None if plan is None else self._graph(plan.deployment)
        if plan is None or graph is None or stage is None or stage not in graph.branches:
            return False
        route = fallback_route(request.route, stage)
        fanin = self._fanin.setdefault(request.request_id, Fanin())
        retry = fanin.retries.get(stage, 0) + 1
        if route is None or retry >= len(request.route[stage]):
            return False
        fanin.retries[stage] = retry
        fanin.generation += 1
        if failure.agent_id:
            request.knowledge = request.knowledge.fail(stage, failure.agent_id)
        request.route = route
        log.info(
            "request %s: branch stage %d failed (%s: %s); retrying it alone on %s",
            request.request_id.hex(),
            stage,
            failure.outcome,
            failure.message,
            route[stage][0],
        )
        now = time.monotonic()
        remaining_s = request.deadline_s - now
        timeout_s = self._attempt_timeout_s(plan, remaining_s, last=False)
        expire = partial(
            self._timed_out, request.request_id, request.attempt, fanin.generation, timeout_s
        )
        self._arm(request, now + timeout_s, expire)
        template = self._first_activation(request, plan.deployment, route)
        for each in entry_activations(graph, template, request.tensors, branch=stage, retry=retry):
            effects.append(partial(self._publish_activation, request, each, remaining_s))
        return True

    def _first_activation(self, request: RequestState, deployment: str, route: Route) -> Activation:
        """The request's activation for its first stage(s), on ``route`` this attempt."""
        return Activation(
            request_id=request.request_id,
            attempt=request.attempt,
            deployment=deployment,
            stage=0,
            route=route,
            callback=self._callback,
            deadline_ms=request.deadline_ms,
            tensors=request.tensors,
            client_id=self.client_id,
        )

    def _arm(self, request: RequestState, when_s: float, step: Callable[[Effects], None]) -> None:
        """Run ``step`` under the lock at ``when_s``, unless ``request`` has ended by then."""
        request.timers.append(self._timers.call_at(when_s, partial(self._locked, step)))

    def _attempt_timeout_s(self, plan: Plan, remaining_s: float, *, last: bool) -> float:
        return routes.attempt_timeout_s(
            plan.predicted_latency_ms,
            remaining_s,
            observed_ms=self._observed_ms.get(plan.deployment),
            last=last,
            factor=self.config.attempt_timeout_factor,
            margin_s=self.config.attempt_timeout_margin_s,
            minimum_s=self.config.min_attempt_timeout_s,
        )

    def _backoff_s(self, request: RequestState, route: Route, budget: routes.RetryBudget) -> float:
        """How long the attempt on ``route`` waits: 0 unless the last attempt was refused
        as ``overloaded`` and this one goes back to an agent that refused the request so
        (a fresh fallback goes at once). The caller gives up if it does not fit."""
        due, request.wait_if_busy = request.wait_if_busy, False  # one wait per refusal
        if not due or request.busy.isdisjoint(enumerate(routes.firsts(route))):
            return 0.0
        plan = request.plan
        assert plan is not None
        observed_ms = self._observed_ms.get(plan.deployment) or 0.0
        wait_s = routes.backoff_s(
            request.busy_answers,
            max(plan.predicted_latency_ms, observed_ms),
            minimum_s=self.config.overload_backoff_s,
            jitter=self._random.uniform(0.5, 1.5),
        )
        return wait_s

    def _resend(self, request_id: bytes, attempt: int, effects: Effects) -> None:
        """The wait before going back to a busy agent is over: send, on the route as it is now."""
        request = self._requests.get(request_id)
        if request is None or request.phase is not Phase.BACKOFF or request.attempt != attempt:
            return  # answered by an earlier attempt, or ended, meanwhile
        assert request.plan is not None
        self._send(request, self._route(request, request.plan), effects)

    def _publish_activation(
        self, request: RequestState, activation: Activation, remaining_s: float
    ) -> None:
        topic = self._hop_topic(activation)
        try:
            payload = hop.request_parts(activation)  # the input's buffer is sent, not copied
            with self._lock:  # counted first: the answer may come before publish returns
                request.bytes_sent += payload_size(payload)
            t.STAGE.publish_payload(
                self.transport, topic, payload, expiry_s=remaining_s, qos=self.config.hop_qos
            )
            if activation.attempt == 0 and not request.waited:
                with self._lock:
                    self._own.sent(now_ms() - request.sent_ms)
        except (TransportError, base_errors.EncodeError) as error:
            # too large for the broker, or not encodable: no other route does better
            final = isinstance(error, base_errors.PayloadTooLarge | base_errors.EncodeError)
            failure = Failure(
                errors.SEND_FAILED, f"cannot publish on {topic}: {error}", final=final
            )
            self._locked(partial(self._failed, request.request_id, activation.attempt, failure))

    def _hop_topic(self, activation: Activation) -> str:
        """The topic of the activation's first agent, rendered once per deployment
        message, stage and agent (a stream's requests repeat it)."""
        agent_id = routes.firsts(activation.route)[activation.stage]
        deployment = self._plans.deployment(activation.deployment)
        key = (activation.deployment, activation.stage, agent_id)
        known = self._hop_topics.get(key)
        if known is not None and known[0] is deployment:
            return known[1]
        topic = t.hop_topic(
            self.namespace,
            deployment=activation.deployment,
            stage=activation.stage,
            agent=agent_id,
            sites=deployment.sites if deployment is not None else {},
        )
        if len(self._hop_topics) >= HOP_TOPICS_REMEMBERED:
            self._hop_topics.clear()
        self._hop_topics[key] = (deployment, topic)
        return topic

    def _on_deadline(self, request_id: bytes) -> None:
        def expire(effects: Effects) -> None:
            request = self._requests.get(request_id)
            if request is None:
                return
            refusal = request.unavailable
            if request.phase in (Phase.PLANNING, Phase.UNAVAILABLE) and refusal is not None:
                # asking again after "no replica online": that is what kept it waiting
                self._give_up(
                    request, errors.PLAN_REFUSED, refusal.message, effects, refusal.constraint
                )
                return
            if request.phase is Phase.PLANNING and request.plan is None and request.plan_asks:
                self._give_up(request, errors.NO_PLAN, self._no_plan_reason(request), effects)
                return
            reason = "the deadline passed"
            if request.phase is not Phase.SENT:
                reason += f" {request.phase.value}"
            self._give_up(request, errors.DEADLINE, reason, effects)

        self._locked(expire)

    def _failed(self, request_id: bytes, attempt: int, failure: Failure, effects: Effects) -> None:
        """Attempt ``attempt`` failed: retry, replan or give up (if it is the current one)."""
        request = self._requests.get(request_id)
        if request is None or request.phase is not Phase.SENT or request.attempt != attempt:
            return  # answered already, or an attempt since superseded
        assert request.plan is not None
        if failure.outcome != routes.TIMEOUT and self._retry_branch(request, failure, effects):
            return
        plan, now = request.plan, time.monotonic()
        if failure.outcome == routes.TIMEOUT and not self._link_up:
            return  # the reconnection gives it a fresh timeout (see _link_changed)
        self._spread.ended(request.counted)
        request.counted = ()
        if failure.outcome == routes.TIMEOUT and request.maybe_lost:
            # dropped by the broker in an outage, perhaps: send again, blaming no agent
            request.close_attempt(routes.LOST, failure.message)
            request.lost_to_outages += 1
            self._send(request, self._route(request, plan), effects)
            return
        request.close_attempt(failure.outcome, failure.message)
        request.wait_if_busy = failure.outcome in routes.BUSY_CODES
        if request.wait_if_busy:
            request.busy_answers += 1
            if failure.stage is not None and failure.agent_id:
                request.busy.add((failure.stage, failure.agent_id))
        if failure.outcome in routes.REPLAN_CODES:
            self._plans.drop(plan.deployment)
        decision = routes.after_failure(
            request.route,
            plan.route,
            request.knowledge,
            failure,
            budget=routes.RetryBudget(
                request.attempts_spent,
                self.config.max_attempts,
                request.deadline_s - now,
                plan.predicted_latency_ms,
            ),
            dead=self._liveness.dead(now),
            hops=self._hops.of(plan.deployment),
        )
        request.knowledge, step = decision.knowledge, decision.step
        if isinstance(step, routes.Retry):
            self._send(request, step.route, effects)
        elif isinstance(step, routes.Replan):
            log.info(
                "request %s: %s; asking for a fresh plan", request.request_id.hex(), step.reason
            )
            self._plan(request, fresh=True, effects=effects)
        else:
            self._give_up(request, step.code, step.reason, effects)

    def _on_connection(self, up: bool) -> None:
        self._locked(partial(self._link_changed, up))

    def _link_changed(self, up: bool, effects: Effects) -> None:
        """The client's broker link went down, or came back (subscriptions restored).

        A broker that restarts keeps no session: an answer published while the client
        was away is gone, and so is an attempt that reached the broker before its agent
        had subscribed again. Every attempt in flight across the outage is therefore
        *maybe lost*: it gets an ordinary timeout from the reconnection (a last attempt
        would otherwise wait out its deadline for an answer that may never come), and
        an agent of its route announcing itself online re-arms it again
        (:meth:`_status`). If it passes unanswered the request is sent again: the lost
        attempt counts against no one (:meth:`_failed`). A timeout that fires while the
        link is down waits for the reconnection.
        """
        first, self._first_link_event = self._first_link_event, False
        self._link_up = up
        if up and first:  # the first connection: nothing was in flight before it
            return
        if up:
            self._rearm(self._sent(), "a reconnection")
        else:
            for request in self._sent():
                request.maybe_lost = True

    def _sent(self, via: str | None = None) -> list[RequestState]:
        """The requests with an attempt in flight (through agent ``via`` if given)."""
        return [
            r
            for r in self._requests.values()
            if r.phase is Phase.SENT and (via is None or via in routes.firsts(r.route))
        ]

    def _rearm(self, requests: Iterable[RequestState], since: str) -> None:
        """Mark each attempt in flight *maybe lost* and give it an ordinary timeout from
        now (see :meth:`_link_changed`)."""
        now = time.monotonic()
        for request in requests:
            assert request.plan is not None
            request.maybe_lost = True
            timeout_s = self._attempt_timeout_s(request.plan, request.deadline_s - now, last=False)
            lost = Failure(routes.TIMEOUT, f"no answer within {timeout_s:.2f} s of {since}")
            expire = partial(self._failed, request.request_id, request.attempt, lost)
            self._arm(request, now + timeout_s, expire)

    # -- endings -------------------------------------------------------------------------

    def _answer_now(self, message: InboundMessage) -> bool:
        """The fast path for answers: handled on the transport's network thread."""
        self._on_answer(message)
        return True

    def _on_answer(self, message: InboundMessage) -> None:
        answer = _answer(message)
        if answer is not None:
            received = partial(self._answered, answer, len(message.payload), message.received_s)
            self._locked(received)

    def _answered(
        self, answer: Result | ErrorMessage, size: int, received_s: float, effects: Effects
    ) -> None:
        request = self._requests.get(answer.request_id)
        if request is None:
            if isinstance(answer, Result) and answer.request_id in self._finished:
                self.duplicates += 1
            elif answer.request_id not in self._finished:
                self.unknown += 1
        elif isinstance(answer, Result):
            joined = self._join(request, answer)
            if joined is not None:
                self._succeed(request, joined, size, effects)
                self._own.answered((time.monotonic() - received_s) * 1000.0)
                period_s = self._pace.result(received_s, len(self._requests))
                if period_s is not None:
                    effects.append(partial(self.transport.pace_acks, period_s))
        else:
            where = f"stage {answer.stage} on {answer.agent_id}: {answer.message}"
            failure = Failure(str(answer.code), where, answer.stage, answer.agent_id)
            self._failed(request.request_id, answer.attempt, failure, effects)

    def _join(self, request: RequestState, result: Result) -> Result | None:
        """Plan 2 with the requester as the join: the result once every final stage's
        share of the outputs is in (None until then); a chain's result as it is."""
        if result.stage is None or request.plan is None:
            return result
        graph = self._graph(request.plan.deployment)
        if graph is None or len(graph.finals) < 2:
            return result
        return self._fanin.setdefault(request.request_id, Fanin()).add(graph, result)

    def _succeed(self, request: RequestState, result: Result, size: int, effects: Effects) -> None:
        sent_ms = next((a.sent_ms for a in request.attempts if a.attempt == result.attempt), None)
        sent_ms = request.attempt_sent_ms if sent_ms is None else sent_ms
        if result.deployment:
            received_ms = now_ms()
            previous = self._observed_ms.get(result.deployment)
            self._observed_ms[result.deployment] = routes.smoothed(previous, received_ms - sent_ms)
            self._hops.observe(
                result.deployment, result.trace, sent_ms, received_ms, time.monotonic()
            )
            self._spread.observe(result.deployment, result.trace, sent_ms, received_ms)
        if request.phase is Phase.SENT and result.attempt == request.attempt:
            request.close_attempt("result", "")
        else:  # an earlier attempt answered after its timeout: the first result wins
            if request.phase is Phase.SENT:
                request.close_attempt("superseded", f"attempt {result.attempt} answered first")
            request.attempts = [
                replace(a, outcome="result", message="answered after its timeout")
                if a.attempt == result.attempt
                else a
                for a in request.attempts
            ]
        outputs, quantization = read_outputs(result.tensors, request.outputs)
        top: tuple[tuple[int, float], ...] = ()
        if outputs:
            name = next(iter(outputs))
            top = top_classes(
                outputs[name], self.config.top_k, *quantization.get(name, (None, None))
            )
        record = request.record(ok=True, trace=result.trace, bytes_received=size, top=top)
        assert request.plan is not None
        answer = InferenceResult(
            outputs, result.trace, record, request.plan, quantization, request.index
        )
        self._complete(request, record, effects, partial(request.future.set_result, answer))

    def _give_up(
        self, request: RequestState, code: str, reason: str, effects: Effects, constraint: str = ""
    ) -> None:
        if request.phase is Phase.SENT:  # the attempt in flight ends with the request
            request.close_attempt(routes.TIMEOUT if code == errors.DEADLINE else code, reason)
        record = request.record(ok=False, error_code=code, error_message=reason)
        error: InferenceError
        if code == errors.PLAN_REFUSED:
            error = PlanRefusedError(record, constraint, reason)
        elif code == errors.DEADLINE:
            error = DeadlineError(record, reason)
        else:
            error = InferenceError(record, code, reason)
        error.index = request.index
        self._complete(request, record, effects, partial(request.future.set_exception, error))

    def _complete(
        self, request: RequestState, record: RequestRecord, effects: Effects, resolve: Effect
    ) -> None:
        if request.phase is Phase.DEPLOYMENT and request.plan is not None:
            self._awaiting[request.plan.deployment].remove(request.request_id)
        request.phase = Phase.DONE
        self._spread.ended(request.counted)
        request.counted = ()
        for timer in request.timers:
            timer.cancel()
        del self._requests[request.request_id]
        self._fanin.pop(request.request_id, None)
        self._finished[request.request_id] = None
        while len(self._finished) > self.config.remember_finished:
            self._finished.popitem(last=False)
        if self._recorder is not None:
            effects.append(partial(self._recorder, record))
        effects.append(resolve)

    # -- the fleet -------------------------------------------------------------------------

    def _on_deployment(self, message: InboundMessage) -> None:
        deployment = _decoded(message, t.DEPLOYMENTS)
        if deployment is not None:
            self._locked(partial(self._deployed, deployment))

    def _deployed(self, deployment: Deployment, effects: Effects) -> None:
        if not self._plans.on_deployment(deployment):
            return
        for request_id in self._awaiting.pop(deployment.deployment, []):
            request = self._requests.get(request_id)
            if request is not None and request.phase is Phase.DEPLOYMENT and request.plan:
                self._use_plan(request, request.plan, effects)

    def _on_status(self, message: InboundMessage) -> None:
        status = _decoded(message, t.STATUS)
        if status is not None:
            self._locked(partial(self._status, status))

    def _status(self, status: AgentStatus, effects: Effects) -> None:
        agent_id, online = status.agent_id, status.state is AgentState.ONLINE
        self._liveness.status(agent_id, online)
        if online:
            self._statuses[agent_id] = status
        if online:  # (re)subscribed just now: what reached the broker before may be gone
            self._rearm(self._sent(via=agent_id), f"{agent_id} coming online")
            return
        if not self.config.retry_on_offline:
            return
        for request in self._sent(via=agent_id):
            stage = routes.firsts(request.route).index(agent_id)
            failure = Failure(routes.OFFLINE, f"agent {agent_id} went offline", stage, agent_id)
            self._failed(request.request_id, request.attempt, failure, effects)

    def _on_telemetry_message(self, message: InboundMessage) -> None:
        telemetry = _decoded(message, t.TELEMETRY)
        if telemetry is None:
            return
        age_s = max(0.0, now_ms() - telemetry.ts_ms) / 1000.0 if message.retain else 0.0
        with self._lock:
            seen_s = message.received_s - age_s
            self._liveness.telemetry(telemetry.agent_id, seen_s, telemetry.period_s)
            self._spread.telemetry(telemetry)
        if self._on_telemetry is not None:
            apply_effects([partial(self._on_telemetry, telemetry)])

    # -- plumbing --------------------------------------------------------------------------

    def _locked(self, step: Callable[[Effects], None]) -> None:
        """Run ``step`` under the lock, then the effects it asked for, without it."""
        effects: Effects = []
        with self._lock:
            step(effects)
        apply_effects(effects)

    def _publish_plan_request(self, message: PlanRequest) -> None:
        try:
            t.PLAN_REQUESTS.publish(self.transport, message, self.namespace)
        except TransportError as error:  # the wait for the answer expires and says so
            log.warning("could not publish %s: %s", message.KIND, error)


M = TypeVar("M", bound=Message)
HOP_TOPICS_REMEMBERED = 256
"""First hops' topics kept (all are forgotten when one more comes)."""


def _answer(message: InboundMessage) -> Result | ErrorMessage | None:
    """A result or error on the callback topic: a result through the fast path
    (:func:`splitmq.wire.hop.read_result`: what a stream of results repeats is read once),
    else, and for anything it refuses, the general decoder, which decides."""
    try:
        result = hop.read_result(message.payload)
    except base_errors.DecodeError:
        result = None
    return result if result is not None else _decoded(message, t.RESULTS)


def _decoded(message: InboundMessage, row: t.Topic[M]) -> M | None:
    if not message.payload:  # a retained message cleared
        return None
    try:
        return row.decode(message.payload, topic=message.topic)
    except base_errors.DecodeError as error:
        log.warning("ignored a bad message: %s", error)
        return None


def overloaded(request: RequestState, wait_s: float) -> str:
    """Why a request that busy agents kept refusing ends before its deadline."""
    left_s = request.deadline_s - time.monotonic()
    return (
        f"the fleet is overloaded: {request.busy_answers} attempts were refused as "
        f"overloaded, and the next would have to wait {wait_s:.2f} s first, which leaves "
        f"too little of the {left_s:.2f} s to the deadline"
    )
