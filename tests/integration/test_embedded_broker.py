"""The embedded broker against real paho-mqtt clients (both versions) and our transport.

Most tests share one broker and keep to a topic prefix of their own; the ones that
need other limits, or stop the broker, start their own. Raw-socket tests write the
bytes by hand (not with the broker's codec), so they check the codec too.
"""

from __future__ import annotations

import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from splitmq.broker import free_port
from splitmq.embedded_broker import EmbeddedBroker
from splitmq.errors import PayloadTooLarge
from splitmq.transport import MqttTransport, MqttVersion, TransportConfig, Will, parse_broker_url

from ..helpers import Collector, wait_until

pytestmark = pytest.mark.integration

V5 = MQTTProtocolVersion.MQTTv5
V311 = MQTTProtocolVersion.MQTTv311
BOTH_VERSIONS = pytest.mark.parametrize("version", [V5, V311], ids=["mqtt5", "mqtt311"])


class Client:
    """A plain paho-mqtt client (not our transport) that records what reaches it."""

    def __init__(
        self,
        broker: EmbeddedBroker,
        *,
        version: MQTTProtocolVersion = V5,
        client_id: str = "",
        keepalive_s: int = 30,
        will: tuple[str, bytes] | None = None,
    ):
        self.broker = broker
        self.version = version
        self.keepalive_s = keepalive_s
        self.paho = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=version,
            reconnect_on_failure=False,
        )
        if will is not None:
            self.paho.will_set(will[0], will[1], qos=1, retain=False)
        self.messages: list[paho.MQTTMessage] = []
        self.connack: Any = None  # paho's Properties: attributes set at run time
        self.connected = False
        self.disconnects: list[ReasonCode] = []
        self._acks: dict[int, list[ReasonCode]] = {}
        self._cond = threading.Condition()
        self.paho.on_connect = self._on_connect
        self.paho.on_disconnect = self._on_disconnect
        self.paho.on_message = self._on_message
        self.paho.on_subscribe = self._on_ack
        self.paho.on_unsubscribe = self._on_ack

    def connect(self) -> Client:
        self.paho.connect(self.broker.host, self.broker.port, keepalive=self.keepalive_s)
        self.paho.loop_start()
        self._wait(lambda: self.connected, "CONNACK")
        return self

    def subscribe(self, topic_filter: str, qos: int = 1, **options: Any) -> list[int]:
        """Subscribe and wait for the SUBACK; its reason codes."""
        if self.version is V5:
            _, mid = self.paho.subscribe(topic_filter, options=SubscribeOptions(qos, **options))
        else:
            _, mid = self.paho.subscribe(topic_filter, qos)
        assert mid is not None, f"paho did not send SUBSCRIBE for {topic_filter}"
        self._wait(lambda: mid in self._acks, f"SUBACK for {topic_filter}")
        return [code.value for code in self._acks.pop(mid)]

    def unsubscribe(self, topic_filter: str) -> None:
        _, mid = self.paho.unsubscribe(topic_filter)
        assert mid is not None, f"paho did not send UNSUBSCRIBE for {topic_filter}"
        self._wait(lambda: mid in self._acks, f"UNSUBACK for {topic_filter}")

    def publish(
        self,
        topic: str,
        payload: bytes,
        qos: int = 1,
        retain: bool = False,
        properties: Properties | None = None,
    ) -> None:
        """Publish and wait until it is acknowledged (QoS 1, 2) or written (QoS 0)."""
        info = self.paho.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        info.wait_for_publish(5)

    def wait_for(self, count: int, timeout_s: float = 5.0) -> list[paho.MQTTMessage]:
        self._wait(lambda: len(self.messages) >= count, f"{count} messages", timeout_s)
        return list(self.messages)

    def payloads(self) -> list[bytes]:
        return [bytes(m.payload) for m in self.messages]

    def wait_disconnected(self, timeout_s: float = 5.0) -> ReasonCode:
        self._wait(lambda: bool(self.disconnects), "the broker closing us", timeout_s)
        return self.disconnects[0]

    def close(self) -> None:
        self.paho.disconnect()
        self.paho.loop_stop()

    def _wait(self, predicate: Callable[[], bool], what: str, timeout_s: float = 5.0) -> None:
        with self._cond:
            if not self._cond.wait_for(predicate, timeout_s):
                raise AssertionError(f"no {what} within {timeout_s} s")

    def _on_connect(self, _c: Any, _u: Any, _f: Any, reason: ReasonCode, props: Any) -> None:
        with self._cond:
            self.connected = not reason.is_failure
            self.connack = props
            self._cond.notify_all()

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, reason: ReasonCode, _p: Any) -> None:
        with self._cond:
            self.disconnects.append(reason)
            self._cond.notify_all()

    def _on_message(self, _c: Any, _u: Any, message: paho.MQTTMessage) -> None:
        with self._cond:
            self.messages.append(message)
            self._cond.notify_all()

    def _on_ack(self, _c: Any, _u: Any, mid: int, codes: list[ReasonCode], _p: Any) -> None:
        with self._cond:
            self._acks[mid] = codes
            self._cond.notify_all()


