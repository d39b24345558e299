"""An in-memory broker and transport, for fast component tests only.

It keeps MQTT's semantics that splitmq relies on — wildcards, retained messages, shared
subscriptions (one member per group gets each message), last wills — and hands messages
to handlers through the same bounded :class:`Inbox` the MQTT transport uses. It has no
QoS, packet limits beyond a size check, or network.
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass

from splitmq.errors import NotConnected, PayloadTooLarge
from splitmq.transport.base import (
    ConnectionListener,
    FastPath,
    Handler,
    InboundMessage,
    Inbox,
    OverflowHandler,
    TransportStats,
    Will,
)
from splitmq.transport.config import DEFAULT_MAX_PACKET_BYTES
from splitmq.transport.payload import Payload, payload_bytes
from splitmq.wire.topics import matches


class _Done:
    def wait(self, timeout_s: float | None = None) -> None:
        return None


@dataclass
class _Member:
    transport: MemoryTransport
    topic_filter: str
    qos: int = 1


class MemoryBroker:
    """The shared state of a set of :class:`MemoryTransport` objects."""

    def __init__(self, max_packet_bytes: int = DEFAULT_MAX_PACKET_BYTES):
        self.max_packet_bytes = max_packet_bytes
        self._lock = threading.Lock()
        self._retained: dict[str, bytes] = {}
        self._members: list[_Member] = []
        self._round_robin: dict[str, itertools.count[int]] = {}

    def transport(
        self,
        client_id: str,
        *,
        will: Will | None = None,
        inbox_size: int = 1000,
        on_overflow: OverflowHandler | None = None,
    ) -> MemoryTransport:
        return MemoryTransport(
            self, client_id, will=will, inbox_size=inbox_size, on_overflow=on_overflow
        )

    def retained(self, topic: str) -> bytes | None:
        with self._lock:
            return self._retained.get(topic)

    def _subscribe(
        self, transport: MemoryTransport, topic_filter: str, qos: int = 1
    ) -> list[InboundMessage]:
        with self._lock:
            self._members = [
                m
                for m in self._members
                if not (m.transport is transport and m.topic_filter == topic_filter)
            ]
            self._members.append(_Member(transport, topic_filter, qos))
            return [
                InboundMessage(topic, payload, qos=min(qos, 1), retain=True)
                for topic, payload in self._retained.items()
                if matches(topic_filter, topic)
            ]

    def _unsubscribe(self, transport: MemoryTransport, topic_filter: str | None) -> None:
        with self._lock:
            self._members = [
                m
                for m in self._members
                if not (
                    m.transport is transport
                    and (topic_filter is None or m.topic_filter == topic_filter)
                )
            ]

    def _publish(self, topic: str, payload: bytes, retain: bool, qos: int = 1) -> None:
        """Deliver to each subscriber at the lower of ``qos`` and its subscription's, as
        MQTT does (3.1.1 and 5.0, section 3.8.4)."""
        with self._lock:
            if retain:
                if payload:
                    self._retained[topic] = payload
                else:
                    self._retained.pop(topic, None)
            receivers: dict[int, tuple[MemoryTransport, int]] = {}
            groups: dict[str, list[_Member]] = {}
            for member in self._members:
                if not matches(member.topic_filter, topic):
                    continue
                if member.topic_filter.startswith("$share/"):
                    group = member.topic_filter.split("/", 2)[1]
                    groups.setdefault(group, []).append(member)
                else:
                    receivers[id(member.transport)] = (member.transport, member.qos)
            for group, members in groups.items():
                counter = self._round_robin.setdefault(group, itertools.count())
                chosen = members[next(counter) % len(members)]
                receivers[id(chosen.transport)] = (chosen.transport, chosen.qos)
        for transport, granted in receivers.values():
            delivered = min(qos, granted)
            transport._deliver(InboundMessage(topic, payload, qos=delivered, retain=False))


class MemoryTransport:
    """A :class:`splitmq.transport.base.Transport` over a :class:`MemoryBroker`."""

    def __init__(
        self,
        broker: MemoryBroker,
        client_id: str,
        *,
        will: Will | None = None,
        inbox_size: int = 1000,
        on_overflow: OverflowHandler | None = None,
    ):
        self._broker = broker
        self._client_id = client_id
        self._will = will
        self._stats = TransportStats()
        self._inbox = Inbox(client_id, self._stats, size=inbox_size, on_overflow=on_overflow)
        self._listeners: list[ConnectionListener] = []
        self._connected = False
        self._held: list[tuple[str, bytes, bool, int]] | None = None  # publishes held in an outage

    @property
    def client_id(self) -> str:
        return self._client_id

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def stats(self) -> TransportStats:
        return self._stats

    @property
    def max_payload_bytes(self) -> int:
        return self._broker.max_packet_bytes - 1024

    @property
    def fast_paths_may_block(self) -> bool:
        return False  # fast paths run on the publisher's own thread

    def start(self, timeout_s: float = 10.0) -> None:
        self._inbox.start()
        self._connected = True
        for listener in self._listeners:
            listener(True)

    def close(self) -> None:
        """A clean disconnect: the will is not published."""
        self._disconnect(publish_will=False)

    def crash(self) -> None:
        """Vanish as a killed process would: the broker publishes the will."""
        self._disconnect(publish_will=True)

    def interrupt(self) -> None:
        """Lose the link to the broker for a while (until :meth:`resume`), as a broker
        restart without persistence does: what is published to this transport meanwhile
        is gone, and what it publishes waits in its outbox."""
        if not self._connected or self._held is not None:
            return
        self._held = []
        for listener in self._listeners:
            listener(False)

    def resume(self) -> None:
        """The link is back: the held publishes go out, then the listeners hear of it."""
        held, self._held = self._held, None
        if held is None:
            return  # not interrupted
        for topic, data, retain, qos in held:
            self._broker._publish(topic, data, retain, qos)
        for listener in self._listeners:
            listener(True)

    def _disconnect(self, *, publish_will: bool) -> None:
        if not self._connected:
            return
        self._connected = False
        self._broker._unsubscribe(self, None)
        if publish_will and self._will is not None:
            self._broker._publish(self._will.topic, self._will.payload, self._will.retain)
        self._inbox.stop()

    def add_connection_listener(self, listener: ConnectionListener) -> None:
        self._listeners.append(listener)

    def publish(
        self,
        topic: str,
        payload: Payload,
        *,
        qos: int = 1,
        retain: bool = False,
        expiry_s: float | None = None,
    ) -> _Done:
        if not self._connected:
            raise NotConnected(f"transport {self._client_id} is not connected")
        data = payload_bytes(payload)
        size = len(data) + len(topic) + 16
        if size > self._broker.max_packet_bytes:
            raise PayloadTooLarge(topic, size, self._broker.max_packet_bytes)
        self._stats.msgs_out += 1
        self._stats.bytes_out += len(data)
        if self._held is not None:
            self._held.append((topic, data, retain, qos))
        else:
            self._broker._publish(topic, data, retain, qos)
        return _Done()

    def subscribe(
        self,
        topic_filter: str,
        handler: Handler,
        *,
        qos: int = 1,
        timeout_s: float = 10.0,
        fast_path: FastPath | None = None,
    ) -> None:
        self._inbox.route(topic_filter, handler, fast_path)
        for message in self._broker._subscribe(self, topic_filter, qos):
            self._deliver(message)

    def unsubscribe(self, topic_filter: str) -> None:
        self._inbox.unroute(topic_filter)
        self._broker._unsubscribe(self, topic_filter)

    def pace_acks(self, stage_s: float) -> None:
        """Nothing to pace: no acknowledgement crosses the in-memory broker."""

    def _deliver(self, message: InboundMessage) -> None:
        if self._held is not None:  # the link is down: the broker keeps no session for us
            self._stats.dropped_in += 1
            return
        self._stats.msgs_in += 1
        self._stats.bytes_in += len(message.payload)
        self._inbox.put(message)
