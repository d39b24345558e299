"""The client against a scripted broker: what a CONNACK binds it to, and what it
sends after a broker refuses something or the link drops at a chosen moment.

Named after the section of the standard each checks; the ids say which client
(``splitmq``'s own, ``paho``) and which version ran.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from splitmq.errors import TransportError
from splitmq.mqtt.codes import Prop, PropertyValue
from splitmq.transport import InboundMessage, MqttTransport, MqttVersion, Receipt, TransportConfig
from splitmq.transport.config import paced_wait_s
from splitmq.transport.mqtt import PublishRefused
from splitmq.transport.paho_transport import PahoTransport

from ..helpers import wait_until
from .scripted import Link, ScriptedBroker, ack, packet_id, qos1_publish, suback

CONNECT, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP, SUBSCRIBE, PINGREQ = 1, 3, 4, 5, 6, 7, 8, 12
V5, V311 = MqttVersion.V5, MqttVersion.V311

Transport = MqttTransport | PahoTransport
ClientMaker = Callable[..., Transport]


PAHO_RECEIVE_MAXIMUM = (
    "paho-mqtt 2.2 keeps its own max_inflight_messages instead of the broker's Receive "
    "Maximum: it sent all 9 at once against a Receive Maximum of 3 (MQTT-3.3.4-7)"
)
PAHO_PUBREC = (
    "paho-mqtt 2.2 re-sends the PUBLISH after reconnecting although PUBREC had come: "
    "the subscriber may get two copies (MQTT-4.3.3, 4.4)"
)


def engines(
    *names: str, versions: tuple[str, ...] = ("5",), xfail: dict[str, str] | None = None
) -> pytest.MarkDecorator:
    """Parametrize over clients and versions; ``xfail`` maps a client to its known
    deviation (run as ``xfail(strict=True)``)."""
    deviations = xfail or {}
    params = [
        pytest.param(
            name,
            version,
            id=f"scripted-{name}-mqtt{'5' if version == '5' else '311'}",
            marks=[pytest.mark.xfail(strict=True, reason=deviations[name])]
            if name in deviations
            else [],
        )
        for name in names
        for version in versions
    ]
    return pytest.mark.parametrize(("engine", "version"), params)


@pytest.fixture
def client() -> Iterator[ClientMaker]:
    made: list[Transport] = []

    def make(engine: str, version: str, port: int, **config: object) -> Transport:
        settings: dict[str, object] = {
            "port": port,
            "version": V5 if version == "5" else V311,
            "reconnect_min_s": 0.05,
            "reconnect_max_s": 0.2,
        }
        settings.update(config)
        kind = MqttTransport if engine == "splitmq" else PahoTransport
        transport: Transport = kind(TransportConfig(**settings))  # type: ignore[arg-type]
        made.append(transport)
        transport.start(timeout_s=10.0)
        return transport

    yield make
    for transport in made:
        transport.close()


def serve_connack(link: Link, v5: bool = True, **properties: PropertyValue) -> int:
    """Read CONNECT, answer CONNACK with ``properties`` (names of :class:`Prop`)."""
    first, body = link.read()
    assert first >> 4 == CONNECT
    link.connack(v5=v5, properties={Prop[k]: v for k, v in properties.items()})
    return body[6]  # the protocol level


def hold(link: Link) -> None:
    """Answer PINGREQ until the client goes."""
    while True:
        first, _ = link.read(timeout_s=60.0)
        if first >> 4 == PINGREQ:
            link.send(bytes((0xD0, 0)))


@engines("splitmq", "paho")
def test_mqtt5_3_2_2_3_14_server_keep_alive(client: ClientMaker, engine: str, version: str) -> None:
    """3.2.2.3.14: the client MUST use the Server Keep Alive instead of its own
    (MQTT-3.2.2-21): asked for 60 s, told 1 s, it pings within 1.5 s of silence."""
    pinged = threading.Event()

    def script(link: Link) -> None:
        serve_connack(link, SERVER_KEEP_ALIVE=1)
        link.read_until(PINGREQ, timeout_s=10.0)
        pinged.set()
        hold(link)

    with ScriptedBroker(script) as broker:
        client(engine, version, broker.port, keepalive_s=60)
        assert pinged.wait(10.0), "no PINGREQ at the broker's keep-alive"


@engines("splitmq")
def test_mqtt5_3_2_2_3_7_assigned_client_identifier(
    client: ClientMaker, engine: str, version: str
) -> None:
    """3.2.2.3.7: the client takes the Assigned Client Identifier as its own."""

    def script(link: Link) -> None:
        serve_connack(link, ASSIGNED_CLIENT_IDENTIFIER="given-by-the-broker")
        hold(link)

    with ScriptedBroker(script) as broker:
        transport = client(engine, version, broker.port)
        assert transport.client_id == "given-by-the-broker"


@engines("splitmq")
def test_mqtt5_3_2_2_3_5_retain_available(client: ClientMaker, engine: str, version: str) -> None:
    """3.2.2.3.5: with Retain Available 0 the client MUST NOT send a retained PUBLISH
    (MQTT-3.2.2-14): the call fails, a plain publish still goes."""
    flags: list[int] = []

    def script(link: Link) -> None:
        serve_connack(link, RETAIN_AVAILABLE=0)
        first, body = link.read_until(PUBLISH)
        flags.append(first & 0x0F)
        link.send(ack(PUBACK, packet_id(body)))
        hold(link)

    with ScriptedBroker(script) as broker:
        transport = client(engine, version, broker.port)
        with pytest.raises(TransportError, match="Retain Available"):
            transport.publish("a/b", b"x", qos=1, retain=True)
        transport.publish("a/b", b"x", qos=1).wait(5.0)
        assert flags == [0x02]  # QoS 1, no RETAIN


@engines("splitmq")
def test_mqtt5_3_2_2_3_4_maximum_qos(client: ClientMaker, engine: str, version: str) -> None:
    """3.2.2.3.4: the client MUST NOT send a PUBLISH above Maximum QoS (MQTT-3.2.2-11)."""
    qos_seen: list[int] = []

    def script(link: Link) -> None:
        serve_connack(link, MAXIMUM_QOS=1)
        first, body = link.read_until(PUBLISH)
        qos_seen.append((first >> 1) & 0x03)
        link.send(ack(PUBACK, packet_id(body)))
        hold(link)

    with ScriptedBroker(script) as broker:
        transport = client(engine, version, broker.port)
        transport.publish("a/b", b"x", qos=2).wait(5.0)
        assert qos_seen == [1]


@engines("splitmq")
def test_mqtt5_3_2_2_3_11_wildcard_and_shared_subscription_available(
    client: ClientMaker,
    engine: str,
    version: str,
) -> None:
    """3.2.2.3.11 and 3.2.2.3.13: a broker without wildcard or shared subscriptions
    gets none from the client: the call fails at once."""

    def script(link: Link) -> None:
        serve_connack(link, WILDCARD_SUBSCRIPTION_AVAILABLE=0, SHARED_SUBSCRIPTION_AVAILABLE=0)
        hold(link)

    with ScriptedBroker(script) as broker:
        transport = client(engine, version, broker.port)
        for topic_filter in ("a/+", "a/#", "#", "$share/g/a"):
            with pytest.raises(TransportError, match="Available 0"):
                transport.subscribe(topic_filter, lambda m: None)


def _count_window(link: Link, total: int, window: int) -> list[int]:
    """Read PUBLISHes until ``window`` are unacknowledged, check no more come, then ack
    them one by one; the sizes of the unacknowledged sets seen. One too many is counted
    and acknowledged with the rest: a client over the window fails the caller's check
    at once, not by a receipt's timeout."""
    seen: list[int] = []
    received = 0
    unacked: list[int] = []
    while received < total:
        _, body = link.read_until(PUBLISH, timeout_s=10.0)
        received += 1
        unacked.append(packet_id(body))
        if len(unacked) == window or received == total:
            try:
                _, extra = link.read_until(PUBLISH, timeout_s=0.5)
            except TimeoutError:
                seen.append(len(unacked))
            else:  # one too many
                seen.append(len(unacked) + 1)
                received += 1
                unacked.append(packet_id(extra))
            for pid in unacked:
                link.send(ack(PUBACK, pid))
            unacked.clear()
    return seen