# -- raw MQTT bytes, written independently of the broker's codec ---------------------


def frame(first_byte: int, body: bytes) -> bytes:
    length, encoded = len(body), bytearray()
    while True:
        byte, length = length % 128, length // 128
        encoded.append(byte | (0x80 if length else 0))
        if not length:
            return bytes([first_byte]) + bytes(encoded) + body


def text(value: str) -> bytes:
    return struct.pack("!H", len(value.encode())) + value.encode()


def raw_connect(
    client_id: str, *, level: int = 5, clean: bool = True, protocol: str = "MQTT"
) -> bytes:
    """CONNECT without will or credentials, keep-alive 30 s."""
    properties = b"\x00" if level == 5 else b""
    body = text(protocol) + bytes([level, 0x02 if clean else 0x00]) + struct.pack("!H", 30)
    return frame(0x10, body + properties + text(client_id))


class RawClient:
    """A bare TCP socket speaking hand-made MQTT."""

    def __init__(self, broker: EmbeddedBroker):
        self.sock = socket.create_connection((broker.host, broker.port), timeout=5)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_packet(self) -> tuple[int, bytes]:
        first = self._exactly(1)[0]
        length, shift = 0, 0
        while True:
            byte = self._exactly(1)[0]
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return first, self._exactly(length)

    def closed_by_broker(self) -> bool:
        """True once the broker closed the connection (EOF or reset), reading the rest."""
        try:
            while self.sock.recv(65536):
                pass
        except ConnectionResetError:
            pass
        return True

    def close(self) -> None:
        self.sock.close()

    def _exactly(self, count: int) -> bytes:
        data = b""
        while len(data) < count:
            chunk = self.sock.recv(count - len(data))
            if not chunk:
                raise AssertionError(f"connection closed after {data!r}")
            data += chunk
        return data


# -- fixtures -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def broker() -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker() as running:
        yield running


@pytest.fixture
def prefix() -> str:
    """A topic level of this test's own: the shared broker keeps retained messages."""
    return f"t-{uuid.uuid4().hex[:10]}"


ClientFactory = Callable[..., Client]


@pytest.fixture
def connect(broker: EmbeddedBroker) -> Iterator[ClientFactory]:
    """Connected paho clients, closed after the test (``on=`` another broker)."""
    made: list[Client] = []

    def make(on: EmbeddedBroker | None = None, **options: Any) -> Client:
        client = Client(on or broker, **options)
        made.append(client)
        return client.connect()

    yield make
    for client in made:
        client.close()


def transport(broker: EmbeddedBroker, **overrides: Any) -> MqttTransport:
    started = MqttTransport(parse_broker_url(broker.url, **overrides))
    started.start()
    return started


# -- connecting -----------------------------------------------------------------------


def test_both_versions_connect_and_mqtt5_learns_the_broker_limits(
    broker: EmbeddedBroker, connect: ClientFactory
) -> None:
    v5 = connect(version=V5)
    v311 = connect(version=V311)
    assert v5.connected and v311.connected
    props = v5.connack
    assert props.MaximumPacketSize == 8 * 1024 * 1024
    assert props.TopicAliasMaximum == 0
    assert props.RetainAvailable == 1
    assert props.SharedSubscriptionAvailable == 1
    assert props.SubscriptionIdentifierAvailable == 0
    assert props.AssignedClientIdentifier.startswith("auto-")  # we sent an empty id
    with transport(broker) as ours:
        assert ours.max_packet_bytes == 8 * 1024 * 1024


