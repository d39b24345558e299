"""The MQTT-over-WebSocket relay against independent implementations.

Clients: ``websockets`` (an RFC 6455 implementation independent of the server's
aiohttp), paho-mqtt with ``transport="websockets"``, and raw sockets for the bytes of
the handshake; the broker is a real Mosquitto. Sections named are RFC 6455's, and MQTT
3.1.1 §6 / MQTT 5.0 §6 (MQTT over WebSocket).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import socket
import ssl
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

pytest.importorskip("aiohttp", reason="needs aiohttp: pip install -e '.[web]'")

from splitmq.mosquitto import Mosquitto, free_port
from splitmq.transport import parse_broker_url
from splitmq.web.config import WebConfig
from splitmq.web.server import WebServer

pytestmark = pytest.mark.integration

TIMEOUT_S = 10.0
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 §1.3


@pytest.fixture(scope="module")
def relay(mosquitto: Mosquitto) -> Iterator[WebServer]:
    config = WebConfig(
        broker=parse_broker_url(mosquitto.url()),
        host="127.0.0.1",
        port=0,
        fleet_view=False,
        max_message_bytes=2 * 1024 * 1024,
    )
    server = WebServer(config).start()
    yield server
    server.stop()


def ws_url(server: WebServer) -> str:
    return f"ws://127.0.0.1:{server.port}/mqtt"


def mqtt_connect_packet(client_id: str, *, clean: bool = True) -> bytes:
    """An MQTT 3.1.1 CONNECT (§3.1) written by hand: protocol level 4, keep-alive 60 s."""
    payload = struct.pack("!H", len(client_id)) + client_id.encode()
    variable = b"\x00\x04MQTT\x04" + bytes([0x02 if clean else 0]) + struct.pack("!H", 60)
    body = variable + payload
    return bytes([0x10, len(body)]) + body


def open_ws(server: WebServer, **options: object) -> ClientConnection:
    options.setdefault("subprotocols", ["mqtt"])
    options.setdefault("compression", None)
    options.setdefault("proxy", None)
    return connect(ws_url(server), open_timeout=TIMEOUT_S, **options)  # type: ignore[arg-type]


def paho_client(
    server: WebServer, client_id: str, *, will: tuple[str, bytes] | None = None
) -> paho.Client:
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, transport="websockets")
    client.ws_set_options(path="/mqtt")
    if will is not None:
        client.will_set(will[0], will[1], qos=1)
    connected = threading.Event()
    client.on_connect = lambda *_: connected.set()
    client.connect("127.0.0.1", server.port, keepalive=30)
    client.loop_start()
    assert connected.wait(TIMEOUT_S), "paho did not connect through the relay"
    return client


class Inbox:
    """Messages a paho client received, waited for with a timeout."""

    def __init__(self, client: paho.Client, topic: str):
        self.messages: list[paho.MQTTMessage] = []
        self._cond = threading.Condition()
        subscribed = threading.Event()
        client.on_message = self._on_message
        client.on_subscribe = lambda *_: subscribed.set()
        client.subscribe(topic, qos=1)
        assert subscribed.wait(TIMEOUT_S)

    def _on_message(self, client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        with self._cond:
            self.messages.append(message)
            self._cond.notify_all()

    def wait(self, count: int = 1) -> list[paho.MQTTMessage]:
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.messages) >= count, TIMEOUT_S), (
                f"{len(self.messages)} of {count} messages arrived"
            )
            return list(self.messages)


def stop(*clients: paho.Client) -> None:
    for client in clients:
        client.disconnect()
        client.loop_stop()


# -- RFC 6455 §4: the opening handshake -------------------------------------------------------


def test_handshake_accept_key_and_subprotocol_rfc6455_4_2_2(relay: WebServer) -> None:
    """§4.2.2: 101, Sec-WebSocket-Accept = base64(sha1(key + GUID)), the chosen subprotocol."""
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET /mqtt HTTP/1.1\r\nHost: 127.0.0.1:{relay.port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Protocol: foo, mqtt\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", relay.port), timeout=TIMEOUT_S) as sock:
        sock.sendall(request.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            assert chunk, f"the server closed during the handshake: {head!r}"
            head += chunk
    lines = head.split(b"\r\n\r\n")[0].decode().split("\r\n")
    assert lines[0].startswith("HTTP/1.1 101"), lines[0]
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    expected = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
    assert headers["sec-websocket-accept"] == expected
    assert headers["upgrade"].lower() == "websocket"
    assert (
        headers["sec-websocket-protocol"] == "mqtt"
    )  # one of those offered (§4.2.2 /subprotocol/)


def test_subprotocol_mqtt_is_negotiated_mqtt_6(relay: WebServer) -> None:
    with open_ws(relay, subprotocols=["mqtt"]) as ws:
        assert ws.subprotocol == "mqtt"


def test_a_client_not_offering_mqtt_is_refused_with_a_reason(relay: WebServer) -> None:
    """MQTT §6: the client MUST offer "mqtt"; the handshake fails (§4.2.2 allows refusing)."""
    with pytest.raises(InvalidStatus) as refused:
        open_ws(relay, subprotocols=["chat"])
    assert refused.value.response.status_code == 400
    assert b"subprotocol 'mqtt'" in refused.value.response.body


def test_a_plain_get_is_told_to_upgrade(relay: WebServer) -> None:
    """§4.2.1: a request that is not a WebSocket upgrade gets an HTTP answer, not a hang."""
    import urllib.error
    import urllib.request

    with pytest.raises(urllib.error.HTTPError) as answer:
        urllib.request.urlopen(f"http://127.0.0.1:{relay.port}/mqtt", timeout=TIMEOUT_S)
    assert answer.value.code == 426
    assert b"MQTT-over-WebSocket" in answer.value.read()


# -- RFC 6455 §5: frames ----------------------------------------------------------------------


def test_binary_frames_carry_mqtt_connect_and_connack_rfc6455_5_6(relay: WebServer) -> None:
    """§5.6 binary frames; MQTT §6: a packet may span frames (CONNECT sent in two)."""
    packet = mqtt_connect_packet("relay-frames")
    with open_ws(relay) as ws:
        ws.send(packet[:5])
        ws.send(packet[5:])
        reply = ws.recv(timeout=TIMEOUT_S)
        assert isinstance(reply, bytes)
        assert reply == b"\x20\x02\x00\x00"  # CONNACK, session present 0, accepted (§3.2)


def test_ping_is_answered_with_the_same_payload_rfc6455_5_5_2(relay: WebServer) -> None:
    """§5.5.2/§5.5.3: a Pong carries the Ping's application data (websockets checks it)."""
    with open_ws(relay) as ws:
        pong = ws.ping(b"splitmq")
        assert pong.wait(TIMEOUT_S)