@engines("splitmq", "paho", xfail={"paho": PAHO_RECEIVE_MAXIMUM})
def test_mqtt5_3_2_2_3_3_receive_maximum(client: ClientMaker, engine: str, version: str) -> None:
    """3.2.2.3.3 / 4.9: no more unacknowledged QoS 1 PUBLISHes than the broker's
    Receive Maximum (MQTT-3.3.4-7)."""
    windows: list[list[int]] = []

    def script(link: Link) -> None:
        serve_connack(link, RECEIVE_MAXIMUM=3)
        windows.append(_count_window(link, 9, 3))
        hold(link)

    with ScriptedBroker(script) as broker:
        transport = client(engine, version, broker.port)
        receipts = [transport.publish("a/b", b"%d" % i, qos=1) for i in range(9)]
        for receipt in receipts:
            receipt.wait(10.0)
        assert windows == [[3, 3, 3]]


@engines("splitmq", versions=("3.1.1",))
def test_client_in_flight_window_without_receive_maximum(
    client: ClientMaker,
    engine: str,
    version: str,
) -> None:
    """Not a normative statement (MQTT 3.1.1 has no flow control): a 3.1.1 broker
    announces no Receive Maximum, so the client keeps 20 in flight (Mosquitto's
    max_inflight_messages default, past which it drops QoS 2 messages)."""
    windows: list[list[int]] = []

    def script(link: Link) -> None:
        serve_connack(link, v5=False)
        windows.append(_count_window(link, 40, 20))
        hold(link)

    with ScriptedBroker(script) as broker:
        transport = client(engine, version, broker.port)
        receipts = [transport.publish("a/b", b"%d" % i, qos=1) for i in range(40)]
        for receipt in receipts:
            receipt.wait(15.0)
        assert windows == [[20, 20]]


