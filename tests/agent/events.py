"""Waiting for typed messages on topics (decoded), for the agent tests."""

from __future__ import annotations

from collections.abc import Callable

from splitmq.transport import Transport
from splitmq.watch import Watcher
from splitmq.wire import CommandReply, Message, ShardReady
from splitmq.wire.topics import COMMANDS, EVENTS


class Inbox(Watcher):
    """Decoded messages from one subscription, waited for with a timeout."""

    def __init__(self, transport: Transport, topic_filter: str):
        super().__init__(transport)
        self.subscribe(topic_filter)


def command(transport: Transport, agent_id: str, message: Message) -> None:
    COMMANDS.publish(transport, message, agent=agent_id).wait(10)  # type: ignore[arg-type]


def events(transport: Transport) -> Inbox:
    return Inbox(transport, EVENTS.filter())


def ready_for(command_id: str) -> Callable[[ShardReady], bool]:
    """A predicate: the ShardReady answering ``command_id``."""
    return lambda message: message.command_id == command_id


def reply_to(command_id: str) -> Callable[[CommandReply], bool]:
    """A predicate: the CommandReply answering ``command_id``."""
    return lambda message: message.command_id == command_id