def test_client_close_is_echoed_rfc6455_5_5_1(relay: WebServer) -> None:
    """§5.5.1 / §7.1.2: the server answers a Close with a Close; code 1000 comes back."""
    ws = open_ws(relay)
    ws.send(mqtt_connect_packet("relay-close"))
    ws.recv(timeout=TIMEOUT_S)
    ws.close(code=1000, reason="bye")
    assert ws.protocol.close_rcvd is not None, "no Close came back"
    assert ws.protocol.close_rcvd.code == 1000
    assert ws.protocol.close_rcvd_then_sent is False  # ours first, then the server's


def test_broker_closing_closes_the_websocket_rfc6455_7_1_2(relay: WebServer) -> None:
    """The broker ends the TCP connection (MQTT DISCONNECT): the relay starts the closing
    handshake (§7.1.2) with 1000 instead of dropping the TCP connection."""
    with open_ws(relay) as ws:
        ws.send(mqtt_connect_packet("relay-disconnect"))
        ws.recv(timeout=TIMEOUT_S)
        ws.send(b"\xe0\x00")  # DISCONNECT (§3.14)
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=TIMEOUT_S)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000


def test_text_frame_is_refused_with_1003_and_nothing_else_is_lost(relay: WebServer) -> None:
    """MQTT §6: data other than binary frames closes that connection (1003, §7.4.1)."""
    watcher = paho_client(relay, "relay-text-watcher")
    inbox = Inbox(watcher, "relay/text/#")
    with open_ws(relay) as ws:
        ws.send("CONNECT as text")
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=TIMEOUT_S)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1003
        assert "binary frames only" in closed.value.rcvd.reason
    watcher.publish("relay/text/after", b"still here", qos=1)
    assert inbox.wait()[0].payload == b"still here"
    stop(watcher)