@engines("splitmq", "paho", versions=("5", "3.1.1"), xfail={"paho": PAHO_PUBREC})
def test_mqtt_4_3_3_after_pubrec_only_pubrel_is_sent_again(
    client: ClientMaker,
    engine: str,
    version: str,
) -> None:
    """4.3.3 / 4.4: once PUBREC arrived the sender MUST NOT re-send the PUBLISH
    (MQTT-4.3.3-2 sends PUBREL; on reconnection 4.4 re-sends only PUBREL)."""
    after_reconnect: list[int] = []
    v5 = version == "5"

    def script(link: Link) -> None:
        serve_connack(link, v5=v5)
        if link.number == 0:
            _, body = link.read_until(PUBLISH)
            link.send(ack(PUBREC, packet_id(body)))
            link.read_until(PUBREL)
            link.close()  # the link drops before PUBCOMP
            return
        while True:
            first, body = link.read(timeout_s=10.0)
            if first >> 4 in (PUBLISH, PUBREL):
                after_reconnect.append(first >> 4)
                if first >> 4 == PUBREL:  # a clean session: the broker forgot the id
                    pid = int.from_bytes(body[:2], "big")
                    if v5:  # PUBCOMP 0x92 Packet Identifier not found (MQTT-4.3.3)
                        link.send(bytes((0x70, 3)) + pid.to_bytes(2, "big") + b"\x92")
                    else:
                        link.send(ack(PUBCOMP, pid))
                    hold(link)
                    return
                link.send(ack(PUBREC, packet_id(body)))

    with ScriptedBroker(script) as broker:
        transport = client(engine, version, broker.port)
        transport.publish("a/b", b"once", qos=2).wait(15.0)
        assert after_reconnect == [PUBREL]


@engines("splitmq")
def test_mqtt311_3_2_2_3_return_code_1_to_an_mqtt5_connect(
    client: ClientMaker, engine: str, version: str
) -> None:
    """A 3.1.1 broker answers an MQTT 5 CONNECT with return code 1 (3.1.1 section
    3.2.2.3, "unacceptable protocol level"); the client says so and connects with 3.1.1."""
    levels: list[int] = []

    def script(link: Link) -> None:
        _, body = link.read()
        levels.append(body[6])
        if body[6] == 5:
            link.send(bytes((0x20, 2, 0, 1)))
            link.close()
            return
        link.send(bytes((0x20, 2, 0, 0)))
        hold(link)

    with ScriptedBroker(script) as broker:
        transport = client(engine, version, broker.port)
        assert isinstance(transport, MqttTransport)
        assert transport.protocol_version is MqttVersion.V311
        assert levels == [5, 4]


