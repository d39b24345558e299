"""The MQTT transport against a real Mosquitto started from broker-config/dev.conf.

Every test runs on both implementations: our own client (``MqttTransport``, the
default) and the paho-mqtt one (``PahoTransport``, the reference).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from splitmq.errors import PayloadTooLarge
from splitmq.mosquitto import Mosquitto, config_dir, free_port
from splitmq.transport import (
    InboundMessage,
    MqttTransport,
    MqttVersion,
    TransportConfig,
    Will,
    parse_broker_url,
)
from splitmq.transport.paho_transport import PahoTransport
from splitmq.wire import Activation, AgentState, AgentStatus, Tensor, decode, encode, encode_parts
from splitmq.wire.topics import STAGE, STATUS

from ..helpers import Collector, wait_until

Engine = type[MqttTransport] | type[PahoTransport]
pytestmark = [
    pytest.mark.integration,
    pytest.mark.parametrize("engine", [MqttTransport, PahoTransport], ids=["own", "paho"]),
]


def raw_socket(transport: MqttTransport | PahoTransport) -> Any:
    if isinstance(transport, PahoTransport):
        return transport._client.socket()
    assert transport._channel is not None
    return transport._channel.sock


def connect(engine: Engine, broker: Mosquitto, **overrides: object) -> Any:
    transport = engine(parse_broker_url(broker.url(), **overrides))
    transport.start()
    return transport


@pytest.mark.parametrize("version", [MqttVersion.V5, MqttVersion.V311])
def test_activation_round_trip_off_the_network_thread(
    engine: Engine, mosquitto: Mosquitto, version: MqttVersion
) -> None:
    sender, receiver = (
        connect(engine, mosquitto, version=version),
        connect(engine, mosquitto, version=version),
    )
    try:
        topic = STAGE.name(deployment=f"d-{version}", stage=0, agent="rpi-1")
        got = Collector()
        receiver.subscribe(topic, got)
        image = np.random.default_rng(0).random((1, 224, 224, 3), dtype=np.float32)
        message = Activation(
            request_id=os.urandom(16),
            attempt=0,
            deployment="d",
            stage=0,
            route=(("rpi-1",),),
            callback="cb",
            deadline_ms=0,
            tensors=(Tensor("input_1", image),),
        )
        sender.publish(topic, encode(message)).wait()
        sender.publish(topic, encode_parts(message)).wait()  # the same, sent in parts
        first, second = got.wait_for(2)
        assert first.payload == second.payload == encode(message)
        assert decode(second.payload, expect=Activation) == message
        assert got.threads == {f"{receiver.client_id}-inbox-0"}, "handled on paho's thread"
    finally:
        sender.close()
        receiver.close()


def test_sockets_have_tcp_nodelay(engine: Engine, mosquitto: Mosquitto) -> None:
    transport = connect(engine, mosquitto)
    try:
        sock: Any = raw_socket(transport)
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        transport.close()


@pytest.mark.parametrize("version", [MqttVersion.V5, MqttVersion.V311])
def test_a_subscriber_that_writes_nothing_acknowledges_every_message(
    engine: Engine, mosquitto: Mosquitto, version: MqttVersion
) -> None:
    """MQTT 4.3.2 and 4.9: the broker sends a client no more unacknowledged QoS 1
    messages than its window (``max_inflight_messages`` 100 in dev.conf). Our client
    holds a PUBACK to ride the next packet it writes (``ack_hold_s``); one that writes
    nothing still acknowledges all 300, and in time."""
    sender = connect(engine, mosquitto, version=version)
    receiver = connect(engine, mosquitto, version=version)
    try:
        got = Collector()
        receiver.subscribe("quiet/#", got, qos=1)
        receipts = [sender.publish("quiet/x", b"%d" % i, qos=1) for i in range(300)]
        for receipt in receipts:
            receipt.wait()
        assert [m.payload for m in got.wait_for(300)] == [b"%d" % i for i in range(300)]
    finally:
        sender.close()
        receiver.close()


def test_oversized_payload_is_refused_before_sending(engine: Engine, mosquitto: Mosquitto) -> None:
    transport = connect(engine, mosquitto)
    try:
        got = Collector()
        transport.subscribe("big/#", got)
        assert transport.max_packet_bytes == 8 * 1024 * 1024  # the broker's, from CONNACK
        with pytest.raises(PayloadTooLarge) as info:
            transport.publish("big/one", bytes(transport.max_packet_bytes))
        assert info.value.limit_bytes == transport.max_packet_bytes
        transport.publish("big/ok", bytes(transport.max_payload_bytes)).wait()
        assert [m.topic for m in got.wait_for(1)] == ["big/ok"]
        assert transport.stats.reconnects == 0
    finally:
        transport.close()


def test_retained_status_reaches_late_subscribers(engine: Engine, mosquitto: Mosquitto) -> None:
    agent, watcher = connect(engine, mosquitto), connect(engine, mosquitto)
    try:
        topic = STATUS.name(agent="retained-agent")
        status = encode(AgentStatus("retained-agent", AgentState.ONLINE))
        agent.publish(topic, status, retain=True).wait()
        got = Collector()
        watcher.subscribe(topic, got)
        (retained,) = got.wait_for(1)
        assert retained.retain
        assert decode(retained.payload, expect=AgentStatus).agent_id == "retained-agent"
    finally:
        agent.publish(STATUS.name(agent="retained-agent"), b"", retain=True).wait()
        agent.close()
        watcher.close()


WILL_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from splitmq.transport import MqttTransport, Will, parse_broker_url
    from splitmq.transport.paho_transport import PahoTransport
    from splitmq.wire import AgentState, AgentStatus, encode
    will = Will(sys.argv[2], encode(AgentStatus("doomed", AgentState.OFFLINE)))
    engine = PahoTransport if sys.argv[3] == "PahoTransport" else MqttTransport
    transport = engine(parse_broker_url(sys.argv[1]), will=will)
    transport.start()
    print("ready", flush=True)
    time.sleep(60)
    """
)


