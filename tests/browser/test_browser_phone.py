"""``splitmq demo --browser``'s phone: Debian's Chromium started headless on the agent
page by ``splitmq.web.phone`` (a plain process, no Playwright), joining the broker."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from splitmq.mosquitto import Mosquitto
from splitmq.transport import InboundMessage, MqttTransport, parse_broker_url
from splitmq.web.phone import browser_phone
from splitmq.wire import AgentState, AgentStatus, decode
from splitmq.wire.topics import STATUS

pytestmark = pytest.mark.integration


def test_the_headless_phone_comes_online_and_its_will_fires_when_it_stops(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    agent_id = f"demo-phone-{os.getpid()}"
    states: list[AgentState] = []
    changed = threading.Condition()

    def on_status(message: InboundMessage) -> None:
        if message.payload:
            with changed:
                states.append(decode(message.payload, expect=AgentStatus).state)
                changed.notify_all()

    said: list[str] = []
    config = parse_broker_url(mosquitto.url(), client_id=f"watch-{agent_id}")
    with MqttTransport(config) as watcher:
        watcher.subscribe(STATUS.name(agent=agent_id), on_status)
        broker = parse_broker_url(mosquitto.url())
        with browser_phone(broker, tmp_path, tmp_path, say=said.append, agent_id=agent_id) as phone:
            assert phone is not None and phone.agent_id == agent_id, said
            with changed:
                assert changed.wait_for(lambda: AgentState.ONLINE in states, 90), said
        # Stopping the browser ends the page: offline, said by the page or by its will.
        with changed:
            assert changed.wait_for(lambda: states[-1] is AgentState.OFFLINE, 30), states
        watcher.publish(STATUS.name(agent=agent_id), b"", retain=True).wait(10)
    assert any("headless" in line for line in said)