@engines("splitmq")
def test_mqtt5_3_4_2_1_puback_failure_reason_fails_once(
    client: ClientMaker, engine: str, version: str
) -> None:
    """3.4.2.1: a PUBACK failure reason refuses the message: the caller learns the
    broker's reason; the message is not sent again."""
    publishes: list[int] = []

    def script(link: Link) -> None:
        serve_connack(link)
        while True:
            first, body = link.read(timeout_s=60.0)
            if first >> 4 == PUBLISH:
                publishes.append(packet_id(body))
                link.send(bytes((0x40, 3)) + packet_id(body).to_bytes(2, "big") + b"\x87")

    with ScriptedBroker(script) as broker:
        transport = client(engine, version, broker.port)
        with pytest.raises(PublishRefused, match="Not authorized"):
            transport.publish("a/b", b"x", qos=1).wait(5.0)
        transport.publish("a/c", b"y", qos=1)
        deadline = time.monotonic() + 5.0
        while len(publishes) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(publishes) == 2  # the refused one once, then the next


@engines("splitmq")
def test_mqtt5_4_13_disconnect_on_a_publish_fails_it_once(
    client: ClientMaker, engine: str, version: str
) -> None:
    """4.13: a broker that meets an error closes the connection (DISCONNECT with a
    reason code first in 5.0); the message it closed on fails to its caller with that
    reason after one re-send alone, and is never re-sent in a loop."""
    publishes: list[int] = []

    def script(link: Link) -> None:
        serve_connack(link)
        while True:
            first, _ = link.read(timeout_s=60.0)
            if first >> 4 == PUBLISH:
                publishes.append(link.number)
                link.send(bytes((0xE0, 2, 0x97, 0)))  # DISCONNECT Quota exceeded
                link.close()
                return

    with ScriptedBroker(script) as broker:
        transport = client(engine, version, broker.port)
        with pytest.raises(PublishRefused, match="Quota exceeded"):
            transport.publish("a/b", b"x", qos=1).wait(10.0)
        time.sleep(0.5)  # a loop would show more PUBLISHes by now
        assert publishes == [0, 1]


@engines("splitmq", versions=("5", "3.1.1"))
def test_mqtt_4_13_the_culprit_among_many_in_flight_fails_alone(
    client: ClientMaker, engine: str, version: str
) -> None:
    """4.13 (5.0) / 4.8 (3.1.1): with five messages in flight, the broker closes the
    connection on one of them each time it arrives. That one fails after being sent
    twice; the four others are delivered; nothing is sent in a loop."""
    bad_sends: list[int] = []
    v5 = version == "5"

    def script(link: Link) -> None:
        serve_connack(link, v5=v5)
        while True:
            first, body = link.read(timeout_s=60.0)
            if first >> 4 != PUBLISH:
                continue
            if body.endswith(b"bad"):
                bad_sends.append(link.number)
                if v5:
                    link.send(bytes((0xE0, 2, 0x97, 0)))  # DISCONNECT Quota exceeded
                link.close()
                return
            link.send(ack(PUBACK, packet_id(body)))

    with ScriptedBroker(script) as broker:
        transport = client(engine, version, broker.port)
        payloads = [b"one", b"two", b"bad", b"four", b"five"]
        receipts = [transport.publish("a/b", p, qos=1) for p in payloads]
        with pytest.raises(PublishRefused):
            receipts[2].wait(15.0)
        for index in (0, 1, 3, 4):
            receipts[index].wait(15.0)
        assert len(bad_sends) == 2


@engines("splitmq")
def test_mqtt5_4_13_a_shutdown_blames_no_message(
    client: ClientMaker, engine: str, version: str
) -> None:
    """4.13 / 3.14.2.1: a DISCONNECT whose reason is about the server (0x8B Server
    shutting down), not a packet, fails nothing: the message goes on the next connection."""

    def script(link: Link) -> None:
        serve_connack(link)
        _, body = link.read_until(PUBLISH, timeout_s=60.0)
        if link.number < 2:
            link.send(bytes((0xE0, 2, 0x8B, 0)))  # DISCONNECT Server shutting down
            link.close()
            return
        link.send(ack(PUBACK, packet_id(body)))
        hold(link)

    with ScriptedBroker(script) as broker:
        transport = client(engine, version, broker.port)
        transport.publish("a/b", b"x", qos=1).wait(15.0)
        assert broker.connections == 3