def test_a_second_connection_with_the_same_client_id_takes_over(
    connect: ClientFactory, prefix: str
) -> None:
    first = connect(client_id=f"{prefix}-dup")
    first.subscribe(f"{prefix}/x")
    second = connect(client_id=f"{prefix}-dup")
    assert first.wait_disconnected().value == 0x8E  # session taken over
    second.subscribe(f"{prefix}/x")
    second.publish(f"{prefix}/x", b"to the new one")
    assert second.wait_for(1)[0].payload == b"to the new one"
    assert first.messages == []


@pytest.mark.parametrize(
    ("connect_packet", "connack", "stays_open"),
    [
        (raw_connect("keep-me", level=4, clean=False), b"\x00\x00", True),  # no session kept
        (raw_connect("", level=4, clean=False), b"\x00\x02", False),  # identifier rejected
        (raw_connect("old", level=3, protocol="MQIsdp"), b"\x00\x01", False),  # MQTT 3.1
    ],
    ids=["persistent-session-asked", "empty-id-persistent", "mqtt31"],
)
def test_connack_codes_for_mqtt311_clients(
    broker: EmbeddedBroker, connect_packet: bytes, connack: bytes, stays_open: bool
) -> None:
    raw = RawClient(broker)
    try:
        raw.send(connect_packet)
        assert raw.read_packet() == (0x20, connack)
        if stays_open:
            raw.send(b"\xc0\x00")  # PINGREQ
            assert raw.read_packet() == (0xD0, b"")
        else:
            assert raw.closed_by_broker()
    finally:
        raw.close()


# -- publish and subscribe ------------------------------------------------------------


@BOTH_VERSIONS
@pytest.mark.parametrize("publish_qos", [0, 1, 2])
def test_round_trip_delivers_at_the_lower_of_publish_and_subscription_qos(
    connect: ClientFactory, prefix: str, version: MQTTProtocolVersion, publish_qos: int
) -> None:
    subscribers = [connect(version=version) for _ in range(3)]
    for qos, subscriber in enumerate(subscribers):
        assert subscriber.subscribe(f"{prefix}/data", qos=qos) == [qos]
    publisher = connect(version=version)
    publisher.publish(f"{prefix}/data", b"payload", qos=publish_qos)
    for qos, subscriber in enumerate(subscribers):
        (message,) = subscriber.wait_for(1)
        assert (message.topic, message.payload) == (f"{prefix}/data", b"payload")
        assert message.qos == min(qos, publish_qos)
        assert not message.retain


def test_qos2_resent_before_pubrel_is_delivered_once(
    broker: EmbeddedBroker, connect: ClientFactory, prefix: str
) -> None:
    watcher = connect()
    watcher.subscribe(f"{prefix}/#", qos=2)
    raw = RawClient(broker)
    try:
        raw.send(raw_connect(f"{prefix}-raw", level=4))
        assert raw.read_packet() == (0x20, b"\x00\x00")  # CONNACK, accepted
        body = text(f"{prefix}/once") + b"\x00\x07" + b"exactly once"
        raw.send(frame(0x34, body))  # PUBLISH QoS 2, packet id 7
        assert raw.read_packet() == (0x50, b"\x00\x07")  # PUBREC
        raw.send(frame(0x3C, body))  # the same, DUP set: a resend
        assert raw.read_packet() == (0x50, b"\x00\x07")
        raw.send(frame(0x62, b"\x00\x07"))  # PUBREL
        assert raw.read_packet() == (0x70, b"\x00\x07")  # PUBCOMP
        raw.send(frame(0x30, text(f"{prefix}/end") + b"marker"))
        watcher.wait_for(2)
        # paho hands a QoS 2 message over at PUBREL, so the QoS 0 marker may come first
        assert sorted(watcher.payloads()) == [b"exactly once", b"marker"]
    finally:
        raw.close()


