"""MQTT constants: protocol levels, packet types, property identifiers and types,
reason codes. Names follow the MQTT 5.0 specification."""

from __future__ import annotations

from enum import IntEnum


class Version(IntEnum):
    """The protocol level byte of CONNECT."""

    V311 = 4
    V5 = 5


class PacketType(IntEnum):
    CONNECT = 1
    CONNACK = 2
    PUBLISH = 3
    PUBACK = 4
    PUBREC = 5
    PUBREL = 6
    PUBCOMP = 7
    SUBSCRIBE = 8
    SUBACK = 9
    UNSUBSCRIBE = 10
    UNSUBACK = 11
    PINGREQ = 12
    PINGRESP = 13
    DISCONNECT = 14
    AUTH = 15


class Prop(IntEnum):
    """MQTT 5 property identifiers."""

    PAYLOAD_FORMAT_INDICATOR = 0x01
    MESSAGE_EXPIRY_INTERVAL = 0x02
    CONTENT_TYPE = 0x03
    RESPONSE_TOPIC = 0x08
    CORRELATION_DATA = 0x09
    SUBSCRIPTION_IDENTIFIER = 0x0B
    SESSION_EXPIRY_INTERVAL = 0x11
    ASSIGNED_CLIENT_IDENTIFIER = 0x12
    SERVER_KEEP_ALIVE = 0x13
    AUTHENTICATION_METHOD = 0x15
    AUTHENTICATION_DATA = 0x16
    REQUEST_PROBLEM_INFORMATION = 0x17
    WILL_DELAY_INTERVAL = 0x18
    REQUEST_RESPONSE_INFORMATION = 0x19
    RESPONSE_INFORMATION = 0x1A
    SERVER_REFERENCE = 0x1C
    REASON_STRING = 0x1F
    RECEIVE_MAXIMUM = 0x21
    TOPIC_ALIAS_MAXIMUM = 0x22
    TOPIC_ALIAS = 0x23
    MAXIMUM_QOS = 0x24
    RETAIN_AVAILABLE = 0x25
    USER_PROPERTY = 0x26
    MAXIMUM_PACKET_SIZE = 0x27
    WILDCARD_SUBSCRIPTION_AVAILABLE = 0x28
    SUBSCRIPTION_IDENTIFIER_AVAILABLE = 0x29
    SHARED_SUBSCRIPTION_AVAILABLE = 0x2A


class Reason(IntEnum):
    """The MQTT 5 reason codes the broker uses."""

    SUCCESS = 0x00
    DISCONNECT_WITH_WILL = 0x04
    NO_SUBSCRIPTION_EXISTED = 0x11
    UNSPECIFIED_ERROR = 0x80
    MALFORMED_PACKET = 0x81
    PROTOCOL_ERROR = 0x82
    IMPLEMENTATION_SPECIFIC_ERROR = 0x83
    UNSUPPORTED_PROTOCOL_VERSION = 0x84
    CLIENT_IDENTIFIER_NOT_VALID = 0x85
    BAD_AUTHENTICATION_METHOD = 0x8C
    SERVER_SHUTTING_DOWN = 0x8B
    KEEP_ALIVE_TIMEOUT = 0x8D
    SESSION_TAKEN_OVER = 0x8E
    TOPIC_FILTER_INVALID = 0x8F
    TOPIC_NAME_INVALID = 0x90
    PACKET_IDENTIFIER_NOT_FOUND = 0x92
    TOPIC_ALIAS_INVALID = 0x94
    PACKET_TOO_LARGE = 0x95
    SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED = 0xA1


