"""The agent's stage workers: one thread per hosted stage takes its requests from the
stage's bounded queue, checks them, invokes the shard, and forwards the outputs to the
next stage (in-process when this agent hosts it too) or answers on the callback topic.
Whatever a request meets on the way becomes an error message on its callback topic."""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from splitmq.agent.join import Joins, fan_out, fan_out_topics, is_join, seen_key
from splitmq.agent.requests import (
    Arrival,
    Job,
    RequestFailed,
    checked_inputs,
    error_for,
    is_callback,
    now_ms,
    salvage,
    stage_key,
)
from splitmq.errors import DecodeError
from splitmq.transport import InboundMessage
from splitmq.wire import (
    Activation,
    ErrorCode,
    ErrorMessage,
    Result,
    StageEdge,
    Tensor,
    TraceEntry,
    encode_parts,
    hop,
)
from splitmq.wire.hop import Hop
from splitmq.wire.topics import RESULTS, STAGE, hop_topic

if TYPE_CHECKING:
    from splitmq.agent.agent import Agent, _HostedStage

log = logging.getLogger(__name__)

A = TypeVar("A", Hop, Activation)
"""A request on its way: a :class:`Hop` (a chain's fast path) or a whole
:class:`Activation` (a stage of a stage graph)."""

TOPICS_REMEMBERED = 1024
"""Stage topics whose parse is remembered (a request's topic is parsed once per topic,
not once per request, on the network thread)."""


