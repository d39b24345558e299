"""Commands to agents and their answers: send a load or unload, wait for the event.

The coordinator publishes :class:`LoadShard` / :class:`UnloadShard` on an agent's
``agents/{agent}/cmd`` topic and the agent answers on ``agents/{agent}/events`` with a
:class:`ShardReady` (loaded, benchmarked, serving) or a :class:`CommandReply` (done, or
failed with a reason). :class:`CommandChannel` matches answers to commands by id so a
deployer can send many loads at once and wait for all of them.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterable
from concurrent.futures import Future
from dataclasses import dataclass

from splitmq.errors import DecodeError, TransportError
from splitmq.transport import InboundMessage, Transport
from splitmq.wire import (
    CommandReply,
    LoadShard,
    Pong,
    ShardReady,
    UnloadShard,
)
from splitmq.wire.topics import COMMANDS, DEFAULT_NAMESPACE, EVENTS

Answer = ShardReady | CommandReply


@dataclass(frozen=True)
class Outcome:
    """How one command ended: ``answer`` is None when the agent never answered in time."""

    agent_id: str
    command: LoadShard | UnloadShard
    answer: Answer | None

    @property
    def ok(self) -> bool:
        if isinstance(self.answer, ShardReady):
            return True
        return isinstance(self.answer, CommandReply) and self.answer.ok

    @property
    def reason(self) -> str:
        if self.answer is None:
            return "no answer in time"
        if isinstance(self.answer, CommandReply) and not self.answer.ok:
            return self.answer.message
        return ""


class CommandChannel:
    """Sends commands as ``issuer`` and resolves them from the agents' events."""

    def __init__(self, transport: Transport, issuer: str, namespace: str = DEFAULT_NAMESPACE):
        self.transport = transport
        self.issuer = issuer
        self.namespace = namespace
        self._pending: dict[str, tuple[str, Future[Answer]]] = {}
        self._lock = threading.Lock()

    def new_id(self) -> str:
        return uuid.uuid4().hex[:16]

    def send(self, agent_id: str, command: LoadShard | UnloadShard) -> Future[Answer]:
        future: Future[Answer] = Future()
        with self._lock:
            self._pending[command.command_id] = (agent_id, future)
        try:
            COMMANDS.publish(self.transport, command, self.namespace, agent=agent_id)
        except TransportError as error:
            with self._lock:
                self._pending.pop(command.command_id, None)
            future.set_result(
                CommandReply(command.command_id, agent_id, ok=False, message=str(error))
            )
        return future

    def run(
        self, commands: Iterable[tuple[str, LoadShard | UnloadShard]], timeout_s: float
    ) -> list[Outcome]:
        """Send every command at once and wait (at most ``timeout_s``) for every answer."""
        sent = [(agent, command, self.send(agent, command)) for agent, command in commands]
        deadline = time.monotonic() + timeout_s
        outcomes = []
        for agent, command, future in sent:
            try:
                answer: Answer | None = future.result(max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                answer = None
            with self._lock:
                self._pending.pop(command.command_id, None)
            outcomes.append(Outcome(agent, command, answer))
        return outcomes

    def on_event(self, message: InboundMessage) -> ShardReady | CommandReply | Pong | None:
        """Feed an ``agents/+/events`` message; returns it decoded (None if malformed)."""
        try:
            event = EVENTS.decode(message.payload)
        except DecodeError:
            return None
        if isinstance(event, ShardReady | CommandReply):
            with self._lock:
                pending = self._pending.pop(event.command_id, None)
            if pending is not None and not pending[1].done():
                pending[1].set_result(event)
        return event

    def agent_gone(self, agent_id: str) -> None:
        """The agent went offline: its pending commands fail now, not at their timeout."""
        with self._lock:
            gone = [(cid, f) for cid, (a, f) in self._pending.items() if a == agent_id]
            for command_id, _ in gone:
                del self._pending[command_id]
        for command_id, future in gone:
            if not future.done():
                future.set_result(
                    CommandReply(command_id, agent_id, ok=False, message="the agent went offline")
                )
