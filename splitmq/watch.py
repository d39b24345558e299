"""One watcher of the fleet's topics, for the demo, the tests, the benchmarks and the soak.

A :class:`Watcher` subscribes a transport to topics of the table (retained ones give
their last message at once), decodes what arrives and keeps it: every message with its
topic and arrival time, and the latest state by key — each agent's status and
telemetry, each deployment at its highest epoch, each answer (plan, refusal, deploy
reply) by request id. Callers wait for what they need with a timeout::

    watcher = Watcher(transport).watch(STATUS).watch(DEPLOYMENTS)
    watcher.wait(lambda: watcher.online("rpi-1"), 30, "rpi-1 online")
    deployment = watcher.wait_for(Deployment, lambda d: d.epoch > 3)

A cleared retained message (an empty payload) is skipped. Anyone on the broker may
publish on the topics watched: what is not a message of the topic's types (or, on a
filter given by :meth:`Watcher.subscribe`, not a message at all) is one warning line
naming the topic and the reason, is counted in :attr:`Watcher.undecodable`, and the
watcher keeps watching.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Self, TypeVar

from splitmq.errors import DecodeError
from splitmq.transport import InboundMessage, Transport
from splitmq.wire import (
    AgentState,
    AgentStatus,
    Deployment,
    DeployReply,
    Message,
    Plan,
    PlanRefused,
    Telemetry,
    decode,
)
from splitmq.wire.topics import DEFAULT_NAMESPACE, Topic

__all__ = ["Received", "Watcher"]

log = logging.getLogger(__name__)

M = TypeVar("M", bound=Message)
Answer = Plan | PlanRefused | DeployReply


@dataclass(frozen=True)
class Received:
    """One decoded message: where it came from and when (``time.monotonic()``)."""

    topic: str
    message: Message
    arrived_s: float


class Watcher:
    """Decoded messages from a transport's subscriptions, waited for with a timeout.

    Attributes:
        received: every message kept, in arrival order.
        status, telemetry: the latest of each agent, by agent id.
        deployments: each deployment at the highest epoch heard, by name.
        answers: plans, refusals and deploy replies, by request id.
        undecodable: payloads that were not a splitmq message.
    """

    def __init__(self, transport: Transport, namespace: str = DEFAULT_NAMESPACE):
        self.transport = transport
        self.namespace = namespace
        self.received: list[Received] = []
        self.status: dict[str, AgentStatus] = {}
        self.telemetry: dict[str, Telemetry] = {}
        self.deployments: dict[str, Deployment] = {}
        self.answers: dict[str, Answer] = {}
        self.undecodable = 0
        self._cond = threading.Condition()

    # -- subscribing --------------------------------------------------------------------

    def watch(self, row: Topic[Any], **params: str | int) -> Self:
        """Subscribe to ``row`` (parameters not given match anything) in the namespace;
        only the row's message types are taken."""
        handler = partial(self._receive, row.decode)
        self.transport.subscribe(row.filter(self.namespace, **params), handler, qos=row.qos)
        return self

    def subscribe(self, topic_filter: str, qos: int = 1) -> Self:
        """Subscribe to any filter (a shared one, another namespace...): any message."""
        self.transport.subscribe(topic_filter, self, qos=qos)
        return self

    def __call__(self, message: InboundMessage) -> None:
        self._receive(decode, message)

    def _receive(self, decoder: Callable[..., Message], message: InboundMessage) -> None:
        if not message.payload:
            return
        try:
            decoded = decoder(message.payload, topic=message.topic)
        except DecodeError as error:
            log.warning("ignored a bad message on %s: %s", message.topic, error)
            with self._cond:
                self.undecodable += 1
            return
        with self._cond:
            self.received.append(Received(message.topic, decoded, time.monotonic()))
            self._keep_latest(decoded)
            self._cond.notify_all()

    def _keep_latest(self, message: Message) -> None:
        match message:
            case AgentStatus():
                self.status[message.agent_id] = message
            case Telemetry():
                self.telemetry[message.agent_id] = message
            case Deployment():
                known = self.deployments.get(message.deployment)
                if known is None or message.epoch >= known.epoch:
                    self.deployments[message.deployment] = message
            case Plan() | PlanRefused() | DeployReply():
                self.answers[message.request_id] = message
            case _:
                pass

    # -- reading and waiting --------------------------------------------------------------

    def online(self, agent_id: str) -> bool:
        """Whether the agent's latest status says online."""
        status = self.status.get(agent_id)
        return status is not None and status.state is AgentState.ONLINE

    def of(self, kind: type[M]) -> list[M]:
        """Every message of ``kind`` kept, in arrival order."""
        with self._cond:
            return [r.message for r in self.received if isinstance(r.message, kind)]

    def wait(self, predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
        """Until ``predicate()`` (called under the watcher's lock) holds.

        Raises:
            TimeoutError: it did not within ``timeout_s``; the message names ``what``.
        """
        with self._cond:
            if not self._cond.wait_for(predicate, timeout_s):
                raise TimeoutError(f"timed out after {timeout_s} s waiting for {what}")

    def wait_for(
        self,
        kind: type[M],
        where: Callable[[M], bool] = lambda _m: True,
        timeout_s: float = 30.0,
    ) -> M:
        """The first message of ``kind`` kept (or yet to come) for which ``where`` holds.

        Raises:
            TimeoutError: none within ``timeout_s``; the message lists the last kinds heard.
        """

        def found() -> M | None:
            for received in self.received:
                if isinstance(received.message, kind) and where(received.message):
                    return received.message
            return None

        with self._cond:
            if not self._cond.wait_for(lambda: found() is not None, timeout_s):
                heard = [type(r.message).__name__ for r in self.received[-10:]]
                raise TimeoutError(f"no {kind.__name__} within {timeout_s} s; last: {heard}")
            result = found()
            assert result is not None  # found under the same lock
            return result

    def wait_answer(self, request_id: str, timeout_s: float) -> Answer:
        """The plan, refusal or deploy reply to ``request_id``."""
        self.wait(lambda: request_id in self.answers, timeout_s, f"an answer to {request_id}")
        return self.answers[request_id]

    def forget(self) -> None:
        """Forget everything heard: what is waited for next must be heard again."""
        with self._cond:
            self.received.clear()
            self.status.clear()
            self.telemetry.clear()
            self.deployments.clear()
            self.answers.clear()
