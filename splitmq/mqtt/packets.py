"""MQTT 3.1.1 and 5.0 packets, for both ends of a connection.

Pure functions over bytes, no I/O and no state. Decoding raises
:class:`ProtocolViolation` (with the MQTT 5 reason code to close with) for anything
malformed; the connection that sent it is closed, nothing else is affected.

The broker's side decodes client-to-server packets (:func:`decode_connect`,
:func:`decode_packet`) and encodes server-to-client ones; the client's side
(:mod:`splitmq.transport.mqtt`) encodes CONNECT, SUBSCRIBE, UNSUBSCRIBE, PINGREQ and
DISCONNECT here and decodes CONNACK, SUBACK and UNSUBACK (:func:`decode_server_packet`).
PUBLISH and the four acknowledgements look the same in both directions.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from splitmq.errors import SplitMQError
from splitmq.mqtt.codes import (
    PROPERTY_TYPES,
    PacketType,
    Prop,
    Properties,
    PropertyType,
    PropertyValue,
    Reason,
    Version,
)

MAX_REMAINING_LENGTH = 268_435_455
"""The largest remaining length a four-byte variable integer can carry."""


class ProtocolViolation(SplitMQError):
    """A client broke the protocol; its connection is closed with ``reason``.

    Attributes:
        reason: the MQTT 5 reason code for the DISCONNECT (MQTT 5 clients only).
        detail: what was wrong, for the log.
    """

    def __init__(self, reason: Reason, detail: str):
        self.reason = reason
        self.detail = detail
        super().__init__(f"{detail} ({reason.name.lower().replace('_', ' ')})")


def get_property(properties: Properties, key: Prop, default: int | None = None) -> int | None:
    """The integer property ``key`` (the first one), or ``default``."""
    for identifier, value in properties:
        if identifier == key and isinstance(value, int):
            return value
    return default


def string_property(properties: Properties, key: Prop) -> str | None:
    """The string property ``key`` (the first one), or None."""
    for identifier, value in properties:
        if identifier == key and isinstance(value, str):
            return value
    return None


def has_property(properties: Properties, key: Prop) -> bool:
    return any(identifier == key for identifier, _ in properties)


# -- decoded packets ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WillMessage:
    """The last will declared in CONNECT."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    properties: Properties = ()


@dataclass(frozen=True, slots=True)
class Connect:
    version: Version
    client_id: str
    clean_start: bool
    keepalive_s: int
    properties: Properties = ()
    will: WillMessage | None = None
    username: str | None = None
    password: bytes | None = None


@dataclass(frozen=True, slots=True)
class Publish:
    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    dup: bool = False
    packet_id: int | None = None
    properties: Properties = ()


@dataclass(frozen=True, slots=True)
class SubscriptionOptions:
    """What a subscriber asked for one filter (MQTT 3.1.1 only has ``qos``).

    Attributes:
        qos: the maximum QoS to deliver with.
        no_local: never deliver the subscriber's own messages back to it.
        retain_as_published: keep the publisher's retain flag on live deliveries.
        retain_handling: 0 send retained messages, 1 only for a new subscription, 2 never.
    """

    qos: int
    no_local: bool = False
    retain_as_published: bool = False
    retain_handling: int = 0


@dataclass(frozen=True, slots=True)
class Subscribe:
    packet_id: int
    requests: tuple[tuple[str, SubscriptionOptions], ...]
    properties: Properties = ()


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    packet_id: int
    filters: tuple[str, ...]
    properties: Properties = ()


@dataclass(frozen=True, slots=True)
class Ack:
    """PUBACK, PUBREC, PUBREL or PUBCOMP (``kind`` says which)."""

    kind: PacketType
    packet_id: int
    reason: int = Reason.SUCCESS


@dataclass(frozen=True, slots=True)
class PingReq:
    pass


@dataclass(frozen=True, slots=True)
class Disconnect:
    reason: int = Reason.SUCCESS
    properties: Properties = ()


Packet = Publish | Ack | Subscribe | Unsubscribe | PingReq | Disconnect


