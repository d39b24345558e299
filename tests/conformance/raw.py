"""A bare MQTT client over a socket, for broker tests that need what a real client
library hides: CleanSession=0, a message left unacknowledged, a Will Delay, a socket
cut at a chosen moment."""

from __future__ import annotations

import contextlib
import socket
import struct
from dataclasses import dataclass

from splitmq.mqtt.codes import PacketType, Prop, PropertyValue, Version
from splitmq.mqtt.packets import (
    ConnAck,
    Publish,
    WillMessage,
    decode_server_packet,
    encode_ack,
    encode_client_disconnect,
    encode_connect,
    encode_publish,
    encode_subscribe,
)

from .scripted import _frame


@dataclass
class Received:
    first: int
    body: bytes

    @property
    def kind(self) -> int:
        return self.first >> 4


class RawClient:
    """Connects, sends packets, reads packets with a timeout."""

    def __init__(self, port: int, version: Version):
        self.version = version
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10.0)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buffer = b""
        self._next_id = 0

    def connect(
        self,
        client_id: str,
        *,
        clean: bool = True,
        keepalive_s: int = 60,
        session_expiry_s: int | None = None,
        will: WillMessage | None = None,
    ) -> ConnAck:
        properties: list[tuple[int, PropertyValue]] = []
        if session_expiry_s is not None:
            properties.append((Prop.SESSION_EXPIRY_INTERVAL, session_expiry_s))
        self.sock.sendall(
            encode_connect(
                self.version,
                client_id,
                keepalive_s=keepalive_s,
                clean_start=clean,
                will=will,
                properties=properties,
            )
        )
        packet = self.read()
        connack = decode_server_packet(packet.first, packet.body, self.version)
        assert isinstance(connack, ConnAck), connack
        return connack

    def subscribe(self, topic_filter: str, qos: int) -> None:
        self._next_id += 1
        self.sock.sendall(encode_subscribe(self.version, self._next_id, topic_filter, qos))
        assert self.read_until(PacketType.SUBACK).body[-1] < 0x80

    def publish(self, topic: str, payload: bytes, qos: int, expiry_s: int | None = None) -> None:
        self._next_id += 1
        properties: list[tuple[int, PropertyValue]] = []
        if expiry_s is not None:
            properties.append((Prop.MESSAGE_EXPIRY_INTERVAL, expiry_s))
        packet_id = self._next_id if qos else None
        self.sock.sendall(
            encode_publish(
                self.version,
                topic,
                payload,
                qos=qos,
                retain=False,
                packet_id=packet_id,
                properties=properties,
            )
        )
        if qos == 1:
            self.read_until(PacketType.PUBACK)
        elif qos == 2:  # the whole exchange: a broker may route it only on PUBREL
            self.read_until(PacketType.PUBREC)
            self.sock.sendall(encode_ack(PacketType.PUBREL, self._next_id, self.version))
            self.read_until(PacketType.PUBCOMP)

    def read(self, timeout_s: float = 10.0) -> Received:
        self.sock.settimeout(timeout_s)
        while True:
            header = _frame(self._buffer)
            if header is not None:
                first, start, end = header
                body, self._buffer = self._buffer[start:end], self._buffer[end:]
                return Received(first, body)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the broker closed the connection")
            self._buffer += chunk

    def read_until(self, kind: int, timeout_s: float = 10.0) -> Received:
        while True:
            packet = self.read(timeout_s)
            if packet.kind == kind:
                return packet

    def next_publish(self, timeout_s: float = 10.0) -> tuple[Publish, bool]:
        """The next PUBLISH and its DUP flag (not acknowledged: the test decides)."""
        packet = self.read_until(PacketType.PUBLISH, timeout_s)
        publish = decode_server_packet(packet.first, packet.body, self.version)
        assert isinstance(publish, Publish)
        return publish, bool(packet.first & 0x08)

    def no_publish(self, within_s: float) -> bool:
        """True if no PUBLISH comes within ``within_s`` (a bounded wait for absence)."""
        try:
            self.read_until(PacketType.PUBLISH, within_s)
        except TimeoutError:
            return True
        return False

    def ack(self, publish: Publish) -> None:
        assert publish.packet_id is not None
        kind = PacketType.PUBACK if publish.qos == 1 else PacketType.PUBREC
        self.sock.sendall(encode_ack(kind, publish.packet_id, self.version))

    def disconnect(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.sendall(encode_client_disconnect(self.version))
        self.close()

    def sever(self) -> None:
        """Drop the connection without DISCONNECT (the will fires)."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def packet_identifier(body: bytes) -> int:
    (length,) = struct.unpack_from("!H", body, 0)
    return int(struct.unpack_from("!H", body, 2 + length)[0])
