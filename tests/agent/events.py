"""Waiting for typed messages on topics (decoded), for the agent tests."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

from splitmq.transport import InboundMessage, Transport
from splitmq.wire import Message, ShardReady, decode, encode
from splitmq.wire.topics import COMMANDS, EVENTS

M = TypeVar("M", bound=Message)


class Inbox:
    """Decoded messages from one subscription, waited for with a timeout."""

    def __init__(self, transport: Transport, topic_filter: str):
        self.messages: list[tuple[str, Message]] = []
        self._cond = threading.Condition()
        transport.subscribe(topic_filter, self._on_message)

    def _on_message(self, message: InboundMessage) -> None:
        decoded = decode(message.payload)
        with self._cond:
            self.messages.append((message.topic, decoded))
            self._cond.notify_all()

    def wait_for(
        self,
        kind: type[M],
        where: Callable[[M], bool] = lambda _m: True,
        timeout_s: float = 15.0,
    ) -> M:
        def found() -> M | None:
            for _, message in self.messages:
                if isinstance(message, kind) and where(message):
                    return message
            return None

        with self._cond:
            if not self._cond.wait_for(lambda: found() is not None, timeout_s):
                seen = [type(m).__name__ for _, m in self.messages][-10:]
                raise AssertionError(f"no {kind.__name__} within {timeout_s} s; last: {seen}")
            result = found()
            assert result is not None
            return result

    def of(self, kind: type[M]) -> list[M]:
        with self._cond:
            return [m for _, m in self.messages if isinstance(m, kind)]


def command(transport: Transport, agent_id: str, message: Message) -> None:
    transport.publish(COMMANDS.name(agent=agent_id), encode(message)).wait(10)


def events(transport: Transport) -> Inbox:
    return Inbox(transport, EVENTS.filter())


def ready_for(command_id: str) -> Callable[[ShardReady], bool]:
    """A predicate: the ShardReady answering ``command_id``."""
    return lambda message: message.command_id == command_id
