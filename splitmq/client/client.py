"""The client: send inputs to a model spread over the fleet, get outputs back, retry.

::

    with Client("mqtt://127.0.0.1:1883", config=ClientConfig(model="digits")) as client:
        result = client.infer(image)                      # outputs, trace, record, plan
        future = client.infer_async(image, max_latency_ms=50)
        for item in client.stream(frames, ordered=True):  # many requests in flight
            ...                                           # InferenceResult | InferenceError

A request gets a plan (cached while its deployment's epoch holds, see
:mod:`splitmq.client.plans`), its input is fitted to the deployment's stage 0 inputs
(:mod:`splitmq.client.inputs`) and published to the first agent of the route; the
answer comes back on ``clients/{id}/result``. On a timeout, an error message or the
will of an agent on the route, the next attempt goes to a fallback
(:mod:`splitmq.client.routes` has the rules and the per-attempt timeout). The first
result for a request id wins, whichever attempt sent it; later ones are counted in
``duplicates``. Every request ends in a result or an
:class:`~splitmq.client.errors.InferenceError`, at the latest at its deadline.

Threads: the transport's inbox worker handles results, plans, deployments and agent
presence; one timer thread fires timeouts; decisions are taken under one lock and
their effects (publishing, the recorder, resolving futures) run after it is released.
The recorder is called once per finished request, before its future resolves.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import queue
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from enum import Enum
from functools import partial
from typing import TYPE_CHECKING, Any

from splitmq import errors as base_errors
from splitmq.client import errors, routes
from splitmq.client.errors import DeadlineError, InferenceError, InputError, PlanRefusedError
from splitmq.client.inputs import Array, Inputs, fit_inputs, read_outputs, top_classes
from splitmq.client.plans import PendingPlans, PlanCache, PlanKey
from splitmq.client.records import AttemptRecord, RequestRecord
from splitmq.client.routes import Failure, Knowledge
from splitmq.errors import ConfigError, TransportError
from splitmq.transport import (
    InboundMessage,
    MemoryBroker,
    MqttTransport,
    Transport,
    TransportConfig,
    parse_broker_url,
)
from splitmq.wire import (
    Activation,
    AgentState,
    AgentStatus,
    Deployment,
    EnergyLevel,
    ErrorMessage,
    Message,
    Plan,
    PlanRefused,
    Result,
    Route,
    Telemetry,
    Tensor,
    TraceEntry,
    decode,
    encode,
)
from splitmq.wire import topics as t

if TYPE_CHECKING:
    from splitmq.agent import Agent, AgentConfig

log = logging.getLogger(__name__)
Effect = Callable[[], None]
Effects = list[Effect]


def now_ms() -> float:
    return time.time() * 1000.0


@dataclass(frozen=True)
class ClientConfig:
    """The client's defaults; each ``infer`` may override the constraints.

    Attributes:
        model: the model to ask for when ``infer`` names none.
        deadline_s: time from ``infer`` to the answer, retries included.
        max_attempts: sends per request (the first one included).
        attempt_timeout_factor, attempt_timeout_margin_s, min_attempt_timeout_s: one
            attempt waits ``max(min, factor * expected latency + margin)``, the last
            one until the deadline; the expected latency is the larger of the plan's
            and the one observed lately (:func:`splitmq.client.routes.attempt_timeout_s`).
        plan_timeout_s: wait this long for the coordinator's plan. When a fresh plan
            for a retry does not come, the retry goes on with the plan it had.
        plan_ttl_s: ask again for a plan after this long, even if its epoch holds.
        max_in_flight: requests ``stream`` keeps in flight.
        resize_inputs: resize (and convert the channels of) images to the model's input.
        retry_on_offline: an attempt whose route meets an agent's will (offline) is
            retried at once, not at its timeout.
        stale_periods, min_stale_s: an agent whose telemetry is older than this many
            of its periods (at least ``min_stale_s``) counts as dead.
        top_k: classes kept in each record's ``top``.
        remember_finished: finished request ids kept to recognise late duplicates.
    """

    model: str | None = None
    deadline_s: float = 10.0
    max_attempts: int = 3
    attempt_timeout_factor: float = 3.0
    attempt_timeout_margin_s: float = 0.5
    min_attempt_timeout_s: float = 0.25
    plan_timeout_s: float = 5.0
    plan_ttl_s: float = 30.0
    max_in_flight: int = 32
    resize_inputs: bool = True
    retry_on_offline: bool = True
    stale_periods: float = 3.0
    min_stale_s: float = 1.0
    top_k: int = 5
    remember_finished: int = 10_000

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.max_in_flight < 1:
            raise ConfigError("max_attempts and max_in_flight must be at least 1")
        if min(self.deadline_s, self.plan_timeout_s, self.plan_ttl_s) <= 0:
            raise ConfigError("deadline_s, plan_timeout_s and plan_ttl_s must be above 0")


@dataclass(frozen=True)
class InferenceResult:
    """A request's answer.

    Attributes:
        outputs: the model's outputs by tensor name, in the model's output order.
        trace: one entry per stage: the agent that ran it, when, bytes, energy.
        record: the request as recorded (attempts, timing, bytes).
        plan: the plan the request was on when it was answered.
        quantization: ``(scale, zero_point)`` of the quantized outputs, by name.
        index: the input's position in :meth:`Client.stream`, else None.
    """

    outputs: dict[str, Array]
    trace: tuple[TraceEntry, ...]
    record: RequestRecord
    plan: Plan
    quantization: dict[str, tuple[float, int]] = field(default_factory=dict)
    index: int | None = None

    @property
    def latency_ms(self) -> float:
        return self.record.latency_ms

    def top(self, k: int = 5, output: str | None = None) -> tuple[tuple[int, float], ...]:
        """The ``k`` best ``(class, score)`` of an output (the first by default)."""
        name = output or next(iter(self.outputs))
        scale, zero_point = self.quantization.get(name, (None, None))
        return top_classes(self.outputs[name], k, scale, zero_point)


class _Phase(Enum):
    PLANNING = "waiting for a plan"
    DEPLOYMENT = "waiting for the plan's deployment"
    SENT = "sent"
    DONE = "done"


@dataclass(eq=False)
class _Request:
    """One request's state; only touched under the client's lock."""

    request_id: bytes
    key: PlanKey
    inputs: Inputs
    deadline_s: float
    deadline_ms: int
    run: str
    future: Future[InferenceResult] = field(default_factory=Future)
    sent_ms: float = field(default_factory=now_ms)
    phase: _Phase = _Phase.PLANNING
    plan: Plan | None = None
    route: Route = ()
    tensors: tuple[Tensor, ...] = ()
    fitted_for: tuple[str, int] | None = None
    outputs: tuple[str, ...] = ()
    attempt: int = -1
    attempt_sent_ms: float = 0.0
    attempts: list[AttemptRecord] = field(default_factory=list)
    knowledge: Knowledge = field(default_factory=Knowledge)
    bytes_sent: int = 0

    def close_attempt(self, outcome: str, message: str) -> None:
        route = routes.firsts(self.route)
        self.attempts.append(
            AttemptRecord(self.attempt, route, self.attempt_sent_ms, outcome, message)
        )
        self.phase = _Phase.PLANNING

    def record(self, *, ok: bool, **fields: Any) -> RequestRecord:
        plan = self.plan
        return RequestRecord(
            request_id=self.request_id.hex(),
            model=self.key.model,
            sent_ms=self.sent_ms,
            finished_ms=now_ms(),
            ok=ok,
            attempts=tuple(self.attempts),
            version=plan.version if plan else (self.key.version or ""),
            variant=plan.variant if plan else "",
            deployment=plan.deployment if plan else "",
            epoch=plan.epoch if plan else 0,
            bytes_sent=self.bytes_sent,
            predicted_latency_ms=plan.predicted_latency_ms if plan else None,
            predicted_energy_j=plan.predicted_energy_j if plan else None,
            run=self.run,
            **fields,
        )


class _Timers:
    """One thread calling functions at ``time.monotonic()`` times, soonest first."""

    def __init__(self, name: str):
        self._heap: list[tuple[float, int, Effect]] = []
        self._cond = threading.Condition()
        self._sequence = itertools.count()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def call_at(self, when_s: float, function: Effect) -> None:
        with self._cond:
            heapq.heappush(self._heap, (when_s, next(self._sequence), function))
            self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(5.0)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped and (not self._heap or self._heap[0][0] > time.monotonic()):
                    self._cond.wait(self._heap[0][0] - time.monotonic() if self._heap else None)
                if self._stopped:
                    return
                function = heapq.heappop(self._heap)[2]
            _apply([function])


class Client:
    """A connection to the fleet that runs inferences (see the module docstring).

    Args:
        broker: a broker URL (``mqtt://host:port``), a :class:`TransportConfig`, a
            :class:`Transport` (the client starts and closes it), or a
            :class:`MemoryBroker` (tests, demos).
        client_id: a topic level naming this client (default: the agent's id, else random).
        namespace: the topic prefix.
        config: defaults for every request.
        agent: run an agent named like the client (deployments may pin stages to it),
            on a transport of its own with its will.
        agent_transport: the agent's transport, needed when ``broker`` is a Transport.
        recorder: called with every finished request's :class:`RequestRecord`.
        on_telemetry: called with every agent's :class:`Telemetry` the client sees.
    """

    def __init__(
        self,
        broker: str | TransportConfig | Transport | MemoryBroker,
        client_id: str | None = None,
        *,
        namespace: str = t.DEFAULT_NAMESPACE,
        config: ClientConfig | None = None,
        agent: AgentConfig | None = None,
        agent_transport: Transport | None = None,
        recorder: Callable[[RequestRecord], None] | None = None,
        on_telemetry: Callable[[Telemetry], None] | None = None,
    ):
        self.config = config or ClientConfig()
        self.namespace = namespace
        if agent is not None and client_id not in (None, agent.agent_id):
            raise ConfigError(f"the client's agent must be named {client_id!r}, like the client")
        self.client_id = client_id or (
            agent.agent_id if agent else f"client-{uuid.uuid4().hex[:8]}"
        )
        try:
            t.check_segment("client id", self.client_id)
        except ValueError as error:
            raise ConfigError(str(error)) from None
        self.transport = _transport(broker, f"splitmq-client-{self.client_id}")
        self.agent = _agent(agent, broker, agent_transport, namespace) if agent else None
        self._recorder, self._on_telemetry = recorder, on_telemetry
        self._callback = t.RESULTS.name(namespace, client=self.client_id)
        self._lock = threading.Lock()
        self._start_lock = threading.Lock()
        self._requests: dict[bytes, _Request] = {}
        self._finished: OrderedDict[bytes, None] = OrderedDict()
        self._awaiting: dict[str, list[bytes]] = {}
        self._observed_ms: dict[str, float] = {}  # smoothed latency per deployment
        self._plans = PlanCache(self.config.plan_ttl_s)
        self._pending = PendingPlans(self.client_id)
        self._liveness = routes.Liveness(self.config.stale_periods, self.config.min_stale_s)
        self._timers = _Timers(f"client-{self.client_id}-timers")
        self._started = self._closed = False
        self.duplicates = 0
        """Results for a request already answered (a late attempt, a QoS 1 redelivery)."""
        self.unknown = 0
        """Results and errors for request ids this client does not know."""

    def start(self, timeout_s: float = 10.0) -> None:
        """Connect, subscribe, start the timer thread and the client's agent, if any."""
        with self._start_lock:  # held throughout: a second caller waits until it is done
            if self._started:
                return
            self.transport.start(timeout_s)
            ns = self.namespace
            for topic_filter, handler, row in (
                (self._callback, self._on_answer, t.RESULTS),
                (t.PLANS.name(ns, client=self.client_id), self._on_plan, t.PLANS),
                (t.DEPLOYMENTS.filter(ns), self._on_deployment, t.DEPLOYMENTS),
                (t.STATUS.filter(ns), self._on_status, t.STATUS),
                (t.TELEMETRY.filter(ns), self._on_telemetry_message, t.TELEMETRY),
            ):
                self.transport.subscribe(topic_filter, handler, qos=row.qos, timeout_s=timeout_s)
            self._timers.start()
            if self.agent is not None:
                self.agent.start(timeout_s)
            self._started = True

    def close(self) -> None:
        """Stop; requests still in flight fail with ``closed`` (none is lost silently)."""
        with self._start_lock:
            if self._closed:
                return
            self._closed = True

        def fail_all(effects: Effects) -> None:
            self._pending.take_all()
            for request in list(self._requests.values()):
                self._give_up(request, errors.CLOSED, "the client was closed", effects)

        self._locked(fail_all)
        if self.agent is not None:
            self.agent.stop()
        self.transport.close()
        self._timers.stop()

    def __enter__(self) -> Client:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @property
    def in_flight(self) -> int:
        with self._lock:
            return len(self._requests)

    def deployment(self, name: str) -> Deployment | None:
        """The latest deployment message seen for ``name`` (retained on ``deployments/+``)."""
        with self._lock:
            return self._plans.deployment(name)

    # -- the API ------------------------------------------------------------------------

    def infer(self, inputs: Inputs, **options: Any) -> InferenceResult:
        """Run one inference; raise :class:`InferenceError` (or a subclass) if it fails.

        Options are those of :meth:`infer_async`.
        """
        return self.infer_async(inputs, **options).result()

    def infer_async(
        self,
        inputs: Inputs,
        *,
        model: str | None = None,
        version: str | None = None,
        max_latency_ms: float | None = None,
        min_fidelity: float | None = None,
        energy_j: float | None = None,
        energy_level: EnergyLevel | str = EnergyLevel.BALANCED,
        deadline_s: float | None = None,
        run: str = "",
    ) -> Future[InferenceResult]:
        """Start one inference; the future holds its result or its :class:`InferenceError`.

        ``inputs``: one array, arrays in the model's input order, or a dict by input
        name. The constraints go to the planner; ``deadline_s`` (default
        ``config.deadline_s``) bounds the request, retries included; ``run`` labels
        its record.
        """
        if self._closed:
            raise base_errors.NotConnected(f"client {self.client_id} is closed")
        self.start()
        name = model or self.config.model
        if not name:
            raise ConfigError("no model: pass model=... or set ClientConfig.model")
        level = EnergyLevel(energy_level)
        key = PlanKey(name, version, max_latency_ms, min_fidelity, energy_j, level)
        wait_s = self.config.deadline_s if deadline_s is None else deadline_s
        deadline_ms = int(now_ms() + wait_s * 1000.0)
        request = _Request(os.urandom(16), key, inputs, time.monotonic() + wait_s, deadline_ms, run)
        request.future.set_running_or_notify_cancel()

        def begin(effects: Effects) -> None:
            self._requests[request.request_id] = request
            self._timers.call_at(request.deadline_s, partial(self._on_deadline, request.request_id))
            self._plan(request, fresh=False, effects=effects)

        self._locked(begin)
        return request.future

    def stream(
        self,
        inputs: Iterable[Inputs],
        *,
        ordered: bool = True,
        max_in_flight: int | None = None,
        **options: Any,
    ) -> Iterator[InferenceResult | InferenceError]:
        """Run many inferences, up to ``max_in_flight`` at once, pipelined through the stages.

        Yields one item per input: its :class:`InferenceResult`, or the
        :class:`InferenceError` it ended in (yielded, not raised: one failure never
        stops a stream). In input order when ``ordered``, else as they complete; each
        item's ``index`` is the input's position. Inputs are read lazily. Breaking out
        early leaves the requests in flight to finish (and be recorded) on their own.
        """
        limit = max_in_flight or self.config.max_in_flight
        source = iter(enumerate(inputs))
        window: deque[tuple[int, Future[InferenceResult]]] = deque()
        completed: queue.Queue[Future[InferenceResult]] = queue.Queue()
        while True:
            while len(window) < limit and (item := next(source, None)) is not None:
                future = self.infer_async(item[1], **options)
                future.add_done_callback(completed.put)
                window.append((item[0], future))
            if not window:
                return
            if ordered:
                index, future = window.popleft()
            else:
                done = completed.get()
                index, future = next(entry for entry in window if entry[1] is done)
                window.remove((index, future))
            yield _outcome(index, future)

    # -- plans ----------------------------------------------------------------------------

    def _plan(self, request: _Request, *, fresh: bool, effects: Effects) -> None:
        now = time.monotonic()
        plan = None if fresh else self._plans.get(request.key, now)
        if plan is not None:
            self._use_plan(request, plan, effects)
            return
        request.phase = _Phase.PLANNING
        pending = self._pending.join(request.key, request.request_id, now)
        if pending is not None:  # the first to wait for this key asks; the others join
            message = pending.key.request(pending.plan_request_id, self.client_id)
            effects.append(partial(self._publish, t.PLAN_REQUESTS.name(self.namespace), message))
            expire = partial(self._locked, partial(self._answer, pending.plan_request_id, None))
            self._timers.call_at(now + self.config.plan_timeout_s, expire)

    def _on_plan(self, message: InboundMessage) -> None:
        answer = _decoded(message, (Plan, PlanRefused))
        if answer is not None:
            self._locked(partial(self._answer, answer.request_id, answer))

    def _answer(
        self, plan_request_id: str, answer: Plan | PlanRefused | None, effects: Effects
    ) -> None:
        """The coordinator answered (or, ``None``, did not in time): on with the waiters."""
        pending = self._pending.take(plan_request_id)
        if pending is None:
            return
        if isinstance(answer, Plan):
            self._plans.put(pending.key, answer, time.monotonic())
        for request_id in pending.waiters:
            request = self._requests.get(request_id)
            if request is None or request.phase is not _Phase.PLANNING:
                continue
            if isinstance(answer, Plan):
                self._use_plan(request, answer, effects)
            elif isinstance(answer, PlanRefused):
                self._give_up(
                    request, errors.PLAN_REFUSED, answer.message, effects, answer.constraint
                )
            elif request.plan is not None:  # no fresh plan for a retry: go on with the old one
                self._send(request, self._route(request, request.plan), effects)
            else:
                reason = (
                    f"no plan within {self.config.plan_timeout_s:.1f} s: is a coordinator "
                    f"running on this broker, in namespace {self.namespace!r}?"
                )
                self._give_up(request, errors.NO_PLAN, reason, effects)

    def _use_plan(self, request: _Request, plan: Plan, effects: Effects) -> None:
        request.plan = plan
        deployment = self._plans.deployment(plan.deployment)
        if deployment is None:  # its retained message is on its way: wait (up to the deadline)
            request.phase = _Phase.DEPLOYMENT
            self._awaiting.setdefault(plan.deployment, []).append(request.request_id)
            return
        if request.fitted_for != (deployment.deployment, deployment.epoch):
            try:
                specs = deployment.stages[0].inputs
                request.tensors = fit_inputs(
                    request.inputs, specs, resize=self.config.resize_inputs
                )
            except InputError as error:
                self._give_up(request, errors.BAD_INPUT, str(error), effects)
                return
            request.fitted_for = (deployment.deployment, deployment.epoch)
            request.outputs = tuple(spec.name for spec in deployment.stages[-1].outputs)
        self._send(request, self._route(request, plan), effects)

    def _route(self, request: _Request, plan: Plan) -> Route:
        dead = self._liveness.dead(time.monotonic())
        return routes.choose_route(plan.route, request.knowledge, dead)[0]

    # -- attempts ------------------------------------------------------------------------

    def _send(self, request: _Request, route: Route, effects: Effects) -> None:
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
        request.attempt += 1
        request.route, request.phase, request.attempt_sent_ms = route, _Phase.SENT, now_ms()
        timeout_s = routes.attempt_timeout_s(
            plan.predicted_latency_ms,
            budget.remaining_s,
            observed_ms=self._observed_ms.get(plan.deployment),
            last=request.attempt + 1 >= self.config.max_attempts,
            factor=self.config.attempt_timeout_factor,
            margin_s=self.config.attempt_timeout_margin_s,
            minimum_s=self.config.min_attempt_timeout_s,
        )
        activation = Activation(
            request_id=request.request_id,
            attempt=request.attempt,
            deployment=plan.deployment,
            stage=0,
            route=route,
            callback=self._callback,
            deadline_ms=request.deadline_ms,
            tensors=request.tensors,
            client_id=self.client_id,
        )
        timeout = Failure(routes.TIMEOUT, f"no answer within {timeout_s:.2f} s")
        expire = partial(self._failed, request.request_id, request.attempt, timeout)
        self._timers.call_at(now + timeout_s, partial(self._locked, expire))
        effects.append(partial(self._publish_activation, request, activation, budget.remaining_s))

    def _publish_activation(
        self, request: _Request, activation: Activation, remaining_s: float
    ) -> None:
        agent_id = routes.firsts(activation.route)[0]
        topic = t.STAGE.name(
            self.namespace, deployment=activation.deployment, stage=0, agent=agent_id
        )
        try:
            payload = encode(activation)
            with self._lock:  # counted first: the answer may come before publish returns
                request.bytes_sent += len(payload)
            self.transport.publish(topic, payload, qos=t.STAGE.qos, expiry_s=remaining_s)
        except (TransportError, base_errors.EncodeError) as error:
            # too large for the broker, or not encodable: no other route does better
            final = isinstance(error, base_errors.PayloadTooLarge | base_errors.EncodeError)
            failure = Failure(
                errors.SEND_FAILED, f"cannot publish on {topic}: {error}", final=final
            )
            self._locked(partial(self._failed, request.request_id, activation.attempt, failure))

    def _on_deadline(self, request_id: bytes) -> None:
        def expire(effects: Effects) -> None:
            request = self._requests.get(request_id)
            if request is not None:
                reason = "the deadline passed"
                if request.phase is not _Phase.SENT:
                    reason += f" {request.phase.value}"
                self._give_up(request, errors.DEADLINE, reason, effects)

        self._locked(expire)

    def _failed(self, request_id: bytes, attempt: int, failure: Failure, effects: Effects) -> None:
        """Attempt ``attempt`` failed: retry, replan or give up (if it is the current one)."""
        request = self._requests.get(request_id)
        if request is None or request.phase is not _Phase.SENT or request.attempt != attempt:
            return  # answered already, or an attempt since superseded
        assert request.plan is not None
        plan, now = request.plan, time.monotonic()
        request.close_attempt(failure.outcome, failure.message)
        if failure.outcome in routes.REPLAN_CODES:
            self._plans.drop(plan.deployment)
        decision = routes.after_failure(
            request.route,
            plan.route,
            request.knowledge,
            failure,
            budget=routes.RetryBudget(
                request.attempt + 1,
                self.config.max_attempts,
                request.deadline_s - now,
                plan.predicted_latency_ms,
            ),
            dead=self._liveness.dead(now),
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

    # -- endings -------------------------------------------------------------------------

    def _on_answer(self, message: InboundMessage) -> None:
        answer = _decoded(message, (Result, ErrorMessage))
        if answer is not None:
            self._locked(partial(self._answered, answer, len(message.payload)))

    def _answered(self, answer: Result | ErrorMessage, size: int, effects: Effects) -> None:
        request = self._requests.get(answer.request_id)
        if request is None:
            if isinstance(answer, Result) and answer.request_id in self._finished:
                self.duplicates += 1
            elif answer.request_id not in self._finished:
                self.unknown += 1
        elif isinstance(answer, Result):
            self._succeed(request, answer, size, effects)
        else:
            where = f"stage {answer.stage} on {answer.agent_id}: {answer.message}"
            failure = Failure(str(answer.code), where, answer.stage, answer.agent_id)
            self._failed(request.request_id, answer.attempt, failure, effects)

    def _succeed(self, request: _Request, result: Result, size: int, effects: Effects) -> None:
        sent_ms = next((a.sent_ms for a in request.attempts if a.attempt == result.attempt), None)
        sent_ms = request.attempt_sent_ms if sent_ms is None else sent_ms
        if result.deployment:
            previous = self._observed_ms.get(result.deployment)
            self._observed_ms[result.deployment] = routes.smoothed(previous, now_ms() - sent_ms)
        if request.phase is _Phase.SENT and result.attempt == request.attempt:
            request.close_attempt("result", "")
        else:  # an earlier attempt answered after its timeout: the first result wins
            if request.phase is _Phase.SENT:
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
        answer = InferenceResult(outputs, result.trace, record, request.plan, quantization)
        self._complete(request, record, effects, partial(request.future.set_result, answer))

    def _give_up(
        self, request: _Request, code: str, reason: str, effects: Effects, constraint: str = ""
    ) -> None:
        if request.phase is _Phase.SENT:  # the attempt in flight ends with the request
            request.close_attempt(routes.TIMEOUT if code == errors.DEADLINE else code, reason)
        record = request.record(ok=False, error_code=code, error_message=reason)
        error: InferenceError
        if code == errors.PLAN_REFUSED:
            error = PlanRefusedError(record, constraint, reason)
        elif code == errors.DEADLINE:
            error = DeadlineError(record, reason)
        else:
            error = InferenceError(record, code, reason)
        self._complete(request, record, effects, partial(request.future.set_exception, error))

    def _complete(
        self, request: _Request, record: RequestRecord, effects: Effects, resolve: Effect
    ) -> None:
        if request.phase is _Phase.DEPLOYMENT and request.plan is not None:
            self._awaiting[request.plan.deployment].remove(request.request_id)
        request.phase = _Phase.DONE
        del self._requests[request.request_id]
        self._finished[request.request_id] = None
        while len(self._finished) > self.config.remember_finished:
            self._finished.popitem(last=False)
        if self._recorder is not None:
            effects.append(partial(self._recorder, record))
        effects.append(resolve)

    # -- the fleet -------------------------------------------------------------------------

    def _on_deployment(self, message: InboundMessage) -> None:
        deployment = _decoded(message, (Deployment,))
        if deployment is not None:
            self._locked(partial(self._deployed, deployment))

    def _deployed(self, deployment: Deployment, effects: Effects) -> None:
        if not self._plans.on_deployment(deployment):
            return
        for request_id in self._awaiting.pop(deployment.deployment, []):
            request = self._requests.get(request_id)
            if request is not None and request.phase is _Phase.DEPLOYMENT and request.plan:
                self._use_plan(request, request.plan, effects)

    def _on_status(self, message: InboundMessage) -> None:
        status = _decoded(message, (AgentStatus,))
        if status is not None:
            self._locked(partial(self._status, status))

    def _status(self, status: AgentStatus, effects: Effects) -> None:
        agent_id, online = status.agent_id, status.state is AgentState.ONLINE
        self._liveness.status(agent_id, online)
        if online or not self.config.retry_on_offline:
            return
        for request in list(self._requests.values()):
            on_route = routes.firsts(request.route)
            if request.phase is _Phase.SENT and agent_id in on_route:
                stage = on_route.index(agent_id)
                failure = Failure(routes.OFFLINE, f"agent {agent_id} went offline", stage, agent_id)
                self._failed(request.request_id, request.attempt, failure, effects)

    def _on_telemetry_message(self, message: InboundMessage) -> None:
        telemetry = _decoded(message, (Telemetry,))
        if telemetry is None:
            return
        age_s = max(0.0, now_ms() - telemetry.ts_ms) / 1000.0 if message.retain else 0.0
        with self._lock:
            seen_s = message.received_s - age_s
            self._liveness.telemetry(telemetry.agent_id, seen_s, telemetry.period_s)
        if self._on_telemetry is not None:
            _apply([partial(self._on_telemetry, telemetry)])

    # -- plumbing --------------------------------------------------------------------------

    def _locked(self, step: Callable[[Effects], None]) -> None:
        """Run ``step`` under the lock, then the effects it asked for, without it."""
        effects: Effects = []
        with self._lock:
            step(effects)
        _apply(effects)

    def _publish(self, topic: str, message: Message) -> None:
        try:
            self.transport.publish(topic, encode(message), qos=1)
        except TransportError as error:  # the wait for the answer expires and says so
            log.warning("could not publish %s on %s: %s", message.KIND, topic, error)


def _apply(effects: Effects) -> None:
    for effect in effects:
        try:
            effect()
        except Exception:
            log.exception("a client callback failed")


def _decoded(message: InboundMessage, kinds: tuple[type[Any], ...]) -> Any:
    if not message.payload:  # a retained message cleared
        return None
    try:
        return decode(message.payload, expect=kinds, topic=message.topic)
    except base_errors.DecodeError as error:
        log.warning("ignored a bad message: %s", error)
        return None


def _outcome(index: int, future: Future[InferenceResult]) -> InferenceResult | InferenceError:
    error = future.exception()
    if error is None:
        return replace(future.result(), index=index)
    if isinstance(error, InferenceError):
        error.index = index
        return error
    raise error


def _transport(broker: str | TransportConfig | Transport | MemoryBroker, mqtt_id: str) -> Transport:
    if isinstance(broker, MemoryBroker):
        return broker.transport(mqtt_id)
    if isinstance(broker, str):
        return MqttTransport(parse_broker_url(broker, client_id=mqtt_id))
    if isinstance(broker, TransportConfig):
        return MqttTransport(replace(broker, client_id=broker.client_id or mqtt_id))
    return broker


def _agent(
    config: AgentConfig,
    broker: str | TransportConfig | Transport | MemoryBroker,
    transport: Transport | None,
    namespace: str,
) -> Agent:
    from splitmq.agent import Agent, agent_will

    if config.namespace != namespace:
        raise ConfigError(
            f"the client's agent is in namespace {config.namespace!r}, not {namespace!r}"
        )
    mqtt_id, will = f"splitmq-agent-{config.agent_id}", agent_will(config)
    if transport is None and isinstance(broker, MemoryBroker):
        transport = broker.transport(mqtt_id, will=will)
    elif transport is None and isinstance(broker, str | TransportConfig):
        settings = parse_broker_url(broker) if isinstance(broker, str) else broker
        transport = MqttTransport(replace(settings, client_id=mqtt_id), will=will)
    elif transport is None:
        raise ConfigError("give agent_transport (made with agent_will) when broker is a Transport")
    return Agent(config, transport)
