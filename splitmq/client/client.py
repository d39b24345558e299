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
(:mod:`splitmq.client.routes` has the rules and the per-attempt timeout); a replica
that answers, but clearly slower than another of its stage, is routed around (the hop
times of the results' traces, :class:`~splitmq.client.routes.HopTimes`). The first
result for a request id wins, whichever attempt sent it; later ones are counted in
``duplicates``. Every request ends in a result or an
:class:`~splitmq.client.errors.InferenceError`, at the latest at its deadline.

Threads: the transport's inbox worker handles results, plans, deployments and agent
presence; one timer thread fires timeouts; decisions are taken under one lock and
their effects (publishing, the recorder, resolving futures) run after it is released.
The recorder is called once per finished request, before its future resolves.

This module is the API; :mod:`~splitmq.client.engine` (``RequestEngine``, which
``Client`` extends) takes the decisions: plans, attempts, retries and endings. Beside
them: :mod:`~splitmq.client.config` (``ClientConfig``),
:mod:`~splitmq.client.result` (``InferenceResult``), :mod:`~splitmq.client.request_state`
(one request's state and phases), :mod:`~splitmq.client.timers` (the timer thread and
the effects run outside the lock), :mod:`~splitmq.client.wiring` (the transports).
"""

from __future__ import annotations

import logging
import os
import queue
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from functools import partial
from typing import TYPE_CHECKING, Any

from splitmq import errors as base_errors
from splitmq.client import errors, routes
from splitmq.client.config import ClientConfig
from splitmq.client.engine import RequestEngine
from splitmq.client.errors import InferenceError
from splitmq.client.inputs import Inputs
from splitmq.client.plans import PlanKey
from splitmq.client.records import RequestRecord
from splitmq.client.request_state import RequestState, now_ms
from splitmq.client.result import InferenceResult
from splitmq.client.timers import Effects
from splitmq.client.wiring import client_agent, client_transport
from splitmq.errors import ConfigError
from splitmq.transport import MemoryBroker, Transport, TransportConfig
from splitmq.wire import (
    AgentStatus,
    Battery,
    Deployment,
    EnergyLevel,
    Telemetry,
)
from splitmq.wire import topics as t

if TYPE_CHECKING:
    from splitmq.agent import AgentConfig

__all__ = ["Client", "ClientConfig", "InferenceResult"]

log = logging.getLogger(__name__)


class Client(RequestEngine):
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
        if agent is not None and client_id not in (None, agent.agent_id):
            raise ConfigError(f"the client's agent must be named {client_id!r}, like the client")
        client_id = client_id or (agent.agent_id if agent else f"client-{uuid.uuid4().hex[:8]}")
        try:
            t.check_segment("client id", client_id)
        except ValueError as error:
            raise ConfigError(str(error)) from None
        super().__init__(
            client_transport(broker, f"splitmq-client-{client_id}"),
            client_id,
            namespace=namespace,
            config=config or ClientConfig(),
            recorder=recorder,
            on_telemetry=on_telemetry,
        )
        self.agent = client_agent(agent, broker, agent_transport, namespace) if agent else None

    def start(self, timeout_s: float = 10.0) -> None:
        """Connect, subscribe, start the timer thread and the client's agent, if any."""
        with self._start_lock:  # held throughout: a second caller waits until it is done
            if self._started:
                return
            self.transport.add_connection_listener(self._on_connection)
            self.transport.start(timeout_s)
            ns = self.namespace
            # answers handled on the network thread where allowed: one wake-up less each
            answer_now = self._answer_now if self.transport.fast_paths_may_block else None
            for topic_filter, handler, row, fast_path in (
                (self._callback, self._on_answer, t.RESULTS, answer_now),
                (t.PLANS.name(ns, client=self.client_id), self._on_plan, t.PLANS, None),
                (t.DEPLOYMENTS.filter(ns), self._on_deployment, t.DEPLOYMENTS, None),
                (t.STATUS.filter(ns), self._on_status, t.STATUS, None),
                (t.TELEMETRY.filter(ns), self._on_telemetry_message, t.TELEMETRY, None),
            ):
                self.transport.subscribe(
                    topic_filter, handler, qos=row.qos, timeout_s=timeout_s, fast_path=fast_path
                )
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

    def agent_status(self, agent_id: str) -> AgentStatus | None:
        """The agent's last online status (its architecture, runtime, kernels: what
        :mod:`splitmq.client.equality` needs), None before one arrived."""
        with self._lock:
            return self._statuses.get(agent_id)

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
        task: str | None = None,
        min_accuracy: float | None = None,
        client_battery: Battery | None = None,
        index: int | None = None,
    ) -> Future[InferenceResult]:
        """Start one inference; the future holds its result or its :class:`InferenceError`.

        ``inputs``: one array, arrays in the model's input order, or a dict by input
        name. The constraints go to the planner; ``deadline_s`` (default
        ``config.deadline_s``) bounds the request, retries included; ``run`` labels
        its record. ``task`` names a task instead of a model: the coordinator picks the
        member and variant (``result.plan.model``, ``.variant``, ``.accuracy``) within
        the budgets and ``min_accuracy``; ``client_battery`` tells it the client's
        charge (a low one moves the choice toward cheaper members). Plans are kept per
        constraints, the battery among them: pass it rounded (to 5 %, say). ``index``
        labels its result's (or error's) ``index``, as :meth:`stream` does each input's
        position.
        """
        if self._closed:
            raise base_errors.NotConnected(f"client {self.client_id} is closed")
        name = "" if task else (model or self.config.model or "")
        if task and model:
            raise ConfigError("name a model or a task, not both")
        if task and version:
            raise ConfigError(
                f"a version belongs to one model, and task {task}'s members each have their "
                "own: name the member (model=...) with its version, or leave the version out"
            )
        if not name and not task:
            raise ConfigError("no model: pass model=... (or task=...) or set ClientConfig.model")
        if min_accuracy is not None and not task:
            raise ConfigError(
                "min_accuracy chooses among a task's members: name the task (task=...), or "
                "bound one model's variants with min_fidelity"
            )
        self.start()
        level = energy_level if type(energy_level) is EnergyLevel else EnergyLevel(energy_level)
        key = PlanKey(
            name,
            version,
            max_latency_ms,
            min_fidelity,
            energy_j,
            level,
            task=task or None,
            min_accuracy=min_accuracy,
            client_battery=client_battery,
        )
        wait_s = self.config.deadline_s if deadline_s is None else deadline_s
        deadline_ms = int(now_ms() + wait_s * 1000.0)
        request = RequestState(
            os.urandom(16),
            key,
            inputs,
            deadline_s=time.monotonic() + wait_s,
            deadline_ms=deadline_ms,
            run=run,
            index=index,
        )
        request.future.set_running_or_notify_cancel()

        def begin(effects: Effects) -> None:
            self._made += 1
            request.probe = self._made % routes.PROBE_EVERY == 0
            self._requests[request.request_id] = request
            deadline = partial(self._on_deadline, request.request_id)
            request.timers.append(self._timers.call_at(request.deadline_s, deadline))
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
        window: deque[Future[InferenceResult]] = deque()  # each result carries its index
        completed: queue.SimpleQueue[Future[InferenceResult]] = queue.SimpleQueue()  # in C
        while True:
            while len(window) < limit and (item := next(source, None)) is not None:
                future = self.infer_async(item[1], index=item[0], **options)
                if not ordered:  # in order, the window's first is waited for: no queue
                    future.add_done_callback(completed.put)
                window.append(future)
            if not window:
                return
            if ordered:
                future = window.popleft()
            else:
                future = completed.get()
                window.remove(future)
            yield _outcome(future)


def _outcome(future: Future[InferenceResult]) -> InferenceResult | InferenceError:
    """A stream's item: its result, or the error it ended in (each with its ``index``)."""
    error = future.exception()
    if error is None:
        return future.result()
    if isinstance(error, InferenceError):
        return error
    raise error