class StageWorkers:
    """The request path of one :class:`~splitmq.agent.Agent` (see the module docstring)."""

    def __init__(self, agent: Agent):
        self.agent = agent
        self.joins = Joins(
            agent.agent_id,
            wait_ms=agent.config.join_wait_ms,
            max_bytes=agent.config.join_max_bytes,
            report=self._send_to_callback,
            stopping=agent.stopping,
        )
        self._topics: dict[str, tuple[str, int] | None] = {}
        """Stage topics already parsed, by name (:data:`TOPICS_REMEMBERED` at most)."""
        self._hops: dict[tuple[str, str, int, str | None, int], str | None] = {}
        """Next hops already checked and rendered (:meth:`_next_hop`), for ``_hops_sites``."""
        self._hops_sites: dict[str, str] = agent.sites.sites
        self._agent_id: str = agent.agent_id
        """The agent's id (read per hop: the agent's property is interpreted code)."""

    def _hosted_for(self, message: InboundMessage) -> _HostedStage | None:
        topic = message.topic
        try:  # one lookup: the network thread and the inbox worker both come here
            where = self._topics[topic]
        except KeyError:
            params = STAGE.parse(topic, self.agent._ns)
            where = None
            if params is not None and params["stage"].isdigit():
                where = (params["deployment"], int(params["stage"]))
            if len(self._topics) >= TOPICS_REMEMBERED:
                self._topics.clear()
            self._topics[topic] = where
        if where is None:
            return None
        with self.agent._stages_lock:
            return self.agent._stages.get(where)

    def enqueue(self, message: InboundMessage) -> bool:
        """On the transport's network thread: hand a request straight to its stage's worker.

        It only enqueues; anything else (a full queue, a stage not hosted) is declined
        and reaches :meth:`_on_stage` on the inbox worker, which may publish errors.
        """
        hosted = self._hosted_for(message)
        if hosted is None:
            return False
        try:
            hosted.queue.put_nowait(Job(message, now_ms()))
        except queue.Full:
            return False
        return True

    def on_stage(self, message: InboundMessage) -> None:
        """Route an activation to its stage's queue; refuse at once what cannot be served."""
        received = now_ms()
        hosted = self._hosted_for(message)
        if hosted is not None:
            try:
                hosted.queue.put_nowait(Job(message, received))
            except queue.Full:
                self._refuse(
                    message,
                    ErrorCode.OVERLOADED,
                    f"stage {hosted.key} on {self.agent.agent_id} has "
                    f"{self.agent.config.queue_size} requests waiting: try a fallback replica",
                )
            return
        try:
            activation = STAGE.decode(message.payload, topic=message.topic)
        except DecodeError as error:
            self._refuse(message, ErrorCode.BAD_MESSAGE, str(error))
            return
        code, reason = self._why_not_served(activation.deployment, activation.stage)
        self._send_error(activation, code, reason)

    def _why_not_served(self, deployment: str, stage: int) -> tuple[ErrorCode, str]:
        with self.agent._stages_lock:
            known = {d for d, _ in self.agent._stages} | {d for d, _ in self.agent._loading}
            loading = (deployment, stage) in self.agent._loading
        if deployment not in known:
            return (
                ErrorCode.UNKNOWN_DEPLOYMENT,
                f"agent {self.agent.agent_id} hosts nothing of deployment {deployment!r}: the "
                "plan is stale; ask the coordinator for a new one",
            )
        state = "is still loading" if loading else "is not loaded"
        return (
            ErrorCode.SHARD_NOT_LOADED,
            f"stage {stage} of {deployment!r} {state} on agent {self.agent.agent_id}",
        )

    def run(self, hosted: _HostedStage) -> None:
        while True:
            job = hosted.queue.get()
            if job is None:
                return
            try:
                self.process(hosted, job)
            except Exception as error:  # a bug must not kill the stage: tell the requester
                log.exception("stage %s failed on a request", hosted.key)
                self._refuse(job.message, ErrorCode.INTERNAL, f"internal error: {error}")

    def process(self, hosted: _HostedStage, job: Job) -> None:
        if hosted.sources is not None or hosted.targets is not None:
            self._process_graph(hosted, job)  # a stage of a stage graph (Plan 2)
            return
        payload = job.message.payload
        try:  # the fast path; a payload another encoder laid out is decoded the general way
            activation = hop.read(payload)
        except DecodeError:
            activation = None  # the general decoder decides, and says what is wrong
        if activation is None:
            try:
                activation = Hop.of(STAGE.decode(payload, topic=job.message.topic))
            except DecodeError as error:
                self._refuse(job.message, ErrorCode.BAD_MESSAGE, str(error))
                return
        if self._misaddressed(hosted, activation):
            return
        bytes_in = len(payload)
        self.agent.energy.spend_radio(bytes_in)
        self._serve(
            hosted,
            activation,
            Arrival(job.received_ms, bytes_in, job.message.qos),
            key=_hop_key,
            compute=self._compute,
        )

    def _misaddressed(self, hosted: _HostedStage, activation: Hop | Activation) -> bool:
        """Whether the request names another stage than the one whose topic it came on
        (it is then answered with an error)."""
        if (activation.deployment, activation.stage) == (hosted.deployment, hosted.stage):
            return False
        self._send_error(
            activation,
            ErrorCode.BAD_MESSAGE,
            f"sent to stage {hosted.key} but addressed to "
            f"{stage_key(activation.deployment, activation.stage)}",
        )
        return True

    def _serve(
        self,
        hosted: _HostedStage,
        current: A,
        arrival: Arrival,
        *,
        key: Callable[[A], tuple[bytes, int, int]],
        compute: Callable[[_HostedStage, A, Arrival], tuple[A, _HostedStage] | None],
    ) -> None:
        """Run a request through this stage, and on through the next ones hosted here;
        each (request, stage, attempt) once."""
        while True:
            if not self.agent._seen.first_time(key(current)):
                self.agent.counters.add("duplicates")
                log.debug("duplicate of %s at stage %d", current.request_id.hex(), current.stage)
                return
            try:
                following = compute(hosted, current, arrival)
            except RequestFailed as failure:
                self._send_error(current, failure.code, str(failure))
                return
            if following is None:
                return
            current, hosted = following
            arrival = Arrival(now_ms(), 0, arrival.qos)

    def _compute(
        self, hosted: _HostedStage, activation: Hop, arrival: Arrival
    ) -> tuple[Hop, _HostedStage] | None:
        """Run one stage; forward, answer, or hand back the next stage hosted here."""
        self._check_deadline(activation)
        next_topic = self._next_hop(activation)  # nothing is computed for nowhere
        received_ms = arrival.received_ms
        outputs, fields = self._run_shard(hosted, activation, received_ms, arrival.bytes_in)
        entry = hop.trace_entry(**fields)
        if next_topic is None:  # the last stage
            answer = hop.result_parts(activation, outputs, entry, self._agent_id)
            self._held(hosted, received_ms)
            self._send_to_callback(activation, answer, ok=True, qos=arrival.qos)
            hosted.free_ms = now_ms()
            return None
        next_stage = activation.stage + 1
        if activation.route[next_stage][0] == self._agent_id:
            with self.agent._stages_lock:
                local = self.agent._stages.get((activation.deployment, next_stage))
            if local is not None:  # in-process: no broker hop
                self._held(hosted, received_ms)
                return activation.following(outputs, entry), local
        forward = hop.forward_parts(activation, outputs, entry)
        self._held(hosted, received_ms)
        deadline_ms = activation.deadline_ms
        self.agent.link.send(STAGE, next_topic, forward, deadline_ms=deadline_ms, qos=arrival.qos)
        hosted.free_ms = now_ms()
        return None

    def _check_deadline(self, activation: Hop | Activation) -> None:
        """Nothing is computed for a request past its deadline."""
        if activation.deadline_ms and now_ms() > activation.deadline_ms:
            late = now_ms() - activation.deadline_ms
            raise RequestFailed(
                ErrorCode.DEADLINE_EXCEEDED,
                f"arrived at stage {activation.stage} on {self.agent.agent_id} {late:.0f} ms "
                "after its deadline",
            )

    def _run_shard(
        self, hosted: _HostedStage, activation: Hop | Activation, received_ms: float, bytes_in: int
    ) -> tuple[tuple[Tensor, ...], dict[str, Any]]:
        """Check the inputs and run the shard: its outputs, and this stage's trace entry's
        fields (as :class:`TraceEntry` and :func:`hop.trace_entry` take them)."""
        arrays = checked_inputs(hosted.inputs, activation.tensors)
        started = now_ms()
        outputs, compute_s = self._invoke(hosted, arrays)
        finished = now_ms()
        self.agent.energy.spend_compute(compute_s)
        bytes_out = sum(tensor.array.nbytes for tensor in outputs)
        return outputs, {
            "stage": activation.stage,
            "agent_id": self._agent_id,
            "received_ms": received_ms,
            "started_ms": started,
            "finished_ms": finished,
            "bytes_in": bytes_in,
            "attempt": activation.attempt,
            "bytes_out": bytes_out,
            "energy_j": self.agent.energy.stage_energy_j(compute_s, bytes_in + bytes_out),
        }

    def _invoke(
        self, hosted: _HostedStage, arrays: dict[str, np.ndarray]
    ) -> tuple[tuple[Tensor, ...], float]:
        """Run the shard: its outputs, and the compute time (the emulated device's, which
        it also waits out, when the profile is slower than this machine)."""
        cpu_s = time.thread_time()
        outputs, invoke_s = hosted.shard.run(arrays)
        if self.agent.link.compute_factor <= 1:
            return outputs, invoke_s
        cpu_s = time.thread_time() - cpu_s
        compute_s = self.agent.link.device_s(invoke_s, cpu_s, hosted.shard.threads)
        time.sleep(compute_s - invoke_s)
        return outputs, compute_s

    # -- a stage of a stage graph: whole messages (joins and fan-out are rare) ----------

    def _process_graph(self, hosted: _HostedStage, job: Job) -> None:
        try:
            activation = STAGE.decode(job.message.payload, topic=job.message.topic)
        except DecodeError as error:
            self._refuse(job.message, ErrorCode.BAD_MESSAGE, str(error))
            return
        if self._misaddressed(hosted, activation):
            return
        current, bytes_in = activation, len(job.message.payload)
        self.agent.energy.spend_radio(bytes_in)
        sources = hosted.sources
        if sources is not None and is_join(sources):  # wait for every branch (agent.join)
            try:
                joined = self.joins.offer(sources, current, bytes_in)
            except RequestFailed as failure:
                self._send_error(current, failure.code, str(failure))
                return
            if joined is None:
                return
            current = joined
        arrival = Arrival(job.received_ms, bytes_in, job.message.qos)
        self._serve(hosted, current, arrival, key=seen_key, compute=self._compute_graph)

    def _compute_graph(
        self, hosted: _HostedStage, activation: Activation, arrival: Arrival
    ) -> tuple[Activation, _HostedStage] | None:
        """Run one stage of a stage graph; send each target its share, answer, or hand
        back the next stage hosted here."""
        self._check_deadline(activation)
        targets = hosted.targets
        # nothing is computed for nowhere
        next_topic = self._next_hop(activation) if targets is None else None
        topics = None if targets is None else self._fan_out_topics(activation, targets)
        received_ms, qos = arrival.received_ms, arrival.qos
        outputs, fields = self._run_shard(hosted, activation, received_ms, arrival.bytes_in)
        trace = (*activation.trace, TraceEntry(**fields))
        self._held(hosted, received_ms)
        if targets is not None and topics is not None:  # a stage graph: each target its share
            sent = fan_out(
                activation, targets, topics, outputs, trace=trace, agent_id=self.agent.agent_id
            )
            for out in sent:
                payload = encode_parts(out.message)
                if isinstance(out.message, Result):
                    self._send_to_callback(activation, payload, ok=True, qos=qos)
                else:
                    deadline = activation.deadline_ms
                    self.agent.link.send(STAGE, out.topic, payload, deadline_ms=deadline, qos=qos)
            hosted.free_ms = now_ms()
            return None
        next_stage = activation.stage + 1
        if next_topic is None:  # the last stage
            result = Result(
                request_id=activation.request_id,
                attempt=activation.attempt,
                deployment=activation.deployment,
                tensors=outputs,
                trace=trace,
                agent_id=self.agent.agent_id,
            )
            self._send_to_callback(activation, encode_parts(result), ok=True, qos=qos)
            hosted.free_ms = now_ms()
            return None
        forward = Activation(
            request_id=activation.request_id,
            attempt=activation.attempt,
            deployment=activation.deployment,
            stage=next_stage,
            route=activation.route,
            callback=activation.callback,
            deadline_ms=activation.deadline_ms,
            tensors=outputs,
            trace=trace,
            client_id=activation.client_id,
        )
        if activation.route[next_stage][0] == self.agent.agent_id:
            with self.agent._stages_lock:
                local = self.agent._stages.get((activation.deployment, next_stage))
            if local is not None:
                return forward, local  # in-process: no broker hop
        self.agent.link.send(
            STAGE, next_topic, encode_parts(forward), deadline_ms=activation.deadline_ms, qos=qos
        )
        hosted.free_ms = now_ms()
        return None

    def _fan_out_topics(
        self, activation: Activation, targets: tuple[StageEdge, ...]
    ) -> dict[int, str]:
        if not is_callback(activation.callback, self.agent._ns):
            raise RequestFailed(
                ErrorCode.BAD_MESSAGE, f"the callback {activation.callback!r} is not a result topic"
            )
        return fan_out_topics(
            activation,
            targets,
            namespace=self.agent._ns,
            sites=self.agent.sites.sites,
            here=self.agent.config.site,
        )

    @staticmethod
    def _held(hosted: _HostedStage, received_ms: float) -> None:
        """A request is ready to leave the stage: count the time it held the stage in
        ``compute_ms`` (what the planner counts per stage and per queued request).

        From its arrival, or the worker's previous request's end when it had to queue
        behind it, to its output encoded: the hand-off to the worker, decoding, checks,
        the shard (slowed down as the profile says), encoding. Its queueing is left
        out (the planner counts it from the queue depth) and so is its send (the
        planner counts the link and the broker hop)."""
        now = now_ms()
        hosted.held.add(now - max(received_ms, hosted.free_ms))
        hosted.free_ms = now  # the send, if any, moves it on

    def _next_hop(self, activation: Hop | Activation) -> str | None:
        """The next stage's topic (None after the last stage), checked before computing.

        Remembered by what it depends on (a client's requests repeat their callback and
        route): a request then costs one lookup here instead of parsing its callback and
        rendering a topic. What fails is not remembered: it raises each time."""
        route, next_stage = activation.route, activation.stage + 1
        first = route[next_stage][0] if next_stage < len(route) and route[next_stage] else None
        key = (activation.callback, activation.deployment, next_stage, first, len(route))
        sites = self.agent.sites.sites  # replaced whole when a deployment moves an agent
        if sites is not self._hops_sites:
            self._hops_sites, self._hops = sites, {}
        try:
            return self._hops[key]
        except KeyError:
            pass
        topic = self._checked_next_hop(activation)
        if len(self._hops) >= TOPICS_REMEMBERED:
            self._hops = {}
        self._hops[key] = topic
        return topic

    def _checked_next_hop(self, activation: Hop | Activation) -> str | None:
        if not is_callback(activation.callback, self.agent._ns):
            raise RequestFailed(
                ErrorCode.BAD_MESSAGE, f"the callback {activation.callback!r} is not a result topic"
            )
        next_stage = activation.stage + 1
        if next_stage >= len(activation.route):
            return None
        candidates = activation.route[next_stage]
        if not candidates:
            raise RequestFailed(
                ErrorCode.BAD_MESSAGE, f"the route names no agent for stage {next_stage}"
            )
        try:
            return hop_topic(
                self.agent._ns,
                deployment=activation.deployment,
                stage=next_stage,
                agent=candidates[0],
                sites=self.agent.sites.sites,
                here=self.agent.config.site,
            )
        except ValueError as error:
            raise RequestFailed(ErrorCode.BAD_MESSAGE, f"bad route: {error}") from None

    def _send_to_callback(
        self,
        activation: Hop | Activation,
        message: ErrorMessage | list[bytes | bytearray | memoryview],
        *,
        ok: bool = False,
        qos: int | None = None,
    ) -> None:
        """Send an error, or (``ok``) a result's encoded parts, on the request's callback:
        a result at ``qos`` (the QoS its hops came at), an error at the topic's own."""
        kind = "result" if ok else "error"
        if not is_callback(activation.callback, self.agent._ns):
            self.agent.counters.add("unroutable")
            log.warning(
                "request %s: callback %r is not a result topic; dropped its %s",
                activation.request_id.hex(),
                activation.callback,
                kind,
            )
            return
        payload = message if isinstance(message, list) else encode_parts(message)
        try:
            self.agent.link.send(RESULTS, activation.callback, payload, deadline_ms=0, qos=qos)
        except RequestFailed as failure:
            if not ok:
                self.agent.counters.add("unroutable")
                log.error("could not report an error on %s: %s", activation.callback, failure)
                return
            error = error_for(activation, self.agent.agent_id, failure.code, str(failure))
            self._send_to_callback(activation, error)
            return
        self.agent.counters.add("results_sent" if ok else "errors_sent")

    def _send_error(self, activation: Hop | Activation, code: ErrorCode, reason: str) -> None:
        log.info(
            "request %s stage %d: %s: %s",
            activation.request_id.hex(),
            activation.stage,
            code,
            reason,
        )
        self._send_to_callback(activation, error_for(activation, self.agent.agent_id, code, reason))

    def _refuse(self, message: InboundMessage, code: ErrorCode, reason: str) -> None:
        """Answer a message we cannot (fully) decode, from whatever of it can be read."""
        salvaged = salvage(message.payload)
        if salvaged is None:
            self.agent.counters.add("unroutable")
            log.warning(
                "dropped a message on %s (%s: %s): no callback", message.topic, code, reason
            )
            return
        self._send_error(salvaged, code, reason)


def _hop_key(activation: Hop) -> tuple[bytes, int, int]:
    """What a chain's stage de-duplicates on: (request, stage, attempt)."""
    return (activation.request_id, activation.stage, activation.attempt)