def test_wildcards_and_dollar_topics(connect: ClientFactory, prefix: str) -> None:
    plus, hash_, everything, dollar = (connect() for _ in range(4))
    plus.subscribe(f"{prefix}/+/temp")
    plus.subscribe(f"{prefix}/end")  # the last one: everything before it has arrived too
    hash_.subscribe(f"{prefix}/#")
    everything.subscribe("#")
    everything.subscribe(f"+/{prefix}")
    dollar.subscribe(f"$test/{prefix}")
    publisher = connect()
    topics = [f"{prefix}/kitchen/temp", f"{prefix}/kitchen/hum", f"{prefix}/a/b/temp", prefix]
    for topic in [*topics, f"$test/{prefix}", f"{prefix}/end"]:
        publisher.publish(topic, b"")
    assert [m.topic for m in hash_.wait_for(5)] == [*topics, f"{prefix}/end"]
    assert [m.topic for m in plus.wait_for(2)] == [f"{prefix}/kitchen/temp", f"{prefix}/end"]
    assert [m.topic for m in dollar.wait_for(1)] == [f"$test/{prefix}"]
    wait_until(lambda: f"{prefix}/end" in [m.topic for m in everything.messages])
    assert not [m for m in everything.messages if m.topic.startswith("$")]
    assert [m.topic for m in everything.messages if prefix in m.topic] == [
        *topics,
        f"{prefix}/end",
    ]


@pytest.mark.parametrize(
    ("level", "topic_filter", "code"),
    [
        (5, "a/b#", 0x8F),  # topic filter invalid
        (5, "$share//x", 0x8F),  # no group name
        (5, "$share/g/a+/x", 0x8F),
        (4, "a/#/x", 0x80),  # 3.1.1 failure
        (4, "", 0x80),
        (5, "a/+/#", 0x01),  # valid, granted QoS 1
    ],
)
def test_invalid_filters_are_refused_in_the_suback(
    broker: EmbeddedBroker, level: int, topic_filter: str, code: int
) -> None:
    raw = RawClient(broker)
    try:
        raw.send(raw_connect("", level=level))
        assert raw.read_packet()[0] == 0x20
        properties = b"\x00" if level == 5 else b""
        raw.send(frame(0x82, b"\x00\x09" + properties + text(topic_filter) + b"\x01"))
        assert raw.read_packet() == (0x90, b"\x00\x09" + properties + bytes([code]))
        raw.send(b"\xc0\x00")  # PINGREQ: the connection is still up
        assert raw.read_packet() == (0xD0, b"")
    finally:
        raw.close()


def test_unsubscribe_stops_deliveries(connect: ClientFactory, prefix: str) -> None:
    client = connect()
    client.subscribe(f"{prefix}/a")
    client.subscribe(f"{prefix}/end")
    client.unsubscribe(f"{prefix}/a")
    client.publish(f"{prefix}/a", b"not for me")
    client.publish(f"{prefix}/end", b"marker")
    client.wait_for(1)
    assert client.payloads() == [b"marker"]


def test_mqtt5_no_local_and_retain_as_published(connect: ClientFactory, prefix: str) -> None:
    own = connect()
    own.subscribe(f"{prefix}/mine", noLocal=True)
    own.subscribe(f"{prefix}/kept", retainAsPublished=True)
    own.subscribe(f"{prefix}/end")
    own.publish(f"{prefix}/mine", b"my own")
    own.publish(f"{prefix}/kept", b"retained", retain=True)
    own.publish(f"{prefix}/end", b"marker")
    messages = own.wait_for(2)
    assert [(m.payload, m.retain) for m in messages] == [(b"retained", True), (b"marker", False)]
    own.publish(f"{prefix}/kept", b"", retain=True)


# -- retained messages and wills ------------------------------------------------------


@BOTH_VERSIONS
def test_retained_message_reaches_late_subscribers_until_deleted(
    connect: ClientFactory, prefix: str, version: MQTTProtocolVersion
) -> None:
    publisher = connect(version=version)
    publisher.publish(f"{prefix}/status", b"online", retain=True)
    late = connect(version=version)
    late.subscribe(f"{prefix}/#")
    (retained,) = late.wait_for(1)
    assert (retained.payload, retained.retain) == (b"online", True)
    publisher.publish(f"{prefix}/status", b"live", retain=True)
    assert late.wait_for(2)[1].retain is False  # a live delivery is not flagged
    publisher.publish(f"{prefix}/status", b"", retain=True)  # deletes it
    later = connect(version=version)
    later.subscribe(f"{prefix}/#")
    publisher.publish(f"{prefix}/end", b"marker")
    later.wait_for(1)
    assert later.payloads() == [b"marker"]


