"""How to reach the broker: one frozen config, and the broker URL parser."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from urllib.parse import unquote, urlsplit

from splitmq.errors import ConfigError

DEFAULT_PORT = 1883
DEFAULT_TLS_PORT = 8883
DEFAULT_MAX_PACKET_BYTES = 8 * 1024 * 1024
"""Matches ``max_packet_size`` in broker-config/dev.conf and secure.conf."""
MAX_ACK_HOLD_S = 1.0
"""The longest ``ack_hold_s`` and ``lone_ack_wait_s`` accepted."""
ACK_HOLD_MOST = 8
"""PUBACKs held at most before they go out alone: far inside a broker's window of
unacknowledged messages per client (Mosquitto's ``max_inflight_messages``, 20 by
default, 100 in broker-config)."""
ACK_WAIT_STAGE_TIMES = 1.5
"""How many of its stage-times a client that said its stage-time (an agent, or a
requester its stream's period: :meth:`splitmq.transport.Transport.pace_acks`) lets a
held PUBACK or a lone acknowledgement wait: a little over one, so the PUBACK rides the
forward the stage writes next (the requester's next request), and the broker's
acknowledgement of that forward is read with the next activation (result) when one
comes a stage-time later, not a moment before it."""


class MqttVersion(StrEnum):
    V5 = "5"
    V311 = "3.1.1"


@dataclass(frozen=True)
class TransportConfig:
    """Settings of one broker connection.

    Attributes:
        host: broker host name or address.
        port: broker port.
        client_id: MQTT client id; unique per connection (a fresh one when empty).
        version: MQTT 5 (default) or 3.1.1; routing never depends on MQTT 5 features.
        tls: connect over TLS.
        ca_certs: CA bundle that signed the broker's certificate (TLS).
        certfile: client certificate, for brokers that require one (TLS).
        keyfile: the client certificate's key (TLS).
        tls_insecure: skip the broker host name check (development CAs only).
        username: MQTT user name.
        password: MQTT password.
        keepalive_s: MQTT keep-alive interval.
        max_packet_bytes: the largest packet we send; with MQTT 5 the broker's own
            limit from CONNACK lowers it further.
        inbox_size: inbound messages queued for the workers before new ones are dropped.
        inbox_workers: threads dispatching inbound messages (1 keeps arrival order).
        outbox_size: QoS 1 messages the MQTT engine may hold while disconnected or in
            flight.
        max_inflight: QoS 1 messages sent but not yet acknowledged.
        reconnect_min_s: first reconnect delay (jittered exponential backoff).
        reconnect_max_s: largest reconnect delay.
        tcp_nodelay: disable Nagle's algorithm on the socket. Leave it on: off only
            exists to measure what Nagle costs (benchmarks/bench_hops.py).
        ack_hold_s: how long a QoS 1 message's PUBACK may wait to go out with the next
            packet this client writes (an agent's forward, a client's next request)
            rather than alone; 0 sends each at once. Held ones leave in the order the
            messages came (MQTT section 4.6), :data:`ACK_HOLD_MOST` at most at a time.
        lone_ack_wait_s: how long an acknowledgement from the broker that comes alone
            (a PUBACK with nothing after it) may wait to be read with the next packet
            before the network thread is woken for it, on a plain TCP connection
            (:meth:`splitmq.transport.channel.Channel.read_lone_acks_late`); 0 reads
            each at once. Anything else is read as soon as it comes. A
            ``publish(...).wait()`` may return this much later.

        Both are the shortest deadlines: a client whose stage-time is longer (an agent
        on a slow device, a requester whose stream's results come further apart:
        :meth:`splitmq.transport.Transport.pace_acks`) waits
        :data:`ACK_WAIT_STAGE_TIMES` of its stage-times (:func:`paced_wait_s`).
    """

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    client_id: str = ""
    version: MqttVersion = MqttVersion.V5
    tls: bool = False
    ca_certs: Path | None = None
    certfile: Path | None = None
    keyfile: Path | None = None
    tls_insecure: bool = False
    username: str | None = None
    password: str | None = None
    keepalive_s: int = 30
    max_packet_bytes: int = DEFAULT_MAX_PACKET_BYTES
    inbox_size: int = 1000
    inbox_workers: int = 1
    outbox_size: int = 1000
    max_inflight: int = 100
    reconnect_min_s: float = 0.1
    reconnect_max_s: float = 30.0
    tcp_nodelay: bool = True
    ack_hold_s: float = 0.005
    lone_ack_wait_s: float = 0.005

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ConfigError(f"broker port {self.port} is not a TCP port (1-65535)")
        if self.reconnect_min_s <= 0 or self.reconnect_max_s < self.reconnect_min_s:
            raise ConfigError(
                "reconnect delays must satisfy 0 < reconnect_min_s <= reconnect_max_s"
            )
        for name in ("ca_certs", "certfile", "keyfile"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise ConfigError(f"{name} {path} does not exist or is not a file")
        if (self.certfile is None) != (self.keyfile is None):
            raise ConfigError("give both certfile and keyfile, or neither")
        if not 0 <= self.ack_hold_s <= MAX_ACK_HOLD_S:
            raise ConfigError(
                f"ack_hold_s {self.ack_hold_s} is outside 0 to {MAX_ACK_HOLD_S} s: a held "
                "PUBACK keeps its message in the broker's window of unacknowledged ones"
            )
        if not 0 <= self.lone_ack_wait_s <= MAX_ACK_HOLD_S:
            raise ConfigError(
                f"lone_ack_wait_s {self.lone_ack_wait_s} is outside 0 to {MAX_ACK_HOLD_S} s"
            )
        if self.inbox_size < 1 or self.inbox_workers < 1:
            raise ConfigError("inbox_size and inbox_workers must be at least 1")

    def resolved_client_id(self) -> str:
        return self.client_id or f"splitmq-{uuid.uuid4().hex[:12]}"

    @property
    def url(self) -> str:
        """The broker URL, without credentials."""
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def paced_wait_s(shortest_s: float, stage_s: float) -> float:
    """An acknowledgement deadline for a client whose stage-time is ``stage_s``:
    :data:`ACK_WAIT_STAGE_TIMES` of them, at least ``shortest_s`` (the configured one),
    at most :data:`MAX_ACK_HOLD_S`; 0 (each at once) stays 0."""
    if shortest_s <= 0:
        return 0.0
    return min(MAX_ACK_HOLD_S, max(shortest_s, ACK_WAIT_STAGE_TIMES * stage_s))


def parse_broker_url(url: str, **overrides: object) -> TransportConfig:
    """A :class:`TransportConfig` from ``mqtt://[user[:password]@]host[:port]``.

    ``mqtts://`` (or ``ssl://``) turns TLS on and defaults to port 8883; ``tcp://`` is
    ``mqtt://``. Keyword arguments set any other field.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in ("mqtt", "tcp"):
        tls = False
    elif scheme in ("mqtts", "ssl", "tls"):
        tls = True
    else:
        raise ConfigError(
            f"broker URL {url!r} must start with mqtt:// or mqtts:// (e.g. mqtt://127.0.0.1:1883)"
        )
    if not parts.hostname:
        raise ConfigError(f"broker URL {url!r} names no host")
    try:
        port = parts.port or (DEFAULT_TLS_PORT if tls else DEFAULT_PORT)
    except ValueError as error:
        raise ConfigError(f"broker URL {url!r}: {error}") from None
    fields: dict[str, object] = {
        "host": parts.hostname,
        "port": port,
        "tls": tls,
        "username": unquote(parts.username) if parts.username else None,
        "password": unquote(parts.password) if parts.password else None,
    }
    fields.update({k: v for k, v in overrides.items() if v is not None})
    return TransportConfig(**fields)  # type: ignore[arg-type]