def test_last_will_fires_when_the_process_is_killed(engine: Engine, mosquitto: Mosquitto) -> None:
    topic = STATUS.name(agent="doomed")
    watcher = connect(engine, mosquitto)
    got = Collector()
    watcher.subscribe(topic, got)
    process = subprocess.Popen(
        [sys.executable, "-c", WILL_SCRIPT, mosquitto.url(), topic, engine.__name__],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == "ready"
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        (will,) = got.wait_for(1)
        assert decode(will.payload, expect=AgentStatus).state is AgentState.OFFLINE
    finally:
        process.kill()
        watcher.publish(topic, b"", retain=True).wait()
        watcher.close()


def test_reconnects_with_backoff_and_resubscribes_after_a_broker_restart(
    engine: Engine, tmp_path: Path
) -> None:
    port = free_port()
    broker = Mosquitto(config_dir() / "dev.conf", tmp_path, port=port).start()
    events: list[bool] = []
    reconnected = threading.Event()

    def listener(up: bool) -> None:
        events.append(up)
        if up and False in events:
            reconnected.set()

    config = TransportConfig(port=port, reconnect_min_s=0.05, reconnect_max_s=0.5)
    transport = engine(config)
    transport.add_connection_listener(listener)
    transport.start()
    got = Collector()
    transport.subscribe("after/#", got)
    try:
        broker.stop()
        wait_until(lambda: not transport.connected, what="the loss of the broker")
        broker = Mosquitto(config_dir() / "dev.conf", tmp_path, port=port).start()
        assert reconnected.wait(15), f"no reconnection, events {events}"
        assert transport.stats.reconnects >= 1
        other = engine(TransportConfig(port=port))
        other.start()
        other.publish("after/restart", b"hello").wait()
        other.close()
        assert [m.payload for m in got.wait_for(1)] == [b"hello"]
    finally:
        transport.close()
        broker.stop()


def test_a_slow_handler_fills_a_bounded_inbox_without_blocking_paho(
    engine: Engine, mosquitto: Mosquitto
) -> None:
    release = threading.Event()
    busy = threading.Event()
    overflowed: list[str] = []

    def slow(_message: InboundMessage) -> None:
        busy.set()
        release.wait(10)

    config = parse_broker_url(mosquitto.url(), inbox_size=5)
    receiver = engine(config, on_overflow=lambda m: overflowed.append(m.topic))
    receiver.start()
    sender = connect(engine, mosquitto)
    try:
        receiver.subscribe("flood/#", slow)
        sender.publish("flood/0", b"").wait()
        assert busy.wait(10)
        for i in range(1, 51):
            sender.publish(f"flood/{i}", b"x" * 100)
        wait_until(lambda: receiver.stats.msgs_in == 51, what="all 51 messages at the socket")
        assert receiver.stats.dropped_in == 45  # 1 in the handler, 5 queued
        assert len(overflowed) == 45
        # paho's network thread kept going: the connection is alive and answers.
        got = Collector()
        receiver.subscribe("alive", got)
    finally:
        release.set()
    wait_until(lambda: receiver._inbox.depth == 0, what="the queued messages handled")
    sender.publish("alive", b"").wait()
    got.wait_for(1)
    sender.close()
    receiver.close()


def test_clean_close_does_not_publish_the_will(engine: Engine, mosquitto: Mosquitto) -> None:
    watcher = connect(engine, mosquitto)
    got = Collector()
    watcher.subscribe("wills/#", got)
    leaving = engine(
        parse_broker_url(mosquitto.url()), will=Will("wills/clean", b"offline", retain=False)
    )
    leaving.start()
    leaving.close()
    crashing = engine(
        parse_broker_url(mosquitto.url()), will=Will("wills/marker", b"m", retain=False)
    )
    crashing.start()
    sock: Any = raw_socket(crashing)
    sock.shutdown(socket.SHUT_RDWR)  # vanish without DISCONNECT
    messages = got.wait_for(1)
    assert [m.topic for m in messages] == ["wills/marker"]
    crashing.close()
    watcher.close()


def test_an_expiry_beyond_what_mqtt_can_say_is_capped_not_an_error(
    engine: Engine, mosquitto: Mosquitto
) -> None:
    sender, receiver = connect(engine, mosquitto), connect(engine, mosquitto)
    try:
        got = Collector()
        receiver.subscribe("expiry/far", got)
        sender.publish("expiry/far", b"x", expiry_s=1e12).wait()  # a deadline in year 33658
        assert [m.payload for m in got.wait_for(1)] == [b"x"]
    finally:
        sender.close()
        receiver.close()