@pytest.mark.parametrize("version", [MqttVersion.V5, MqttVersion.V311])
def test_will_is_published_and_retained_when_the_socket_dies(
    broker: EmbeddedBroker, prefix: str, version: MqttVersion
) -> None:
    watcher = transport(broker)
    got = Collector()
    watcher.subscribe(f"{prefix}/#", got)
    leaving = MqttTransport(
        parse_broker_url(broker.url, version=version), will=Will(f"{prefix}/clean", b"gone")
    )
    leaving.start()
    leaving.close()  # DISCONNECT: no will
    crashing = MqttTransport(
        parse_broker_url(broker.url, version=version), will=Will(f"{prefix}/crashed", b"gone")
    )
    crashing.start()
    assert crashing._channel is not None
    sock: Any = crashing._channel.sock
    try:
        sock.shutdown(socket.SHUT_RDWR)  # vanish without DISCONNECT
        (will,) = got.wait_for(1)
        assert (will.topic, will.payload, will.qos) == (f"{prefix}/crashed", b"gone", 1)
        late = Collector()
        watcher.subscribe(f"{prefix}/crashed", late)
        assert late.wait_for(1)[0].retain  # Will(retain=True) by default
    finally:
        crashing.close()
        watcher.publish(f"{prefix}/crashed", b"", retain=True).wait()
        watcher.close()


def test_keepalive_expiry_closes_the_client_and_fires_its_will(
    connect: ClientFactory, prefix: str
) -> None:
    watcher = connect()
    watcher.subscribe(f"{prefix}/will")
    silent = connect(version=V311, keepalive_s=1, will=(f"{prefix}/will", b"timed out"))
    started = time.monotonic()
    silent.paho.loop_stop()  # no more PINGREQ, but the socket stays open
    (will,) = watcher.wait_for(1, timeout_s=5)
    elapsed_s = time.monotonic() - started
    assert will.payload == b"timed out"
    assert 1.0 <= elapsed_s < 3.0, f"will after {elapsed_s:.2f} s, expected ~1.5 s"


def test_mqtt5_disconnect_with_will_reason_publishes_the_will(
    connect: ClientFactory, prefix: str
) -> None:
    watcher = connect()
    watcher.subscribe(f"{prefix}/will")
    polite = connect(will=(f"{prefix}/will", b"asked for"))
    polite.paho.disconnect(reasoncode=ReasonCode(PacketTypes.DISCONNECT, identifier=0x04))
    polite.close()
    normal = connect(will=(f"{prefix}/will", b"never"))
    normal.close()
    watcher.publish(f"{prefix}/will", b"marker")
    watcher.wait_for(2)
    assert watcher.payloads() == [b"asked for", b"marker"]


# -- shared subscriptions -------------------------------------------------------------


def test_shared_subscription_gives_each_message_to_one_member_in_turn(
    connect: ClientFactory, prefix: str
) -> None:
    members = [connect() for _ in range(3)]
    for member in members:
        member.subscribe(f"$share/workers/{prefix}/jobs/+")
    lone = connect()
    lone.subscribe(f"$share/other/{prefix}/jobs/#")
    plain = connect()
    plain.subscribe(f"{prefix}/jobs/#")
    publisher = connect()
    for i in range(30):
        publisher.publish(f"{prefix}/jobs/{i}", str(i).encode())
    assert len(plain.wait_for(30)) == 30
    assert len(lone.wait_for(30)) == 30
    wait_until(lambda: sum(len(m.messages) for m in members) == 30, what="30 shared deliveries")
    assert [len(member.messages) for member in members] == [10, 10, 10]
    received = sorted(int(m.payload) for member in members for m in member.messages)
    assert received == list(range(30))


# -- sizes, slow consumers, expiry ----------------------------------------------------


def test_a_4_mib_payload_crosses_the_broker(broker: EmbeddedBroker, prefix: str) -> None:
    payload = bytes(range(256)) * (16 * 1024)  # 4 MiB
    with transport(broker) as sender, transport(broker) as receiver:
        got = Collector()
        receiver.subscribe(f"{prefix}/big", got)
        sender.publish(f"{prefix}/big", payload).wait()
        (message,) = got.wait_for(1)
        assert message.payload == payload