@engines("splitmq")
def test_mqtt5_4_13_disconnect_on_a_subscribe_fails_it(
    client: ClientMaker, engine: str, version: str
) -> None:
    """4.13: a SUBSCRIBE the broker answers by closing the connection fails to its
    caller with the broker's reason, and is not sent again after the reconnect."""
    subscribes: list[int] = []
    again = threading.Event()

    def script(link: Link) -> None:
        serve_connack(link)
        if link.number > 0:
            again.set()
        while True:
            first, _ = link.read(timeout_s=60.0)
            if first >> 4 == SUBSCRIBE:
                subscribes.append(link.number)
                link.send(bytes((0xE0, 2, 0x8F, 0)))  # DISCONNECT Topic filter invalid
                link.close()
                return
            if first >> 4 == PINGREQ:
                link.send(bytes((0xD0, 0)))

    with ScriptedBroker(script) as broker:
        transport = client(engine, version, broker.port)
        with pytest.raises(TransportError, match="Topic filter invalid"):
            transport.subscribe("a/b", lambda m: None, timeout_s=10.0)
        assert again.wait(10.0), "no reconnection"
        assert transport.publish("a/c", b"x", qos=0) is not None
        time.sleep(0.5)  # a re-subscription would have come by now
        assert subscribes == [0]


@engines("splitmq")
def test_client_back_off_is_not_reset_by_connections_that_die_at_once(
    client: ClientMaker,
    engine: str,
    version: str,
) -> None:
    """Not a normative statement: a broker that accepts and drops every connection at
    once is retried with a growing delay, not at the first delay forever."""

    def script(link: Link) -> None:
        serve_connack(link)
        link.sock.shutdown(socket.SHUT_RDWR)

    with ScriptedBroker(script) as broker:
        client(engine, version, broker.port, reconnect_min_s=0.05, reconnect_max_s=5.0)
        time.sleep(3.0)  # measuring a rate: count connections in a fixed window
        # Reset every time: ~60 connections in 3 s at 0.05 s; growing: about 7.
        assert broker.connections <= 12


def serve_subscription(link: Link, v5: bool) -> None:
    """CONNACK, then SUBACK to the client's SUBSCRIBE."""
    serve_connack(link, v5=v5)
    _, body = link.read_until(SUBSCRIBE)
    link.send(suback(int.from_bytes(body[:2], "big"), v5))


@engines("splitmq", "paho", versions=("5", "3.1.1"))
def test_mqtt_4_6_pubacks_leave_in_the_order_the_publishes_came(
    client: ClientMaker, engine: str, version: str
) -> None:
    """4.6: PUBACKs for QoS 1 PUBLISHes go in the order the PUBLISHes were received
    (MQTT-4.6.0-2). Our client holds each to ride the next packet it writes: here the
    PUBLISH its handler makes when the third arrives comes after all three."""
    v5 = version == "5"
    seen: list[tuple[int, int]] = []  # (packet type, packet id or 0)

    def script(link: Link) -> None:
        serve_subscription(link, v5)
        link.send(b"".join(qos1_publish("a/b", pid, b"x", v5) for pid in (7, 3, 9)))
        while len(seen) < 4:
            first, body = link.read(timeout_s=10.0)
            if first >> 4 == PUBACK:
                seen.append((PUBACK, int.from_bytes(body[:2], "big")))
            elif first >> 4 == PUBLISH:
                seen.append((PUBLISH, 0))
        hold(link)

    with ScriptedBroker(script) as broker:
        transport = client(engine, version, broker.port)
        arrived: list[bytes] = []

        def handler(message: InboundMessage) -> None:
            arrived.append(bytes(message.payload))
            if len(arrived) == 3:
                transport.publish("c/d", b"answer", qos=0)

        transport.subscribe("a/#", handler, qos=1, timeout_s=10.0)
        wait_until(lambda: len(seen) == 4, what="three PUBACKs and the handler's PUBLISH")
        assert [pid for kind, pid in seen if kind == PUBACK] == [7, 3, 9]
        if engine == "splitmq":
            assert seen[-1] == (PUBLISH, 0)


WAITS = ("configured", "paced")
"""How a test's client gets its acknowledgement deadlines: from its config, or paced
from the shipped ones by ``pace_acks`` (an agent's stage-time) once connected."""


