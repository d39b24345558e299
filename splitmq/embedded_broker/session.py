"""A client's session: what outlives its network connection.

MQTT 3.1.1 keeps a session when CONNECT says CleanSession=0 (until a clean one
replaces it); MQTT 5 keeps it for the Session Expiry Interval the client asks for
(0: it ends with the connection; 0xFFFFFFFF: it never expires). A session holds the
client's subscriptions, the QoS 1 and 2 messages waiting for it (queued while it is
offline, or while its in-flight window is full), the messages sent but not yet
acknowledged (sent again on reconnection, MQTT 4.4), and the QoS 2 packet identifiers
it sent us and has not released.

The subscription tree holds sessions, not connections: a message for an offline
session waits in its queue (QoS 1 and 2; QoS 0 is not kept for an offline client, as
in Mosquitto by default).
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING

from splitmq.embedded_broker.model import Message
from splitmq.mqtt.packets import SubscriptionOptions

if TYPE_CHECKING:
    from splitmq.embedded_broker.client_connection import Connection

NEVER_EXPIRES = 0xFFFFFFFF
"""The Session Expiry Interval meaning "never" (MQTT 5.0 section 3.1.2.11.2)."""


class Awaiting(Enum):
    """What an unacknowledged outgoing QoS 1 or 2 message waits for."""

    PUBACK = "PUBACK"
    PUBREC = "PUBREC"
    PUBCOMP = "PUBCOMP"


@dataclass(slots=True)
class InFlight:
    """A message sent to the client and not yet acknowledged."""

    awaiting: Awaiting
    message: Message
    qos: int
    retain: bool


@dataclass(eq=False)
class Session:
    """One client id's state; see the module docstring.

    Attributes:
        client_id: whose it is.
        expiry_s: how long it outlives a connection (0: not at all).
        connection: the connection using it now, or None while the client is away.
    """

    client_id: str
    expiry_s: int = 0
    connection: Connection | None = None
    subscriptions: dict[str, SubscriptionOptions] = field(default_factory=dict)
    queue: deque[tuple[Message, int, bool]] = field(default_factory=deque)
    queued_bytes: int = 0
    inflight: dict[int, InFlight] = field(default_factory=dict)
    incoming_qos2: set[int] = field(default_factory=set)
    next_packet_id: int = 0
    expiry_timer: asyncio.TimerHandle | None = None
    will: Message | None = None
    will_timer: asyncio.TimerHandle | None = None
    dropped: int = 0

    def __hash__(self) -> int:
        return id(self)

    def allocate_packet_id(self) -> int:
        while True:  # ends: fewer than 65535 ids are ever in flight
            self.next_packet_id = self.next_packet_id % 65535 + 1
            if self.next_packet_id not in self.inflight:
                return self.next_packet_id

    def enqueue(self, message: Message, qos: int, retain: bool) -> None:
        self.queue.append((message, qos, retain))
        self.queued_bytes += len(message.payload)

    def dequeue(self) -> tuple[Message, int, bool]:
        entry = self.queue.popleft()
        self.queued_bytes -= len(entry[0].payload)
        return entry

    def cancel_timers(self) -> None:
        for timer in (self.expiry_timer, self.will_timer):
            if timer is not None:
                timer.cancel()
        self.expiry_timer = self.will_timer = None
