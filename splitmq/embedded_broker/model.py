"""The broker's data: its configuration, its counters, and a message on its way."""

from __future__ import annotations

import ipaddress
import math
import time
from dataclasses import dataclass

from splitmq.errors import ConfigError
from splitmq.mqtt.codes import Properties

DEFAULT_MAX_PACKET_BYTES = 8 * 1024 * 1024
"""As ``max_packet_size`` in broker-config/dev.conf and the transport's default."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` names a loopback address (``localhost``, 127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class BrokerConfig:
    """Settings of an embedded broker.

    Attributes:
        host: the address to listen on: loopback unless ``allow_remote`` (the broker
            has no authentication, no ACL and no TLS: anyone who reaches it may
            read and publish every topic).
        port: the TCP port; 0 picks a free one.
        max_packet_bytes: the largest packet accepted; a bigger one closes its
            connection (MQTT 5: DISCONNECT 0x95). Sent to MQTT 5 clients in CONNACK.
        max_queued_messages: messages held for one client that cannot take them yet
            (socket full, too many unacknowledged, or away with its session kept);
            newer ones are dropped and counted.
        max_queued_bytes: the same limit in payload bytes (Mosquitto's
            ``max_queued_bytes``).
        max_inflight_messages: QoS 1 and 2 messages sent to one client and not yet
            acknowledged (lowered by an MQTT 5 client's Receive Maximum).
        connect_timeout_s: how long a new connection may take to send CONNECT.
        write_buffer_bytes: bytes buffered in a connection's socket transport before
            further messages wait in its queue.
        max_keepalive_s: the longest keep-alive an MQTT 5 client may use (longer, or
            none, gets this as Server Keep Alive in CONNACK); None imposes nothing.
        allow_remote: listen on an address other than loopback (no authentication!).
    """

    host: str = "127.0.0.1"
    port: int = 0
    max_packet_bytes: int = DEFAULT_MAX_PACKET_BYTES
    max_queued_messages: int = 10_000
    max_inflight_messages: int = 100
    connect_timeout_s: float = 10.0
    write_buffer_bytes: int = 1024 * 1024
    max_queued_bytes: int = 256 * 1024 * 1024
    max_keepalive_s: int | None = None
    allow_remote: bool = False

    def __post_init__(self) -> None:
        if not self.allow_remote and not is_loopback(self.host):
            raise ConfigError(
                f"the embedded broker has no authentication, ACL or TLS: it listens on "
                f"loopback only, not {self.host!r}; allow it explicitly (allow_remote, "
                "--allow-remote) only on a network you trust, or run Mosquitto with "
                "broker-config/secure.conf"
            )
        if self.max_queued_bytes < 0:
            raise ConfigError("max_queued_bytes must be >= 0")
        if self.max_keepalive_s is not None and not 1 <= self.max_keepalive_s <= 65535:
            raise ConfigError("max_keepalive_s must be within 1-65535 s")
        if not 0 <= self.port < 65536:
            raise ConfigError(f"port {self.port} is not a TCP port (0-65535, 0 for any)")
        if not 1024 <= self.max_packet_bytes <= 268_435_460:
            raise ConfigError("max_packet_bytes must be between 1 KiB and MQTT's 256 MiB")
        if self.max_queued_messages < 0 or not 1 <= self.max_inflight_messages <= 65535:
            raise ConfigError(
                "max_queued_messages must be >= 0 and max_inflight_messages within 1-65535"
            )


@dataclass(slots=True)
class BrokerStats:
    """Counters since the broker started (read them from any thread).

    Attributes:
        clients: clients connected now.
        sessions: sessions kept, of connected clients and of clients away.
        connections_total: TCP connections accepted.
        messages_in: PUBLISH packets received (wills included).
        messages_out: PUBLISH packets sent.
        dropped: messages not delivered because a client's queue was full, or the
            packet exceeded the client's Maximum Packet Size.
        expired: messages whose MQTT 5 expiry passed while they waited in a queue.
        protocol_errors: connections closed for a malformed or forbidden packet.
    """

    clients: int = 0
    sessions: int = 0
    connections_total: int = 0
    messages_in: int = 0
    messages_out: int = 0
    dropped: int = 0
    expired: int = 0
    protocol_errors: int = 0


@dataclass(frozen=True, slots=True)
class Message:
    """An application message as the broker routes it.

    Attributes:
        topic: where it was published.
        payload: its bytes.
        qos: the QoS it was published with.
        retain: the publisher's retain flag.
        properties: MQTT 5 properties passed through to MQTT 5 subscribers (user
            properties, content type, response topic, ...), without the expiry.
        expires_at: ``time.monotonic()`` after which it is dropped, or None.
    """

    topic: str
    payload: bytes
    qos: int
    retain: bool
    properties: Properties = ()
    expires_at: float | None = None

    def remaining_s(self, now: float) -> int | None:
        """The expiry interval to forward (whole seconds, >= 1), 0 once expired, or None."""
        if self.expires_at is None:
            return None
        left = self.expires_at - now
        return math.ceil(left) if left > 0 else 0

    def expired(self, now: float | None = None) -> bool:
        """Whether the expiry has passed at ``now`` (``time.monotonic()`` by default)."""
        if self.expires_at is None:
            return False
        return (time.monotonic() if now is None else now) >= self.expires_at