@dataclass(frozen=True, slots=True)
class ConnAck:
    session_present: bool
    reason: int
    properties: Properties = ()


@dataclass(frozen=True, slots=True)
class SubAck:
    """SUBACK or UNSUBACK (``kind`` says which): one reason code per filter."""

    kind: PacketType
    packet_id: int
    reasons: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class PingResp:
    pass


ServerPacket = ConnAck | Publish | Ack | SubAck | PingResp | Disconnect


# -- decoding -------------------------------------------------------------------------


def parse_fixed_header(buffer: bytes | bytearray | memoryview) -> tuple[int, int, int] | None:
    """``(first_byte, remaining_length, header_length)``, or None while incomplete."""
    remaining = 0
    for index in range(1, min(len(buffer), 5)):
        byte = buffer[index]
        remaining |= (byte & 0x7F) << (7 * (index - 1))
        if not byte & 0x80:
            return buffer[0], remaining, index + 1
    if len(buffer) >= 5:
        raise ProtocolViolation(Reason.MALFORMED_PACKET, "remaining length longer than 4 bytes")
    return None


class Cursor:
    """Reads MQTT data types from a packet body, raising on underflow."""

    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes):
        self._data = data
        self._pos = 0

    def at_end(self) -> bool:
        return self._pos >= len(self._data)

    def _take(self, count: int) -> bytes:
        end = self._pos + count
        if end > len(self._data):
            raise ProtocolViolation(Reason.MALFORMED_PACKET, "packet shorter than its contents")
        chunk = self._data[self._pos : end]
        self._pos = end
        return chunk

    def u8(self) -> int:
        return self._take(1)[0]

    def u16(self) -> int:
        return int(struct.unpack("!H", self._take(2))[0])

    def u32(self) -> int:
        return int(struct.unpack("!I", self._take(4))[0])

    def varint(self) -> int:
        value = 0
        for shift in range(0, 28, 7):
            byte = self.u8()
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
        raise ProtocolViolation(Reason.MALFORMED_PACKET, "variable integer longer than 4 bytes")

    def binary(self) -> bytes:
        return self._take(self.u16())

    def string(self) -> str:
        try:
            text = self.binary().decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolViolation(Reason.MALFORMED_PACKET, "a string is not UTF-8") from None
        if "\x00" in text:
            raise ProtocolViolation(Reason.MALFORMED_PACKET, "a string holds U+0000")
        return text

    def rest(self) -> bytes:
        chunk = self._data[self._pos :]
        self._pos = len(self._data)
        return chunk

    def packet_id(self) -> int:
        packet_id = self.u16()
        if packet_id == 0:
            raise ProtocolViolation(Reason.MALFORMED_PACKET, "packet identifier 0")
        return packet_id

    def properties(self) -> Properties:
        length = self.varint()
        inner = Cursor(self._take(length))
        found: list[tuple[int, PropertyValue]] = []
        while not inner.at_end():
            identifier = inner.varint()
            kind = PROPERTY_TYPES.get(identifier)
            if kind is None:
                raise ProtocolViolation(
                    Reason.MALFORMED_PACKET, f"unknown property 0x{identifier:02x}"
                )
            if kind is not PropertyType.PAIR and any(key == identifier for key, _ in found):
                raise ProtocolViolation(Reason.PROTOCOL_ERROR, f"property {identifier} twice")
            found.append((identifier, inner.value(kind)))
        return tuple(found)

    def value(self, kind: PropertyType) -> PropertyValue:
        match kind:
            case PropertyType.BYTE:
                return self.u8()
            case PropertyType.U16:
                return self.u16()
            case PropertyType.U32:
                return self.u32()
            case PropertyType.VARINT:
                return self.varint()
            case PropertyType.STRING:
                return self.string()
            case PropertyType.BINARY:
                return self.binary()
            case PropertyType.PAIR:
                return (self.string(), self.string())


def _check_flags(first_byte: int, expected: int) -> None:
    if first_byte & 0x0F != expected:
        raise ProtocolViolation(
            Reason.MALFORMED_PACKET,
            f"{PacketType(first_byte >> 4).name} with reserved flags {first_byte & 0x0F:#x}",
        )