def test_packets_above_the_limit_close_only_their_connection(connect: ClientFactory) -> None:
    limit = 64 * 1024
    with EmbeddedBroker(max_packet_bytes=limit) as small:
        ours = transport(small)
        try:
            assert ours.max_packet_bytes == limit  # from CONNACK
            with pytest.raises(PayloadTooLarge):
                ours.publish("big", bytes(limit))
        finally:
            ours.close()
        watcher = connect(on=small)
        watcher.subscribe("big/#")
        v311 = connect(on=small, version=V311)  # paho sends it: 3.1.1 has no limit to learn
        v311.paho.publish("big/v311", bytes(limit + 1), qos=0)
        v311.wait_disconnected()
        raw = RawClient(small)
        raw.send(raw_connect("raw-big", level=5))
        assert raw.read_packet()[0] == 0x20
        raw.send(b"\x30" + b"\x80\x80\x40")  # PUBLISH header announcing 1 MiB
        first, body = raw.read_packet()
        assert (first, body[0]) == (0xE0, 0x95)  # DISCONNECT, packet too large
        assert raw.closed_by_broker()
        raw.close()
        connect(on=small).publish("big/end", b"marker")
        watcher.wait_for(1)
        assert watcher.payloads() == [b"marker"]


def test_slow_consumer_gets_a_bounded_queue_and_drops_are_counted(
    connect: ClientFactory,
) -> None:
    with EmbeddedBroker(max_queued_messages=5, max_inflight_messages=2) as small:
        consumer = connect(on=small)
        consumer.subscribe("work/#", qos=1)
        consumer.paho.loop_stop()  # reads and acknowledges nothing from now on
        producer = connect(on=small)
        for i in range(20):
            producer.publish(f"work/{i}", str(i).encode())
        wait_until(lambda: small.stats.dropped == 13, what="13 drops (2 in flight, 5 queued)")
        consumer.paho.loop_start()
        consumer.wait_for(7)
        producer.publish("work/end", b"marker")
        consumer.wait_for(8)
        assert consumer.payloads() == [str(i).encode() for i in range(7)] + [b"marker"]


def test_mqtt5_expiry_drops_stale_queued_messages_and_forwards_the_rest(
    connect: ClientFactory,
) -> None:
    with EmbeddedBroker(max_inflight_messages=1) as small:
        consumer = connect(on=small)
        consumer.subscribe("req/#", qos=1)
        consumer.paho.loop_stop()
        producer = connect(on=small)
        producer.publish("req/0", b"first")  # in flight: the next ones wait in the queue
        for payload, expiry_s in ((b"stale", 1), (b"fresh", 60)):
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            props.MessageExpiryInterval = expiry_s
            props.UserProperty = ("request", payload.decode())
            producer.publish(f"req/{payload.decode()}", payload, properties=props)
        time.sleep(1.2)  # what is tested is time passing: the 1 s expiry must elapse
        consumer.paho.loop_start()
        first, fresh = consumer.wait_for(2)
        assert (first.payload, fresh.payload) == (b"first", b"fresh")
        forwarded: Any = fresh.properties
        assert forwarded.UserProperty == [("request", "fresh")]
        assert 55 <= forwarded.MessageExpiryInterval <= 59
        assert not hasattr(first.properties, "MessageExpiryInterval")
        producer.publish("req/end", b"marker")
        consumer.wait_for(3)
        assert consumer.payloads()[2] == b"marker"
        assert small.stats.expired == 1


# -- robustness ----------------------------------------------------------------------


GARBAGE = {
    "random": bytes(range(255, 0, -3)) * 4,
    "http": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    "publish-before-connect": frame(0x30, text("a") + b"x"),
    "bad-protocol-name": frame(0x10, text("MQTX") + b"\x04\x02\x00\x1e" + text("x")),
    "endless-length": b"\x10\xff\xff\xff\xff\xff",
}


@pytest.mark.parametrize("garbage", GARBAGE.values(), ids=GARBAGE.keys())
def test_garbage_closes_only_its_own_connection(
    broker: EmbeddedBroker, connect: ClientFactory, prefix: str, garbage: bytes
) -> None:
    bystander = connect()
    bystander.subscribe(f"{prefix}/#")
    errors_before = broker.stats.protocol_errors
    raw = RawClient(broker)
    raw.send(garbage)
    assert raw.closed_by_broker()
    raw.close()
    assert broker.stats.protocol_errors == errors_before + 1
    bystander.publish(f"{prefix}/still", b"alive")
    assert bystander.wait_for(1)[0].payload == b"alive"


