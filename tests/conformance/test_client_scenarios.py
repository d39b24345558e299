"""What a user of an MQTT client relies on, against every broker and with both clients.

Each test names the section of the standard it checks (the same number in MQTT 3.1.1
and 5.0 unless the name says ``mqtt5`` or ``mqtt311``).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from splitmq.errors import TransportError
from splitmq.transport import InboundMessage, Will
from splitmq.transport.mqtt import MqttTransport

from ..helpers import Collector, wait_until
from .brokers import BrokerProcess, MosquittoUnderTest
from .conftest import Case, ClientFactory, Transport, new_broker

pytestmark = pytest.mark.integration


def sever(transport: Transport) -> None:
    """Cut the client's socket without a DISCONNECT, as a crash or a dead link would."""
    if isinstance(transport, MqttTransport):
        channel = transport._channel
        assert channel is not None
        channel.sock.shutdown(socket.SHUT_RDWR)
    else:
        sock = transport._client.socket()
        assert isinstance(sock, socket.socket)
        sock.shutdown(socket.SHUT_RDWR)


def test_mqtt_3_1_connect_and_connack(connect: ClientFactory) -> None:
    """3.1 / 3.2: a CONNECT answered by a successful CONNACK opens the session."""
    client = connect()
    assert client.connected


def test_mqtt_4_7_1_wildcards(connect: ClientFactory, prefix: str) -> None:
    """4.7.1.2: '#' matches the parent and any number of levels; 4.7.1.3: '+' exactly one."""
    client, other = connect(), connect()  # one filter each: 3.3.4 allows a copy per match
    plus, hash_ = Collector(), Collector()
    client.subscribe(f"{prefix}/+/c", plus, qos=1)
    other.subscribe(f"{prefix}/#", hash_, qos=1)
    for topic in (f"{prefix}/b/c", f"{prefix}/b/d", f"{prefix}/b/c/d", prefix):
        client.publish(topic, topic.encode(), qos=1).wait()
    got = {m.topic for m in hash_.wait_for(4)}
    assert got == {f"{prefix}/b/c", f"{prefix}/b/d", f"{prefix}/b/c/d", prefix}
    client.publish(f"{prefix}/end/c", b"", qos=1).wait()
    assert [m.topic for m in plus.wait_for(2)] == [f"{prefix}/b/c", f"{prefix}/end/c"]


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_mqtt_4_3_qos_round_trip(connect: ClientFactory, prefix: str, qos: int) -> None:
    """4.3.1-4.3.3: a message at QoS 0, 1 and 2 arrives once."""
    subscriber, publisher = connect(), connect()
    got = Collector()
    subscriber.subscribe(f"{prefix}/t", got, qos=2)
    publisher.publish(f"{prefix}/t", b"hello", qos=qos).wait()
    (message,) = got.wait_for(1)
    assert message.payload == b"hello"
    publisher.publish(f"{prefix}/t", b"end", qos=1).wait()
    assert [bytes(m.payload) for m in got.wait_for(2)] == [b"hello", b"end"]


@pytest.mark.parametrize("qos", [0, 1])
def test_mqtt_3_8_4_delivered_at_the_lower_qos(
    connect: ClientFactory, prefix: str, qos: int
) -> None:
    """3.8.4: delivery uses the lower of the message's and the subscription's QoS."""
    subscriber, publisher = connect(), connect()
    got = Collector()
    subscriber.subscribe(f"{prefix}/t", got, qos=2)
    publisher.publish(f"{prefix}/t", b"x", qos=qos).wait()
    assert got.wait_for(1)[0].qos == qos


def test_mqtt_4_3_burst_of_100_qos1_and_100_qos2(connect: ClientFactory, prefix: str) -> None:
    """4.3.2 / 4.3.3 with flow control (4.9 in 5.0): a burst arrives whole, once each.

    MQTT 3.1.1 has no Receive Maximum: Mosquitto drops QoS 2 messages past its
    max_inflight_messages, so a client must keep its in-flight window within it.
    """
    subscriber, publisher = connect(), connect()
    got = Collector()
    subscriber.subscribe(f"{prefix}/burst", got, qos=2)
    receipts = [
        publisher.publish(f"{prefix}/burst", b"%d" % i, qos=1 if i < 100 else 2) for i in range(200)
    ]
    for receipt in receipts:
        receipt.wait(30.0)
    messages = got.wait_for(200, timeout_s=30.0)
    assert sorted(int(m.payload) for m in messages) == list(range(200))