def decode_connect(first_byte: int, body: bytes) -> Connect:
    """CONNECT; a protocol level other than 4 or 5 raises UNSUPPORTED_PROTOCOL_VERSION."""
    if first_byte >> 4 != PacketType.CONNECT:
        raise ProtocolViolation(Reason.PROTOCOL_ERROR, "the first packet must be CONNECT")
    _check_flags(first_byte, 0)
    cursor = Cursor(body)
    name, level = cursor.string(), cursor.u8()
    if name not in ("MQTT", "MQIsdp"):
        raise ProtocolViolation(Reason.MALFORMED_PACKET, f"protocol name {name!r} is not MQTT")
    if level not in (Version.V311, Version.V5):
        raise ProtocolViolation(
            Reason.UNSUPPORTED_PROTOCOL_VERSION, f"protocol level {level} (only 4 and 5 are)"
        )
    version = Version(level)
    flags, keepalive_s = cursor.u8(), cursor.u16()
    will_flag, will_qos, will_retain = bool(flags & 0x04), (flags >> 3) & 0x03, bool(flags & 0x20)
    if flags & 0x01 or will_qos == 3 or (not will_flag and (will_qos or will_retain)):
        raise ProtocolViolation(Reason.MALFORMED_PACKET, f"CONNECT flags {flags:#04x}")
    if version is Version.V311 and flags & 0x40 and not flags & 0x80:
        raise ProtocolViolation(Reason.MALFORMED_PACKET, "a password without a user name")
    properties = cursor.properties() if version is Version.V5 else ()
    client_id = cursor.string()
    will = None
    if will_flag:
        will_properties = cursor.properties() if version is Version.V5 else ()
        will = WillMessage(cursor.string(), cursor.binary(), will_qos, will_retain, will_properties)
    username = cursor.string() if flags & 0x80 else None
    password = cursor.binary() if flags & 0x40 else None
    if not cursor.at_end():
        raise ProtocolViolation(Reason.MALFORMED_PACKET, "bytes after the end of CONNECT")
    return Connect(
        version, client_id, bool(flags & 0x02), keepalive_s, properties, will, username, password
    )


def decode_packet(first_byte: int, body: bytes, version: Version) -> Packet:
    """Any client packet after CONNECT."""
    kind = first_byte >> 4
    v5 = version is Version.V5
    match kind:
        case PacketType.PUBLISH:
            return _decode_publish(first_byte, body, v5)
        case PacketType.PUBACK | PacketType.PUBREC | PacketType.PUBCOMP | PacketType.PUBREL:
            _check_flags(first_byte, 0x02 if kind == PacketType.PUBREL else 0)
            return _decode_ack(PacketType(kind), body, v5)
        case PacketType.SUBSCRIBE:
            _check_flags(first_byte, 0x02)
            return _decode_subscribe(body, v5)
        case PacketType.UNSUBSCRIBE:
            _check_flags(first_byte, 0x02)
            return _decode_unsubscribe(body, v5)
        case PacketType.PINGREQ:
            _check_flags(first_byte, 0)
            if body:
                raise ProtocolViolation(Reason.MALFORMED_PACKET, "PINGREQ with a body")
            return PingReq()
        case PacketType.DISCONNECT:
            _check_flags(first_byte, 0)
            return _decode_disconnect(body, v5)
        case PacketType.CONNECT:
            raise ProtocolViolation(Reason.PROTOCOL_ERROR, "a second CONNECT")
        case _:
            name = PacketType(kind).name if kind else "0 (reserved)"
            raise ProtocolViolation(Reason.PROTOCOL_ERROR, f"packet type {name} from a client")


