"""broker-config/secure.conf: TLS, no anonymous access, and each role only its own topics."""

from __future__ import annotations

import pytest

from splitmq.errors import TransportError
from splitmq.transport import ConnectionRefused, MqttTransport, PublishRefused, TransportConfig
from splitmq.wire import AgentState, AgentStatus, Ping, encode
from splitmq.wire.topics import COMMANDS, PLANS, RESULTS, STATUS

from ..conftest import SecureBroker
from ..helpers import Collector

pytestmark = pytest.mark.integration


def connect(secure: SecureBroker, user: str | None, password: str | None = None) -> MqttTransport:
    config = TransportConfig(
        port=secure.broker.port or 0,
        tls=True,
        ca_certs=secure.ca_cert,
        username=user,
        password=password if password is not None else (secure.password(user) if user else None),
    )
    transport = MqttTransport(config)
    transport.start(timeout_s=10)
    return transport


def test_anonymous_clients_are_refused(secure_mosquitto: SecureBroker) -> None:
    with pytest.raises(ConnectionRefused, match="refused the connection"):
        connect(secure_mosquitto, None)


def test_a_wrong_password_is_refused(secure_mosquitto: SecureBroker) -> None:
    with pytest.raises(ConnectionRefused):
        connect(secure_mosquitto, "rpi-1", "not-the-password")


def test_plain_tcp_to_the_tls_listener_fails(secure_mosquitto: SecureBroker) -> None:
    config = TransportConfig(
        port=secure_mosquitto.broker.port or 0,
        username="rpi-1",
        password=secure_mosquitto.password("rpi-1"),
        reconnect_min_s=0.05,
    )
    with pytest.raises(TransportError):
        MqttTransport(config).start(timeout_s=2)


def test_an_agent_cannot_command_another_agent(secure_mosquitto: SecureBroker) -> None:
    coordinator = connect(secure_mosquitto, "coordinator")
    agent = connect(secure_mosquitto, "rpi-1")
    try:
        got = Collector()
        coordinator.subscribe(COMMANDS.filter(), got)
        coordinator.subscribe(STATUS.filter(agent="rpi-1"), got)
        forged = encode(Ping("forged", "rpi-1", 0.0))
        with pytest.raises(PublishRefused, match="Not authorized"):
            agent.publish(COMMANDS.name(agent="phone-1"), forged).wait()
        with pytest.raises(PublishRefused, match="Not authorized"):
            agent.publish(STATUS.name(agent="phone-1"), forged).wait()  # impersonation
        # Its own status goes through; the refused messages never arrived before it.
        own = encode(AgentStatus("rpi-1", AgentState.ONLINE))
        agent.publish(STATUS.name(agent="rpi-1"), own).wait()
        assert [m.topic for m in got.wait_for(1)] == [STATUS.name(agent="rpi-1")]
    finally:
        agent.close()
        coordinator.close()


def test_an_agent_cannot_publish_plans(secure_mosquitto: SecureBroker) -> None:
    agent = connect(secure_mosquitto, "phone-1")
    try:
        with pytest.raises(PublishRefused):
            agent.publish(PLANS.name(client="alice"), b"x").wait()
    finally:
        agent.close()


def test_a_client_cannot_read_another_clients_results(secure_mosquitto: SecureBroker) -> None:
    # Mosquitto 2.0 grants the SUBACK and enforces read access per message.
    alice = connect(secure_mosquitto, "alice")
    agent = connect(secure_mosquitto, "rpi-1")
    try:
        got = Collector()
        alice.subscribe(RESULTS.filter(), got)  # every client's results, if it could
        agent.publish(RESULTS.name(client="bob"), b"for bob").wait()
        agent.publish(RESULTS.name(client="alice"), b"for alice").wait()
        # MQTT keeps one publisher's order: bob's result would have arrived first.
        assert [m.payload for m in got.wait_for(1)] == [b"for alice"]
    finally:
        agent.close()
        alice.close()


def test_a_client_cannot_speak_as_an_agent(secure_mosquitto: SecureBroker) -> None:
    bob = connect(secure_mosquitto, "bob")
    try:
        with pytest.raises(PublishRefused):
            bob.publish(STATUS.name(agent="rpi-1"), b"x").wait()
    finally:
        bob.close()


def test_over_tls_a_subscriber_that_writes_nothing_acknowledges_every_message(
    secure_mosquitto: SecureBroker,
) -> None:
    """Held PUBACKs over TLS (``ack_hold_s``): the coordinator here writes nothing
    while 300 QoS 1 statuses come, past the broker's window of 100 unacknowledged."""
    coordinator = connect(secure_mosquitto, "coordinator")
    agent = connect(secure_mosquitto, "rpi-1")
    try:
        got = Collector()
        coordinator.subscribe(STATUS.filter(agent="rpi-1"), got, qos=1)
        statuses = [encode(AgentStatus("rpi-1", AgentState.ONLINE, ts_ms=i)) for i in range(300)]
        for receipt in [agent.publish(STATUS.name(agent="rpi-1"), s) for s in statuses]:
            receipt.wait()
        assert [m.payload for m in got.wait_for(300)] == statuses
    finally:
        agent.close()
        coordinator.close()
