"""What the MQTT client raises about the broker (all :class:`TransportError`)."""

from __future__ import annotations

from splitmq.errors import TransportError


class ConnectionRefused(TransportError):
    """The broker refused our CONNECT (bad credentials, not authorized, ...).

    Attributes:
        reason: the broker's reason, as MQTT names it.
    """

    def __init__(self, url: str, reason: str):
        self.reason = reason
        super().__init__(
            f"broker {url} refused the connection: {reason}; check the user name, "
            "password and the broker's ACL"
        )


class PublishRefused(TransportError):
    """The broker refused a message: a failure reason in PUBACK or PUBREC (MQTT 5), or
    it closed the connection each time the message was sent.

    Attributes:
        topic: where the message was to go.
        reason: the broker's reason, as MQTT names it.
    """

    def __init__(self, topic: str, reason: str):
        self.topic = topic
        self.reason = reason
        super().__init__(f"broker refused the message on {topic!r}: {reason}")


class BrokerClosed(TransportError):
    """The broker ended the connection itself: a DISCONNECT, or an orderly close.

    Attributes:
        reason: the broker's reason (MQTT 5 DISCONNECT), or what we saw.
        code: the MQTT 5 DISCONNECT reason code, None for a close without one.
    """

    def __init__(self, reason: str, code: int | None = None):
        self.reason = reason
        self.code = code
        super().__init__(f"the broker closed the connection: {reason}")


class NotMqtt5(TransportError):
    """The broker answered an MQTT 5 CONNECT as a 3.1.1-only broker does."""