def _decode_publish(first_byte: int, body: bytes, v5: bool) -> Publish:
    qos = (first_byte >> 1) & 0x03
    dup = bool(first_byte & 0x08)
    if qos == 3 or (qos == 0 and dup):
        raise ProtocolViolation(Reason.MALFORMED_PACKET, f"PUBLISH flags {first_byte & 0x0F:#x}")
    cursor = Cursor(body)
    topic = cursor.string()
    packet_id = cursor.packet_id() if qos else None
    properties = cursor.properties() if v5 else ()
    return Publish(topic, cursor.rest(), qos, bool(first_byte & 0x01), dup, packet_id, properties)


def _decode_ack(kind: PacketType, body: bytes, v5: bool) -> Ack:
    cursor = Cursor(body)
    packet_id = cursor.packet_id()
    reason = cursor.u8() if v5 and not cursor.at_end() else Reason.SUCCESS
    if v5 and not cursor.at_end():
        cursor.properties()
    if not cursor.at_end():
        raise ProtocolViolation(Reason.MALFORMED_PACKET, f"bytes after the end of {kind.name}")
    return Ack(kind, packet_id, reason)


def _decode_subscription_options(byte: int, v5: bool) -> SubscriptionOptions:
    qos = byte & 0x03
    if qos == 3 or byte & (0xC0 if v5 else 0xFC):
        raise ProtocolViolation(Reason.MALFORMED_PACKET, f"subscription options {byte:#04x}")
    if not v5:
        return SubscriptionOptions(qos)
    retain_handling = (byte >> 4) & 0x03
    if retain_handling == 3:
        raise ProtocolViolation(Reason.PROTOCOL_ERROR, "retain handling 3")
    return SubscriptionOptions(qos, bool(byte & 0x04), bool(byte & 0x08), retain_handling)


def _decode_subscribe(body: bytes, v5: bool) -> Subscribe:
    cursor = Cursor(body)
    packet_id = cursor.packet_id()
    properties = cursor.properties() if v5 else ()
    requests = []
    while not cursor.at_end():
        topic_filter = cursor.string()
        requests.append((topic_filter, _decode_subscription_options(cursor.u8(), v5)))
    if not requests:
        raise ProtocolViolation(Reason.PROTOCOL_ERROR, "SUBSCRIBE without a topic filter")
    return Subscribe(packet_id, tuple(requests), properties)


def _decode_unsubscribe(body: bytes, v5: bool) -> Unsubscribe:
    cursor = Cursor(body)
    packet_id = cursor.packet_id()
    properties = cursor.properties() if v5 else ()
    filters = []
    while not cursor.at_end():
        filters.append(cursor.string())
    if not filters:
        raise ProtocolViolation(Reason.PROTOCOL_ERROR, "UNSUBSCRIBE without a topic filter")
    return Unsubscribe(packet_id, tuple(filters), properties)


def _decode_disconnect(body: bytes, v5: bool) -> Disconnect:
    if not v5:
        if body:
            raise ProtocolViolation(Reason.MALFORMED_PACKET, "DISCONNECT with a body")
        return Disconnect()
    cursor = Cursor(body)
    reason = cursor.u8() if not cursor.at_end() else Reason.SUCCESS
    properties = cursor.properties() if not cursor.at_end() else ()
    return Disconnect(reason, properties)


def decode_server_packet(first_byte: int, body: bytes, version: Version) -> ServerPacket:
    """Any packet a broker sends to a client."""
    kind = first_byte >> 4
    if kind == PacketType.PUBACK and len(body) == 2 and (body[0] or body[1]):
        # the ack of every QoS 1 publish: a packet identifier alone (3.4.2, 3.4.2.1)
        return Ack(PacketType.PUBACK, (body[0] << 8) | body[1])
    v5 = version is Version.V5
    match kind:
        case PacketType.CONNACK:
            cursor = Cursor(body)
            flags, reason = cursor.u8(), cursor.u8()
            properties = cursor.properties() if v5 and not cursor.at_end() else ()
            return ConnAck(bool(flags & 0x01), reason, properties)
        case PacketType.PUBLISH:
            return _decode_publish(first_byte, body, v5)
        case PacketType.PUBACK | PacketType.PUBREC | PacketType.PUBCOMP | PacketType.PUBREL:
            return _decode_ack(PacketType(kind), body, v5)
        case PacketType.SUBACK | PacketType.UNSUBACK:
            cursor = Cursor(body)
            packet_id = cursor.packet_id()
            if v5:
                cursor.properties()
            return SubAck(PacketType(kind), packet_id, tuple(cursor.rest()))
        case PacketType.PINGRESP:
            return PingResp()
        case PacketType.DISCONNECT:
            return _decode_disconnect(body, v5)
        case _:
            name = PacketType(kind).name if kind else "0 (reserved)"
            raise ProtocolViolation(Reason.PROTOCOL_ERROR, f"packet type {name} from a server")


