"""Reading a broker's CONNACK and its goodbyes: what it supports, whether it speaks
MQTT 5 at all, and whether a lost connection was the broker's doing."""

from __future__ import annotations

from dataclasses import dataclass

from splitmq.mqtt.codes import Prop, Properties, Reason
from splitmq.mqtt.packets import ConnAck, get_property
from splitmq.transport.mqtt_errors import BrokerClosed


@dataclass(frozen=True, slots=True)
class BrokerFeatures:
    """What a broker's CONNACK says it supports (MQTT 5.0 section 3.2.2.3); a 3.1.1
    broker says nothing, which means everything but a Receive Maximum."""

    retain_available: bool = True
    wildcard_subscriptions: bool = True
    shared_subscriptions: bool = True
    subscription_identifiers: bool = True
    maximum_qos: int = 2
    topic_alias_maximum: int = 0

    @classmethod
    def from_properties(cls, properties: Properties) -> BrokerFeatures:
        def flag(key: Prop) -> bool:
            return get_property(properties, key, 1) != 0

        return cls(
            retain_available=flag(Prop.RETAIN_AVAILABLE),
            wildcard_subscriptions=flag(Prop.WILDCARD_SUBSCRIPTION_AVAILABLE),
            shared_subscriptions=flag(Prop.SHARED_SUBSCRIPTION_AVAILABLE),
            subscription_identifiers=flag(Prop.SUBSCRIPTION_IDENTIFIER_AVAILABLE),
            maximum_qos=get_property(properties, Prop.MAXIMUM_QOS, 2) or 0,
            topic_alias_maximum=get_property(properties, Prop.TOPIC_ALIAS_MAXIMUM, 0) or 0,
        )


NOT_ABOUT_A_PACKET = frozenset(
    {
        Reason.SUCCESS,
        0x89,  # Server busy
        Reason.SERVER_SHUTTING_DOWN,
        Reason.KEEP_ALIVE_TIMEOUT,
        Reason.SESSION_TAKEN_OVER,
        0x96,  # Message rate too high
        0x98,  # Administrative action
        0x9C,  # Use another server
        0x9D,  # Server moved
        0x9F,  # Connection rate exceeded
        0xA0,  # Maximum connect time
    }
)
"""MQTT 5 DISCONNECT reason codes that say nothing against the packets in flight."""


def broker_reason(loss: BaseException | None) -> str | None:
    """Why the broker ended a connection, if it did and a packet we sent may be the
    cause: a DISCONNECT blaming one, a close without a reason, or a reset (a broker
    closing with our unread bytes in its buffer resets the connection)."""
    if isinstance(loss, BrokerClosed):
        return None if loss.code in NOT_ABOUT_A_PACKET else loss.reason
    if isinstance(loss, ConnectionResetError | BrokenPipeError):
        return f"it reset the connection ({loss.strerror or loss})"
    return None


def answered_as_311(connack: ConnAck, body_bytes: int) -> bool:
    """Whether a CONNACK to an MQTT 5 CONNECT is a 3.1.1-only broker's answer: a
    two-byte body (MQTT 5 always has a property length) or Unsupported Protocol Version."""
    return body_bytes == 2 or connack.reason == Reason.UNSUPPORTED_PROTOCOL_VERSION