def waiting(
    client: ClientMaker, engine: str, version: str, port: int, *, how: str, stage_s: float
) -> MqttTransport:
    """A client whose deadlines are :func:`paced_wait_s` of ``stage_s``, set as ``how``
    says (one of :data:`WAITS`)."""
    wait_s = paced_wait_s(1e-3, stage_s)
    config = {"ack_hold_s": wait_s, "lone_ack_wait_s": wait_s} if how == "configured" else {}
    transport = client(engine, version, port, **config)
    assert isinstance(transport, MqttTransport)
    if how == "paced":
        transport.pace_acks(stage_s)
    return transport


@engines("splitmq", versions=("5", "3.1.1"))
@pytest.mark.parametrize("how", WAITS)
def test_a_lone_puback_is_read_with_the_next_packet_or_once_its_wait_is_over(
    client: ClientMaker, engine: str, version: str, how: str
) -> None:
    """Not a normative statement (MQTT sets no time within which a client reads an
    acknowledgement): a PUBACK that comes alone waits, unread, up to
    ``lone_ack_wait_s`` (or 1.5 paced stage-times) for the next packet, and is read
    with it, before it (section 4.6: in the order they were sent); one that nothing
    follows is read once the wait is over."""
    v5 = version == "5"
    follow = threading.Event()

    def script(link: Link) -> None:
        serve_subscription(link, v5)
        _, body = link.read_until(PUBLISH, timeout_s=10.0)
        link.send(ack(PUBACK, packet_id(body)))
        follow.wait(10.0)
        publish = b"\x00\x03a/b" + (b"\x00" if v5 else b"")  # QoS 0, no payload
        link.send(bytes((0x30, len(publish))) + publish)
        _, body = link.read_until(PUBLISH, timeout_s=10.0)
        link.send(ack(PUBACK, packet_id(body)))  # alone, and nothing after it
        hold(link)

    with ScriptedBroker(script) as broker:
        transport = waiting(client, engine, version, broker.port, how=how, stage_s=0.7)
        done_at_publish: list[bool] = []
        receipts: list[Receipt] = []
        transport.subscribe(
            "a/#", lambda m: done_at_publish.append(is_done(receipts[0])), qos=1, timeout_s=10.0
        )
        receipts.append(transport.publish("first", b"1", qos=1))
        wait_until(
            lambda: not is_done(receipts[0]) and unread(transport) == 4,
            what="the PUBACK waiting, unread, at the client's socket",
        )
        follow.set()
        wait_until(lambda: bool(done_at_publish), what="the PUBLISH after the PUBACK")
        assert done_at_publish == [True]  # the PUBACK was read first, with the PUBLISH
        transport.publish("second", b"2", qos=1).wait(10.0)  # alone: once the wait is over


def unread(transport: MqttTransport) -> int:
    """Bytes waiting at the transport's socket, unread."""
    channel = transport._channel
    assert channel is not None
    try:
        return len(channel.sock.recv(64, socket.MSG_PEEK | socket.MSG_DONTWAIT))
    except BlockingIOError:
        return 0


def is_done(receipt: Receipt) -> bool:
    """Whether a receipt's message is acknowledged, without waiting."""
    try:
        receipt.wait(0)
    except TransportError:
        return False
    return True


@engines("splitmq", versions=("5", "3.1.1"))
@pytest.mark.parametrize("how", WAITS)
def test_a_held_puback_goes_alone_once_due(
    client: ClientMaker, engine: str, version: str, how: str
) -> None:
    """Not a normative statement (MQTT sets no time for a PUBACK): a client that writes
    nothing after a QoS 1 message still acknowledges it, ``ack_hold_s`` (or 1.5 paced
    stage-times) after it came."""
    v5 = version == "5"
    waited: list[float] = []

    def script(link: Link) -> None:
        serve_subscription(link, v5)
        sent_at = time.monotonic()
        link.send(qos1_publish("a/b", 11, b"x", v5))
        _, body = link.read_until(PUBACK, timeout_s=10.0)
        waited.append(time.monotonic() - sent_at)
        assert int.from_bytes(body[:2], "big") == 11
        hold(link)

    with ScriptedBroker(script) as broker:
        transport = waiting(client, engine, version, broker.port, how=how, stage_s=0.2)
        transport.subscribe("a/#", lambda message: None, qos=1, timeout_s=10.0)
        wait_until(lambda: bool(waited), what="the PUBACK")
        assert waited[0] >= 0.29