def test_garbage_frame_closes_that_connection_only_rfc6455_5_1(relay: WebServer) -> None:
    """§5.1: a client frame must be masked, and §5.2 opcodes 0x3-0x7 are reserved: the
    server fails that connection (1002) and every other keeps working."""
    watcher = paho_client(relay, "relay-garbage-watcher")
    inbox = Inbox(watcher, "relay/garbage/#")
    with socket.create_connection(("127.0.0.1", relay.port), timeout=TIMEOUT_S) as sock:
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall(
            f"GET /mqtt HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Protocol: mqtt\r\n\r\n".encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(4096)
        sock.sendall(b"\x83\x05hello" + os.urandom(64))  # reserved opcode 3, unmasked
        answer = b""
        with contextlib.suppress(OSError):
            while chunk := sock.recv(4096):
                answer += chunk
        assert answer[:1] == b"\x88", f"no Close frame: {answer!r}"  # FIN + opcode 8
        assert struct.unpack("!H", answer[2:4])[0] == 1002
    watcher.publish("relay/garbage/after", b"still here", qos=1)
    assert inbox.wait()[0].payload == b"still here"
    stop(watcher)


def test_message_above_the_limit_is_refused_with_1009(mosquitto: Mosquitto) -> None:
    """§7.4.1: 1009, a message too big to process (the limit: the broker's packet size).

    The message is small enough to be read whole before the server closes: a server that
    closes with unread bytes in its socket resets the connection (TCP), and the client
    may then lose the Close frame in flight."""
    config = WebConfig(
        broker=parse_broker_url(mosquitto.url()),
        host="127.0.0.1",
        port=0,
        fleet_view=False,
        max_message_bytes=16 * 1024,
    )
    server = WebServer(config).start()
    try:
        with open_ws(server, max_size=None) as ws:
            ws.send(b"\x00" * (20 * 1024))
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=TIMEOUT_S)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    finally:
        server.stop()


def test_unreachable_broker_closes_with_1011_and_says_why() -> None:
    config = WebConfig(
        broker=parse_broker_url(f"mqtt://127.0.0.1:{free_port()}"),
        host="127.0.0.1",
        port=0,
        fleet_view=False,
    )
    server = WebServer(config).start()
    try:
        with open_ws(server) as ws:
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=TIMEOUT_S)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011
            assert "cannot reach the broker" in closed.value.rcvd.reason
    finally:
        server.stop()


# -- MQTT through the relay with paho ---------------------------------------------------------


@pytest.mark.parametrize("size", [4 * 1024, 600 * 1024])
def test_paho_over_websockets_round_trip(relay: WebServer, size: int) -> None:
    client = paho_client(relay, f"relay-paho-{size}")
    inbox = Inbox(client, f"relay/rt/{size}")
    payload = os.urandom(size)
    client.publish(f"relay/rt/{size}", payload, qos=1)
    assert inbox.wait()[0].payload == payload
    stop(client)


