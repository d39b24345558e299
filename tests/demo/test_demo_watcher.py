"""The demo's own watcher (its operator connection) against strangers' garbage.

Anyone on the broker may publish on ``deployments/+``, ``agents/+/status`` or the
operator's reply topic: each bad message is one warning line naming the topic and the
reason, never a traceback, and the watcher keeps watching.
"""

from __future__ import annotations

import logging
import uuid

import pytest

from splitmq.demo.scenario import OPERATOR, Control
from splitmq.mosquitto import Mosquitto
from splitmq.transport import MqttTransport, parse_broker_url
from splitmq.wire import AgentState, AgentStatus, Ping, encode
from splitmq.wire.topics import DEPLOY_REPLIES, DEPLOYMENTS, STATUS
from tests.helpers import wait_until

pytestmark = pytest.mark.integration


def test_one_line_per_bad_message_and_the_watcher_keeps_watching(
    mosquitto: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    tag = uuid.uuid4().hex[:8]
    config = parse_broker_url(mosquitto.url(), client_id=f"demo-watch-{tag}")
    control = Control(config, config)
    control.start()
    bad = {
        STATUS.name(agent=f"stranger-{tag}"): b"\xffnot cbor",
        DEPLOYMENTS.name(deployment=f"stranger-{tag}"): encode(Ping("p", "stranger", 0.0)),
        DEPLOY_REPLIES.name(client=OPERATOR): b"\xa1\x64kind\x64what",
    }
    good = AgentStatus(f"friend-{tag}", AgentState.ONLINE)
    try:
        with MqttTransport(parse_broker_url(mosquitto.url(), client_id=f"stranger-{tag}")) as peer:
            for topic, payload in bad.items():
                peer.publish(topic, payload, qos=1).wait(5)
            peer.publish(STATUS.name(agent=good.agent_id), encode(good), qos=1).wait(5)
            control.wait_agents([good.agent_id], check=lambda: None, timeout_s=20)

            def warned() -> list[logging.LogRecord]:
                return [r for r in caplog.records if any(t in r.getMessage() for t in bad)]

            wait_until(lambda: len(warned()) >= len(bad), timeout_s=20, what="three warnings")
    finally:
        control.close()
    lines = warned()
    assert len(lines) == len(bad), [r.getMessage() for r in lines]
    for record, topic in zip(sorted(lines, key=lambda r: r.getMessage()), sorted(bad), strict=True):
        text = record.getMessage()
        assert text.startswith(f"ignored a bad message on {topic}: "), text
        assert "\n" not in text and record.exc_info is None
    assert not any(r.exc_info for r in caplog.records), "a traceback was logged"
