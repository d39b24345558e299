"""What a broker keeps for a client between connections, against the embedded broker
and Mosquitto, driven by a bare client (``raw``) that can leave messages unacknowledged
and cut its socket at will.

Each test is named after the section of the standard it checks.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from splitmq.embedded_broker import EmbeddedBroker
from splitmq.mqtt.codes import PacketType, Prop, Version
from splitmq.mqtt.packets import ConnAck, WillMessage, encode_publish, get_property
from splitmq.transport import MqttTransport, TransportConfig

from .brokers import BrokerProcess, MosquittoUnderTest
from .conftest import Case
from .raw import RawClient

pytestmark = [
    pytest.mark.integration,
    pytest.mark.brokers("embedded", "mosquitto"),
    pytest.mark.clients("raw"),
]


def level(case: Case) -> Version:
    return Version.V5 if case.version == "5" else Version.V311


RawFactory = Callable[[], RawClient]


@pytest.fixture
def raw(case: Case, broker: BrokerProcess) -> Iterator[RawFactory]:
    opened: list[RawClient] = []

    def make() -> RawClient:
        client = RawClient(broker.port, level(case))
        opened.append(client)
        return client

    yield make
    for client in opened:
        client.close()


def kept(client: RawClient, client_id: str, case: Case) -> ConnAck:
    """CONNECT asking to keep the session: CleanSession=0 (3.1.1), or Clean Start 0
    with a Session Expiry Interval (5.0)."""
    expiry = 60 if case.version == "5" else None
    return client.connect(client_id, clean=False, session_expiry_s=expiry)


def test_mqtt_3_2_2_2_session_present(case: Case, raw: RawFactory, prefix: str) -> None:
    """3.2.2.2 (MQTT-3.2.2-1..3): session present is 0 for a new or clean session and
    1 when a kept session is resumed."""
    client_id = f"sp-{uuid.uuid4().hex[:8]}"
    first = raw()
    assert not kept(first, client_id, case).session_present
    first.disconnect()
    again = raw()
    assert kept(again, client_id, case).session_present
    again.disconnect()
    clean = raw()
    assert not clean.connect(client_id, clean=True).session_present
    clean.disconnect()


def test_mqtt_3_1_2_4_kept_session_gets_what_was_published_while_away(
    case: Case, raw: RawFactory, prefix: str
) -> None:
    """3.1.2.4 (3.1.1 CleanSession) / 3.1.2.4 + 3.1.2.11.2 (5.0): a kept session
    holds the subscriptions and the QoS 1 and 2 messages that arrive while the client
    is away (MQTT-3.1.2-5)."""
    client_id = f"away-{uuid.uuid4().hex[:8]}"
    subscriber = raw()
    kept(subscriber, client_id, case)
    subscriber.subscribe(f"{prefix}/t", 2)
    subscriber.disconnect()
    publisher = raw()
    publisher.connect(f"pub-{client_id}")
    publisher.publish(f"{prefix}/t", b"q1", qos=1)
    publisher.publish(f"{prefix}/t", b"q0", qos=0)
    publisher.publish(f"{prefix}/t", b"end", qos=1)
    back = raw()
    assert kept(back, client_id, case).session_present
    got = []
    for _ in range(2):
        publish, _ = back.next_publish()
        back.ack(publish)
        got.append(publish.payload)
    assert got == [b"q1", b"end"]  # QoS 0 is not kept for a client away


def test_mqtt_4_4_unacknowledged_message_sent_again_with_dup(
    case: Case, raw: RawFactory, prefix: str
) -> None:
    """4.4 (MQTT-4.4.0-1): on resuming a session the broker re-sends an unacknowledged
    PUBLISH with its original packet identifier and DUP set."""
    client_id = f"dup-{uuid.uuid4().hex[:8]}"
    subscriber = raw()
    kept(subscriber, client_id, case)
    subscriber.subscribe(f"{prefix}/t", 1)
    publisher = raw()
    publisher.connect(f"pub-{client_id}")
    publisher.publish(f"{prefix}/t", b"once", qos=1)
    first, dup = subscriber.next_publish()
    assert not dup
    subscriber.sever()  # no PUBACK
    back = raw()
    assert kept(back, client_id, case).session_present
    again, dup = back.next_publish()
    assert (again.payload, again.packet_id, dup) == (b"once", first.packet_id, True)
    back.ack(again)


@pytest.mark.versions("5")
def test_mqtt5_3_1_2_11_2_session_expiry_interval(case: Case, raw: RawFactory, prefix: str) -> None:
    """3.1.2.11.2: the session ends when the Session Expiry Interval passes after the
    connection closed (MQTT-3.1.2-23); before that it is resumed."""
    client_id = f"exp-{uuid.uuid4().hex[:8]}"
    first = raw()
    first.connect(client_id, clean=False, session_expiry_s=1)
    first.disconnect()
    time.sleep(2.5)  # the expiry is the behaviour under test: let it pass
    late = raw()
    assert not late.connect(client_id, clean=False, session_expiry_s=1).session_present


@pytest.mark.versions("5")
def test_mqtt5_3_3_2_3_3_message_expiry_while_queued(
    case: Case, raw: RawFactory, prefix: str
) -> None:
    """3.3.2.3.3 (MQTT-3.3.2-5): a message whose expiry passes before it could be
    delivered to a subscriber away is not delivered to it."""
    client_id = f"mexp-{uuid.uuid4().hex[:8]}"
    subscriber = raw()
    subscriber.connect(client_id, clean=False, session_expiry_s=60)
    subscriber.subscribe(f"{prefix}/t", 1)
    subscriber.disconnect()
    publisher = raw()
    publisher.connect(f"pub-{client_id}")
    publisher.publish(f"{prefix}/t", b"stale", qos=1, expiry_s=1)
    publisher.publish(f"{prefix}/t", b"fresh", qos=1, expiry_s=60)
    time.sleep(2.2)  # the expiry is the behaviour under test: let it pass
    back = raw()
    back.connect(client_id, clean=False, session_expiry_s=60)
    publish, _ = back.next_publish()
    assert publish.payload == b"fresh"
    remaining = get_property(publish.properties, Prop.MESSAGE_EXPIRY_INTERVAL)
    assert remaining is not None and remaining <= 58  # 3.3.2.3.3: the time left


@pytest.mark.versions("5")
def test_mqtt5_3_1_3_2_2_will_delay_interval(case: Case, raw: RawFactory, prefix: str) -> None:
    """3.1.3.2.2: the will waits for its Will Delay Interval (MQTT-3.1.3-9: not sent if
    the client comes back in time); then it goes out."""
    watcher = raw()
    watcher.connect(f"watch-{uuid.uuid4().hex[:8]}")
    watcher.subscribe(f"{prefix}/will", 1)
    client_id = f"wd-{uuid.uuid4().hex[:8]}"
    will = WillMessage(f"{prefix}/will", b"late", 1, False, ((Prop.WILL_DELAY_INTERVAL, 2),))
    doomed = raw()
    doomed.connect(client_id, clean=False, session_expiry_s=60, will=will)
    doomed.sever()
    back = raw()
    back.connect(client_id, clean=False, session_expiry_s=60, will=will)
    assert watcher.no_publish(3.0), "a will went out although the client came back"
    cut = time.monotonic()
    back.sever()
    publish, _ = watcher.next_publish(timeout_s=10.0)
    assert publish.payload == b"late"
    assert time.monotonic() - cut >= 1.0


@pytest.fixture(scope="module")
def capped_brokers(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, int]]:
    """An embedded broker and a Mosquitto that both cap the keep-alive at 10 s."""
    embedded = EmbeddedBroker(max_keepalive_s=10).start()
    mosquitto = MosquittoUnderTest(tmp_path_factory.mktemp("capped"), "max_keepalive 10")
    mosquitto.start()
    try:
        yield {"embedded": embedded.port, "mosquitto": mosquitto.port}
    finally:
        embedded.stop()
        mosquitto.stop()


@pytest.mark.versions("5")
def test_mqtt5_3_2_2_3_14_server_keep_alive(case: Case, capped_brokers: dict[str, int]) -> None:
    """3.2.2.3.14: a broker may impose a shorter keep-alive; it says so in CONNACK."""
    client = RawClient(capped_brokers[case.broker], Version.V5)
    try:
        connack = client.connect(f"ka-{uuid.uuid4().hex[:8]}", keepalive_s=60)
        assert get_property(connack.properties, Prop.SERVER_KEEP_ALIVE) == 10
    finally:
        client.close()
    config = TransportConfig(port=capped_brokers[case.broker], keepalive_s=60)
    with MqttTransport(config) as ours:  # MQTT-3.2.2-21: the client uses it
        assert ours.keepalive_s == 10


def test_mqtt_4_4_pubrel_sent_again_after_pubrec(case: Case, raw: RawFactory, prefix: str) -> None:
    """4.4 / 4.3.3: once the client answered PUBREC the broker sends PUBREL again on
    resuming the session, never the PUBLISH."""
    client_id = f"rel-{uuid.uuid4().hex[:8]}"
    subscriber = raw()
    kept(subscriber, client_id, case)
    subscriber.subscribe(f"{prefix}/t", 2)
    publisher = raw()
    publisher.connect(f"pub-{client_id}")
    publisher.publish(f"{prefix}/t", b"exactly once", qos=2)
    publish, _ = subscriber.next_publish()
    subscriber.ack(publish)  # PUBREC
    subscriber.read_until(PacketType.PUBREL)
    subscriber.sever()  # no PUBCOMP
    back = raw()
    assert kept(back, client_id, case).session_present
    packet = back.read()
    assert (packet.kind, int.from_bytes(packet.body[:2], "big")) == (
        PacketType.PUBREL,
        publish.packet_id,
    )


def test_mqtt_3_3_2_1_wildcards_in_a_topic_name_close_the_connection(
    case: Case, raw: RawFactory, prefix: str
) -> None:
    """3.3.2.1 (MQTT-3.3.2-2): a Topic Name holds no wildcard; a broker receiving one
    treats it as a protocol violation and closes the connection (4.8 / 4.13)."""
    client = raw()
    client.connect(f"bad-{uuid.uuid4().hex[:8]}")
    client.sock.sendall(
        encode_publish(client.version, f"{prefix}/+", b"x", qos=1, retain=False, packet_id=1)
    )
    with pytest.raises(ConnectionError):
        while True:  # an MQTT 5 broker may send DISCONNECT first; then it closes
            assert client.read().kind == PacketType.DISCONNECT