# -- encoding -------------------------------------------------------------------------


def encode_varint(value: int) -> bytes:
    if not 0 <= value <= MAX_REMAINING_LENGTH:
        raise ValueError(f"{value} does not fit a variable byte integer")
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _binary(data: bytes) -> bytes:
    return struct.pack("!H", len(data)) + data


def _string(text: str) -> bytes:
    return _binary(text.encode("utf-8"))


def encode_properties(properties: Sequence[tuple[int, PropertyValue]]) -> bytes:
    """The property block: its length, then each identifier and value."""
    out = bytearray()
    for identifier, value in properties:
        out += encode_varint(identifier)
        match PROPERTY_TYPES[identifier], value:
            case PropertyType.BYTE, int():
                out.append(value)
            case PropertyType.U16, int():
                out += struct.pack("!H", value)
            case PropertyType.U32, int():
                out += struct.pack("!I", value)
            case PropertyType.VARINT, int():
                out += encode_varint(value)
            case PropertyType.STRING, str():
                out += _string(value)
            case PropertyType.BINARY, bytes():
                out += _binary(value)
            case PropertyType.PAIR, (str() as key, str() as text):
                out += _string(key) + _string(text)
            case _:
                raise ValueError(f"property 0x{identifier:02x} cannot hold {value!r}")
    return encode_varint(len(out)) + bytes(out)


def _packet(first_byte: int, *parts: bytes) -> bytes:
    length = sum(len(part) for part in parts)
    return b"".join((bytes((first_byte,)), encode_varint(length), *parts))


def encode_connack(
    version: Version,
    reason: int,
    *,
    session_present: bool = False,
    properties: Sequence[tuple[int, PropertyValue]] = (),
) -> bytes:
    flags = bytes((int(session_present), reason))
    if version is Version.V5:
        return _packet(PacketType.CONNACK << 4, flags, encode_properties(properties))
    return _packet(PacketType.CONNACK << 4, flags)


def encode_publish(
    version: Version,
    topic: str,
    payload: bytes,
    *,
    qos: int,
    retain: bool,
    dup: bool = False,
    packet_id: int | None = None,
    properties: Sequence[tuple[int, PropertyValue]] = (),
) -> bytes:
    if qos and packet_id is None:
        raise ValueError("a QoS 1 or 2 PUBLISH needs a packet identifier")
    head = publish_header(
        version,
        topic.encode("utf-8"),
        len(payload),
        qos=qos,
        retain=retain,
        dup=dup,
        packet_id=packet_id or 0,
        properties=encode_properties(properties),
    )
    return head + payload


def encode_ack(kind: PacketType, packet_id: int, version: Version, reason: int = 0) -> bytes:
    """PUBACK, PUBREC, PUBREL or PUBCOMP; MQTT 5 success uses the two-byte short form."""
    first = (kind << 4) | (0x02 if kind == PacketType.PUBREL else 0)
    body = struct.pack("!H", packet_id)
    if version is Version.V5 and reason:
        body += bytes((reason,))
    return _packet(first, body)


def encode_suback(version: Version, packet_id: int, codes: Sequence[int]) -> bytes:
    props = encode_properties(()) if version is Version.V5 else b""
    return _packet(PacketType.SUBACK << 4, struct.pack("!H", packet_id), props, bytes(codes))