def test_malformed_packet_after_connect_gets_disconnect_0x81_and_fires_the_will(
    broker: EmbeddedBroker, connect: ClientFactory, prefix: str
) -> None:
    watcher = connect()
    watcher.subscribe(f"{prefix}/will")
    raw = RawClient(broker)
    will = text(f"{prefix}/will") + text("broken")  # will topic, will payload
    body = text("MQTT") + b"\x05\x06\x00\x1e\x00" + text(f"{prefix}-raw") + b"\x00" + will
    raw.send(frame(0x10, body))  # MQTT 5, clean start, will at QoS 0
    assert raw.read_packet()[0] == 0x20
    raw.send(frame(0x82, b"\x00\x01\x00" + text("a/b")[:3]))  # SUBSCRIBE cut short
    first, reason = raw.read_packet()
    assert (first, reason[0]) == (0xE0, 0x81)  # DISCONNECT, malformed packet
    assert raw.closed_by_broker()
    raw.close()
    assert watcher.wait_for(1)[0].payload == b"broken"


def test_transport_reconnects_after_the_broker_restarts_on_the_same_port() -> None:
    port = free_port()
    broker = EmbeddedBroker(port=port).start()
    reconnected = threading.Event()
    events: list[bool] = []

    def listener(up: bool) -> None:
        events.append(up)
        if up and False in events:
            reconnected.set()

    ours = MqttTransport(TransportConfig(port=port, reconnect_min_s=0.05, reconnect_max_s=0.3))
    ours.add_connection_listener(listener)
    ours.start()
    got = Collector()
    ours.subscribe("after/#", got)
    try:
        broker.stop()
        wait_until(lambda: not ours.connected, what="the loss of the broker")
        broker = EmbeddedBroker(port=port).start()
        assert reconnected.wait(10), f"no reconnection, events {events}"
        assert ours.stats.reconnects >= 1
        with MqttTransport(TransportConfig(port=port)) as other:
            other.publish("after/restart", b"hello").wait()
        assert [m.payload for m in got.wait_for(1)] == [b"hello"]
    finally:
        ours.close()
        broker.stop()


def test_python_m_runs_until_sigterm() -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "splitmq.embedded_broker", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        assert line == f"embedded MQTT broker listening on mqtt://127.0.0.1:{port}"
        with MqttTransport(TransportConfig(port=port)) as ours:
            got = Collector()
            ours.subscribe("cli/#", got)
            ours.publish("cli/hello", b"hi").wait()
            assert got.wait_for(1)[0].payload == b"hi"
            process.send_signal(signal.SIGTERM)
            assert process.wait(10) == 0
    finally:
        process.kill()
        process.wait(10)


# -- sessions, queue bytes and the loopback rule ----------------------------------------


def test_a_session_queue_is_bounded_in_bytes_too() -> None:
    """Messages for a client away wait in its session up to max_queued_bytes."""
    with EmbeddedBroker(max_queued_bytes=10_000) as small:
        away = paho.Client(
            CallbackAPIVersion.VERSION2, client_id="away", protocol=V311, clean_session=False
        )
        away.connect(small.host, small.port)
        away.loop_start()
        subscribed = threading.Event()
        away.on_subscribe = lambda *args: subscribed.set()
        away.subscribe("bytes/t", qos=1)
        assert subscribed.wait(10.0)
        away.disconnect()
        away.loop_stop()
        wait_until(lambda: small.stats.clients == 0, what="the client away")
        with MqttTransport(TransportConfig(port=small.port)) as publisher:
            for _ in range(5):
                publisher.publish("bytes/t", bytes(3_000), qos=1).wait()
        wait_until(lambda: small.stats.dropped == 2, what="2 drops (3 x 3,000 bytes kept)")
        # The publisher's clean session ends when the broker has read its DISCONNECT.
        wait_until(lambda: small.stats.clients == 0, what="the publisher gone")
        assert small.stats.sessions == 1


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.1", "example.org"])
def test_refuses_to_listen_beyond_loopback_unless_allowed(host: str) -> None:
    from splitmq.embedded_broker import BrokerConfig
    from splitmq.errors import ConfigError

    with pytest.raises(ConfigError, match="no authentication"):
        BrokerConfig(host=host)
    assert BrokerConfig(host=host, allow_remote=True).host == host
    assert BrokerConfig(host="::1").host == "::1"


def test_help_says_there_is_no_authentication() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "splitmq.embedded_broker", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "NO authentication" in " ".join(out.split())
    assert "--allow-remote" in out
    refused = subprocess.run(
        [sys.executable, "-m", "splitmq.embedded_broker", "--host", "0.0.0.0", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert refused.returncode == 2 and "loopback" in refused.stderr