def test_mqtt_3_3_1_3_retained_message(connect: ClientFactory, prefix: str) -> None:
    """3.3.1.3: a retained message reaches a later subscriber with RETAIN set; an empty
    retained payload removes it."""
    publisher = connect()
    publisher.publish(f"{prefix}/r", b"kept", qos=1, retain=True).wait()
    late, got = connect(), Collector()
    late.subscribe(f"{prefix}/r", got, qos=1)
    (message,) = got.wait_for(1)
    assert (bytes(message.payload), message.retain) == (b"kept", True)
    publisher.publish(f"{prefix}/r", b"", qos=1, retain=True).wait()
    later, nothing = connect(), Collector()
    later.subscribe(f"{prefix}/r", nothing, qos=1)
    later.subscribe(f"{prefix}/end", nothing, qos=1)
    publisher.publish(f"{prefix}/end", b"end", qos=1).wait()
    assert [m.topic for m in nothing.wait_for(1)] == [f"{prefix}/end"]


def test_mqtt_3_1_2_5_will_on_a_dead_connection(connect: ClientFactory, prefix: str) -> None:
    """3.1.2.5: the will goes out when the connection dies without DISCONNECT."""
    watcher, got = connect(), Collector()
    watcher.subscribe(f"{prefix}/will", got, qos=1)
    doomed = connect(will=Will(f"{prefix}/will", b"gone", qos=1, retain=False))
    sever(doomed)
    (message,) = got.wait_for(1, timeout_s=15.0)
    assert bytes(message.payload) == b"gone"


def test_mqtt_3_3_3_one_megabyte_payload(connect: ClientFactory, prefix: str) -> None:
    """3.3.3 / 2.2.3: a 1 MiB payload (a four-byte Remaining Length) crosses intact."""
    subscriber, publisher = connect(), connect()
    got = Collector()
    subscriber.subscribe(f"{prefix}/big", got, qos=1)
    payload = bytes(range(256)) * 4096
    publisher.publish(f"{prefix}/big", payload, qos=1).wait(30.0)
    assert bytes(got.wait_for(1, timeout_s=30.0)[0].payload) == payload


BAD_NAMES = ["a/+", "a/#", "", "a\x00b", "x" * 65_536, "a\udc80", "$SYS/x"]
BAD_FILTERS = ["a/#/b", "a/b#", "a+/b", "", "a\x00", "$share//a", "$share/g", "y" * 65_536]


def test_mqtt_4_7_bad_topics_fail_at_the_call(connect: ClientFactory, prefix: str) -> None:
    """4.7.1-4.7.3, 1.5.3: a name with wildcards, a filter with a misplaced wildcard,
    empty, too long, NUL, not UTF-8, or a '$' name fails at the call; nothing is sent
    and the connection stays up."""
    client = connect()
    accepted = []
    for name in BAD_NAMES:
        try:
            client.publish(name, b"x", qos=1)
            accepted.append(f"publish {name[:20]!r}")
        except ValueError:
            pass
    for topic_filter in BAD_FILTERS:
        try:
            client.subscribe(topic_filter, lambda m: None, qos=1, timeout_s=2.0)
            accepted.append(f"subscribe {topic_filter[:20]!r}")
        except ValueError:
            pass
        except TransportError:  # sent: the broker refused it, or closed on it
            accepted.append(f"subscribe {topic_filter[:20]!r} (sent)")
    assert accepted == [], "; ".join(accepted)
    got = Collector()
    client.subscribe(f"{prefix}/ok", got, qos=1)
    client.publish(f"{prefix}/ok", b"fine", qos=1).wait()
    got.wait_for(1)
    assert client.stats.reconnects == 0


@pytest.mark.brokers("embedded", "mosquitto")
@pytest.mark.versions("3.1.1")
def test_mqtt311_4_8_a_packet_the_broker_closes_on_fails_once(
    connect: ClientFactory, prefix: str
) -> None:
    """4.8 (3.1.1: on a protocol violation the server closes the connection): a
    PUBLISH above the broker's packet limit, which 3.1.1 cannot announce, fails to its
    caller once; it is not re-sent after every reconnect."""
    client = connect(max_packet_bytes=32 * 1024 * 1024)
    receipt = client.publish(f"{prefix}/huge", bytes(9 * 1024 * 1024), qos=1)
    with pytest.raises(TransportError, match="refused"):  # not a mere timeout
        receipt.wait(8.0)
    wait_until(lambda: client.connected, 10.0, "the client back")
    assert client.stats.reconnects <= 3
    got = Collector()
    client.subscribe(f"{prefix}/ok", got, qos=1)
    client.publish(f"{prefix}/ok", b"fine", qos=1).wait()
    got.wait_for(1)