def test_many_messages_arrive_in_order(relay: WebServer) -> None:
    sender = paho_client(relay, "relay-order-sender")
    receiver = paho_client(relay, "relay-order-receiver")
    inbox = Inbox(receiver, "relay/order")
    for i in range(200):
        sender.publish("relay/order", str(i).encode(), qos=1)
    assert [int(m.payload) for m in inbox.wait(200)] == list(range(200))
    stop(sender, receiver)


def test_a_client_that_vanishes_gets_its_will_published(relay: WebServer) -> None:
    """The page's tab dies: the relay closes the broker connection without DISCONNECT,
    so the broker publishes the will; other connections are untouched."""
    watcher = paho_client(relay, "relay-will-watcher")
    inbox = Inbox(watcher, "relay/will/#")
    doomed = paho_client(relay, "relay-will-doomed", will=("relay/will/doomed", b"offline"))
    sock = doomed.socket()
    assert sock is not None
    doomed.loop_stop()
    # Abort the TCP connection under paho (RST, no WebSocket close, no MQTT DISCONNECT).
    raw: socket.socket = sock._socket  # type: ignore[attr-defined]  # paho's WebSocket wrapper
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    raw.close()
    message = inbox.wait()[0]
    assert (message.topic, message.payload) == ("relay/will/doomed", b"offline")
    stop(watcher)


# -- wss: the secure profile ------------------------------------------------------------------


@pytest.fixture(scope="module")
def secure_relay(secure_mosquitto) -> Iterator[tuple[WebServer, object]]:
    certs = secure_mosquitto.ca_cert.parent
    config = WebConfig(
        broker=parse_broker_url(
            secure_mosquitto.broker.url("mqtts"), ca_certs=secure_mosquitto.ca_cert
        ),
        host="127.0.0.1",
        port=0,
        fleet_view=False,
        certfile=certs / "broker.crt",
        keyfile=certs / "broker.key",
    )
    server = WebServer(config).start()
    yield server, secure_mosquitto
    server.stop()


def secure_paho(
    server: WebServer, ca: Path, user: str, password: str
) -> tuple[paho.Client, threading.Event, list[ReasonCode]]:
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=user, transport="websockets")
    client.ws_set_options(path="/mqtt")
    client.tls_set(ca_certs=str(ca), tls_version=ssl.PROTOCOL_TLS_CLIENT)
    client.username_pw_set(user, password)
    answered = threading.Event()
    codes: list[ReasonCode] = []

    def on_connect(
        client: paho.Client, userdata: object, flags: object, code: ReasonCode, *_: object
    ) -> None:
        codes.append(code)
        answered.set()

    client.on_connect = on_connect
    client.connect("localhost", server.port, keepalive=30)
    client.loop_start()
    return client, answered, codes


def test_wss_agent_credentials_under_the_acl(secure_relay) -> None:
    """wss:// with the development CA; the page's own agent user name: its status topic is
    allowed (the coordinator reads it over mqtts), a wrong password is refused."""
    server, secure = secure_relay
    coordinator, answered, codes = secure_paho(
        server, secure.ca_cert, "coordinator", secure.password("coordinator")
    )
    assert answered.wait(TIMEOUT_S) and not codes[0].is_failure, codes
    inbox = Inbox(coordinator, "splitmq/v1/agents/+/status")
    phone, answered, codes = secure_paho(
        server, secure.ca_cert, "phone-1", secure.password("phone-1")
    )
    assert answered.wait(TIMEOUT_S) and not codes[0].is_failure, codes
    phone.publish("splitmq/v1/agents/phone-1/status", b"online", qos=1)
    assert inbox.wait()[0].payload == b"online"
    stop(phone, coordinator)

    intruder, answered, codes = secure_paho(server, secure.ca_cert, "phone-1", "wrong")
    assert answered.wait(TIMEOUT_S)
    assert codes[0].is_failure, codes
    intruder.loop_stop()
    intruder.disconnect()
