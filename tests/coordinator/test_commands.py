"""Commands to agents: an agent that goes offline fails its pending commands at once."""

from __future__ import annotations

import threading
import time

from splitmq.coordinator.commands import CommandChannel
from splitmq.transport import MemoryBroker
from splitmq.wire import UnloadShard


def test_a_command_to_an_agent_that_goes_offline_fails_now_not_at_its_timeout() -> None:
    broker = MemoryBroker()
    transport = broker.transport("coordinator")
    transport.start()
    channel = CommandChannel(transport, "coordinator")
    commands = [
        ("pi", UnloadShard("c1", "coordinator", "d", 0)),
        ("phone", UnloadShard("c2", "coordinator", "d", 1)),
    ]
    threading.Timer(0.2, channel.agent_gone, args=("pi",)).start()
    threading.Timer(0.3, channel.agent_gone, args=("phone",)).start()
    started = time.monotonic()
    outcomes = channel.run(commands, timeout_s=30.0)
    assert time.monotonic() - started < 5.0
    assert [(o.agent_id, o.ok, o.reason) for o in outcomes] == [
        ("pi", False, "the agent went offline"),
        ("phone", False, "the agent went offline"),
    ]
    channel.agent_gone("pi")  # nothing pending: nothing happens
    transport.close()