def encode_unsuback(version: Version, packet_id: int, codes: Sequence[int]) -> bytes:
    """UNSUBACK; MQTT 3.1.1 carries no reason codes, so ``codes`` is ignored there."""
    if version is Version.V5:
        body = struct.pack("!H", packet_id) + encode_properties(()) + bytes(codes)
        return _packet(PacketType.UNSUBACK << 4, body)
    return _packet(PacketType.UNSUBACK << 4, struct.pack("!H", packet_id))


PINGRESP = bytes((PacketType.PINGRESP << 4, 0))


def encode_disconnect(reason: int, reason_string: str = "") -> bytes:
    """An MQTT 5 DISCONNECT from the server (MQTT 3.1.1 servers just close)."""
    properties = [(Prop.REASON_STRING.value, reason_string)] if reason_string else []
    return _packet(PacketType.DISCONNECT << 4, bytes((reason,)), encode_properties(properties))


# -- client packets ---------------------------------------------------------------------


def encode_connect(
    version: Version,
    client_id: str,
    *,
    keepalive_s: int,
    clean_start: bool = True,
    will: WillMessage | None = None,
    username: str | None = None,
    password: str | None = None,
    properties: Sequence[tuple[int, PropertyValue]] = (),
) -> bytes:
    v5 = version is Version.V5
    flags = (0x02 if clean_start else 0) | (0x80 if username is not None else 0)
    flags |= 0x40 if password is not None else 0
    parts = [_string("MQTT"), bytes((version,)), b""]
    if v5:
        parts.append(encode_properties(properties))
    parts.append(_string(client_id))
    if will is not None:
        flags |= 0x04 | (will.qos << 3) | (0x20 if will.retain else 0)
        if v5:
            parts.append(encode_properties(will.properties))
        parts += [_string(will.topic), _binary(will.payload)]
    if username is not None:
        parts.append(_string(username))
    if password is not None:
        parts.append(_binary(password.encode("utf-8")))
    parts[2] = bytes((flags,)) + struct.pack("!H", keepalive_s)
    return _packet(PacketType.CONNECT << 4, *parts)


def encode_subscribe(version: Version, packet_id: int, topic_filter: str, qos: int) -> bytes:
    props = encode_properties(()) if version is Version.V5 else b""
    body = struct.pack("!H", packet_id) + props + _string(topic_filter) + bytes((qos,))
    return _packet((PacketType.SUBSCRIBE << 4) | 0x02, body)


def encode_unsubscribe(version: Version, packet_id: int, topic_filter: str) -> bytes:
    props = encode_properties(()) if version is Version.V5 else b""
    body = struct.pack("!H", packet_id) + props + _string(topic_filter)
    return _packet((PacketType.UNSUBSCRIBE << 4) | 0x02, body)


def publish_header(
    version: Version,
    topic: bytes,
    payload_bytes: int,
    *,
    qos: int,
    retain: bool,
    dup: bool = False,
    packet_id: int = 0,
    properties: bytes = b"\x00",
) -> bytes:
    """Everything of a PUBLISH before its payload, so the payload is sent without a copy.

    ``properties`` is the encoded MQTT 5 property block (ignored for 3.1.1): empty by
    default, :func:`expiry_property` for a message expiry.
    """
    first = (PacketType.PUBLISH << 4) | (qos << 1) | int(retain) | (0x08 if dup else 0)
    head = struct.pack("!H", len(topic)) + topic
    if qos:
        head += struct.pack("!H", packet_id)
    if version is Version.V5:
        head += properties
    return bytes((first,)) + encode_varint(len(head) + payload_bytes) + head


def expiry_property(expiry_s: int) -> bytes:
    """The property block holding only a Message Expiry Interval (seconds)."""
    return b"\x05\x02" + struct.pack("!I", expiry_s)


PINGREQ = bytes((PacketType.PINGREQ << 4, 0))


def encode_client_disconnect(version: Version) -> bytes:
    """A normal DISCONNECT from a client: the broker discards its will."""
    if version is Version.V5:
        return _packet(PacketType.DISCONNECT << 4, b"\x00\x00")
    return _packet(PacketType.DISCONNECT << 4)