@pytest.mark.versions("5")
@pytest.mark.brokers("amqtt")
def test_mqtt5_3_1_2_2_against_a_311_broker(connect: ClientFactory, prefix: str) -> None:
    """3.1.2.2 / 3.2.2.2: a 3.1.1 broker answers an MQTT 5 CONNECT with 3.1.1's return
    code 1; the client falls back to 3.1.1 (once) and works."""
    client = connect()
    assert isinstance(client, MqttTransport) and client.protocol_version == "3.1.1"
    got = Collector()
    client.subscribe(f"{prefix}/t", got, qos=1)
    client.publish(f"{prefix}/t", b"x", qos=1).wait()
    got.wait_for(1)


def test_mqtt_4_1_broker_restart_then_resubscribed(
    case: Case, tmp_path_factory: pytest.TempPathFactory, prefix: str
) -> None:
    """4.1: with a clean session the client subscribes again after the broker restarts;
    4.7.1: a filter refused at the call is not among them (the engine's network thread
    survives the reconnect)."""
    from splitmq.transport import TransportConfig
    from splitmq.transport.paho_transport import PahoTransport

    own: BrokerProcess = new_broker(case.broker, tmp_path_factory)
    own.start()
    config = TransportConfig(
        port=own.port, version=case.mqtt_version, reconnect_min_s=0.05, reconnect_max_s=0.5
    )
    engine = MqttTransport if case.client == "splitmq" else PahoTransport
    subscriber, publisher = engine(config), engine(config)
    try:
        subscriber.start()
        publisher.start()
        got = Collector()
        up = threading.Event()

        def on_connection(connected: bool) -> None:
            if connected:
                up.set()

        subscriber.add_connection_listener(on_connection)
        subscriber.subscribe(f"{prefix}/t", got, qos=1)
        with pytest.raises(ValueError):
            subscriber.subscribe(f"{prefix}/#/bad", got, qos=1)
        own.stop()
        wait_until(lambda: not subscriber.connected, 10.0, "the loss seen")
        up.clear()
        own.start()
        assert up.wait(20.0), "no reconnection"
        wait_until(lambda: publisher.connected, 20.0, "the publisher back")

        def delivered() -> bool:
            publisher.publish(f"{prefix}/t", b"after", qos=1).wait(5.0)
            return bool(got.messages)

        wait_until(delivered, 20.0, "a message after the restart")
        assert isinstance(got.messages[0], InboundMessage)
    finally:
        subscriber.close()
        publisher.close()
        own.stop()


@pytest.fixture(scope="module")
def mosquitto_default_inflight(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A Mosquitto with its default max_inflight_messages (20), as most installs run."""
    broker = MosquittoUnderTest(tmp_path_factory.mktemp("inflight20"), "max_inflight_messages 20")
    broker.start()
    try:
        yield broker.port
    finally:
        broker.stop()


@pytest.mark.parametrize(
    "engine",
    [
        "splitmq",
        pytest.param(
            "paho",
            marks=pytest.mark.xfail(
                strict=True,
                reason="paho-mqtt 2.2 keeps 100 in flight (PahoTransport's max_inflight) "
                "over 3.1.1; Mosquitto drops the QoS 2 messages past its 20",
            ),
        ),
    ],
    ids=["mosquitto20-splitmq-mqtt311", "mosquitto20-paho-mqtt311"],
)
def test_client_burst_through_a_mosquitto_with_the_default_in_flight_limit(
    engine: str, mosquitto_default_inflight: int, prefix: str
) -> None:
    """Not a normative statement (3.1.1 has no flow control): 100 QoS 1 then 100 QoS 2
    published at once through a Mosquitto left at max_inflight_messages 20 all arrive."""
    from splitmq.transport import MqttVersion, TransportConfig
    from splitmq.transport.paho_transport import PahoTransport

    config = TransportConfig(port=mosquitto_default_inflight, version=MqttVersion.V311)
    kind = MqttTransport if engine == "splitmq" else PahoTransport
    with kind(config) as subscriber, kind(config) as publisher:
        got = Collector()
        subscriber.subscribe(f"{prefix}/burst", got, qos=2)
        receipts = [
            publisher.publish(f"{prefix}/burst", b"%d" % i, qos=1 if i < 100 else 2)
            for i in range(200)
        ]
        for receipt in receipts:
            receipt.wait(30.0)
        messages = got.wait_for(200, timeout_s=10.0)
        assert sorted(int(m.payload) for m in messages) == list(range(200))