REASON_TEXT = {
    0x00: "Success",
    0x01: "Granted QoS 1",
    0x02: "Granted QoS 2",
    0x04: "Disconnect with will message",
    0x10: "No matching subscribers",
    0x11: "No subscription existed",
    0x80: "Unspecified error",
    0x81: "Malformed packet",
    0x82: "Protocol error",
    0x83: "Implementation specific error",
    0x84: "Unsupported protocol version",
    0x85: "Client identifier not valid",
    0x86: "Bad user name or password",
    0x87: "Not authorized",
    0x88: "Server unavailable",
    0x89: "Server busy",
    0x8A: "Banned",
    0x8B: "Server shutting down",
    0x8C: "Bad authentication method",
    0x8D: "Keep alive timeout",
    0x8E: "Session taken over",
    0x8F: "Topic filter invalid",
    0x90: "Topic name invalid",
    0x91: "Packet identifier in use",
    0x92: "Packet identifier not found",
    0x93: "Receive maximum exceeded",
    0x94: "Topic alias invalid",
    0x95: "Packet too large",
    0x96: "Message rate too high",
    0x97: "Quota exceeded",
    0x98: "Administrative action",
    0x99: "Payload format invalid",
    0x9A: "Retain not supported",
    0x9B: "QoS not supported",
    0x9C: "Use another server",
    0x9D: "Server moved",
    0x9E: "Shared subscriptions not supported",
    0x9F: "Connection rate exceeded",
    0xA0: "Maximum connect time",
    0xA1: "Subscription identifiers not supported",
    0xA2: "Wildcard subscriptions not supported",
}
"""MQTT 5 reason codes as the specification names them (for messages a person reads)."""

CONNACK_V311_TEXT = {
    1: "Unacceptable protocol version",
    2: "Identifier rejected",
    3: "Server unavailable",
    4: "Bad user name or password",
    5: "Not authorized",
}
"""MQTT 3.1.1 CONNACK return codes."""


def reason_text(code: int) -> str:
    return REASON_TEXT.get(code, f"reason 0x{code:02x}")


CONNACK_V311_UNACCEPTABLE_VERSION = 0x01
CONNACK_V311_IDENTIFIER_REJECTED = 0x02
SUBACK_V311_FAILURE = 0x80


PropertyValue = int | str | bytes | tuple[str, str]
Properties = tuple[tuple[int, PropertyValue], ...]


class PropertyType(IntEnum):
    """How a property's value is written."""

    BYTE = 0
    U16 = 1
    U32 = 2
    VARINT = 3
    STRING = 4
    BINARY = 5
    PAIR = 6


PROPERTY_TYPES: dict[int, PropertyType] = {
    Prop.PAYLOAD_FORMAT_INDICATOR: PropertyType.BYTE,
    Prop.MESSAGE_EXPIRY_INTERVAL: PropertyType.U32,
    Prop.CONTENT_TYPE: PropertyType.STRING,
    Prop.RESPONSE_TOPIC: PropertyType.STRING,
    Prop.CORRELATION_DATA: PropertyType.BINARY,
    Prop.SUBSCRIPTION_IDENTIFIER: PropertyType.VARINT,
    Prop.SESSION_EXPIRY_INTERVAL: PropertyType.U32,
    Prop.ASSIGNED_CLIENT_IDENTIFIER: PropertyType.STRING,
    Prop.SERVER_KEEP_ALIVE: PropertyType.U16,
    Prop.AUTHENTICATION_METHOD: PropertyType.STRING,
    Prop.AUTHENTICATION_DATA: PropertyType.BINARY,
    Prop.REQUEST_PROBLEM_INFORMATION: PropertyType.BYTE,
    Prop.WILL_DELAY_INTERVAL: PropertyType.U32,
    Prop.REQUEST_RESPONSE_INFORMATION: PropertyType.BYTE,
    Prop.RESPONSE_INFORMATION: PropertyType.STRING,
    Prop.SERVER_REFERENCE: PropertyType.STRING,
    Prop.REASON_STRING: PropertyType.STRING,
    Prop.RECEIVE_MAXIMUM: PropertyType.U16,
    Prop.TOPIC_ALIAS_MAXIMUM: PropertyType.U16,
    Prop.TOPIC_ALIAS: PropertyType.U16,
    Prop.MAXIMUM_QOS: PropertyType.BYTE,
    Prop.RETAIN_AVAILABLE: PropertyType.BYTE,
    Prop.USER_PROPERTY: PropertyType.PAIR,
    Prop.MAXIMUM_PACKET_SIZE: PropertyType.U32,
    Prop.WILDCARD_SUBSCRIPTION_AVAILABLE: PropertyType.BYTE,
    Prop.SUBSCRIPTION_IDENTIFIER_AVAILABLE: PropertyType.BYTE,
    Prop.SHARED_SUBSCRIPTION_AVAILABLE: PropertyType.BYTE,
}
