"""One client connection and its session: an :class:`asyncio.Protocol`.

Everything runs on the broker's event loop, synchronously: bytes arrive in
``data_received``, complete packets are decoded and handled at once, and routed
messages are written to the subscribers' transports in the same call, so a message
crosses the broker without a task switch.

Outgoing flow control: a message for this client goes out at once when the socket
transport has room and, at QoS 1 and 2, fewer than the in-flight limit are
unacknowledged. Otherwise it waits in a bounded queue (``max_queued_messages``;
beyond that it is dropped and counted), and the queue is pumped again when the
transport drains (``resume_writing``) or an acknowledgement frees a slot. Messages
whose MQTT 5 expiry passes while queued are dropped when their turn comes.

Sessions are always clean: nothing survives a disconnect, CONNACK says so.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
import uuid
from collections import deque
from enum import Enum
from typing import TYPE_CHECKING, cast

from splitmq.embedded_broker.model import Message
from splitmq.embedded_broker.topics import InvalidFilter, is_valid_topic_name
from splitmq.mqtt import codes, packets
from splitmq.mqtt.codes import (
    PacketType,
    Prop,
    Properties,
    PropertyValue,
    Reason,
    Version,
)
from splitmq.mqtt.packets import (
    Ack,
    Connect,
    Disconnect,
    PingReq,
    ProtocolViolation,
    Publish,
    Subscribe,
    SubscriptionOptions,
    Unsubscribe,
)

if TYPE_CHECKING:
    from splitmq.embedded_broker.broker import Broker

log = logging.getLogger(__name__)

_DROP_LOG_EVERY = 1000
"""After the first drop on a connection, log one line per this many."""


class _Awaiting(Enum):
    """What an unacknowledged outgoing QoS 1 or 2 message waits for."""

    PUBACK = "PUBACK"
    PUBREC = "PUBREC"
    PUBCOMP = "PUBCOMP"


class Connection(asyncio.Protocol):
    """A client connection; see the module docstring."""

    def __init__(self, broker: Broker):
        self._broker = broker
        self._config = broker.config
        self._stats = broker.stats
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self.peer = "?"
        self.client_id = ""
        self.version = Version.V311
        self.subscriptions: dict[str, SubscriptionOptions] = {}
        self.dropped = 0
        self._connected = False
        self._ended = False
        self._buffer = bytearray()
        self._last_rx_s = 0.0
        self._keepalive_s = 0
        self._timer: asyncio.TimerHandle | None = None
        self._will: Message | None = None
        self._queue: deque[tuple[Message, int, bool]] = deque()
        self._inflight: dict[int, _Awaiting] = {}
        self._inflight_limit = self._config.max_inflight_messages
        self._client_max_packet: int | None = None
        self._incoming_qos2: set[int] = set()
        self._next_packet_id = 0
        self._writing_paused = False

    @property
    def name(self) -> str:
        """Who this is, for the log."""
        return f"{self.client_id or '(before CONNECT)'} at {self.peer}"

    # -- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._transport.set_write_buffer_limits(high=self._config.write_buffer_bytes)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:  # Nagle would hold small packets back ~40 ms per hop
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError as error:
                log.warning("could not set TCP_NODELAY for %s: %s", self.peer, error)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple):
            self.peer = f"{peer[0]}:{peer[1]}"
        self._last_rx_s = self._loop.time()
        self._timer = self._loop.call_later(self._config.connect_timeout_s, self._connect_timeout)
        self._broker.opened(self)

    def data_received(self, data: bytes) -> None:
        if self._ended:
            return
        self._last_rx_s = self._loop.time()
        self._buffer += data
        try:
            while not self._ended and (frame := self._next_frame()) is not None:
                self._handle(*frame)
        except ProtocolViolation as violation:
            self._stats.protocol_errors += 1
            log.warning("closing %s: %s", self.name, violation)
            self.end(violation.reason, why=violation.detail)
        except Exception:
            log.exception("internal error on a packet from %s; closing its connection", self.name)
            self.end(Reason.IMPLEMENTATION_SPECIFIC_ERROR, why="internal error")

    def connection_lost(self, exc: Exception | None) -> None:
        self.end(None, why=f"connection lost ({exc})" if exc else "connection closed")
        self._broker.closed(self)

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._pump()

    # -- life cycle ---------------------------------------------------------------------

    def end(self, reason: Reason | None, *, why: str, publish_will: bool = True) -> None:
        """Close the connection once: tell an MQTT 5 client ``reason``, publish the will.

        Every close but a clean DISCONNECT (which clears the will first) and a broker
        shutdown publishes the will.
        """
        if self._ended:
            return
        self._ended = True
        log.debug("closing %s: %s", self.name, why)
        if self._timer is not None:
            self._timer.cancel()
        transport = self._transport
        if reason is not None and self._connected and self.version is Version.V5:
            self._write(packets.encode_disconnect(reason, why))
        will, self._will = self._will, None
        self._queue.clear()
        self._inflight.clear()
        self._buffer.clear()
        self._broker.detach(self)
        if publish_will and will is not None:
            log.info("publishing the will of %s on %s", self.name, will.topic)
            self._broker.publish(will, sender=None)
        if transport is not None:
            transport.close()

    def abort(self) -> None:
        """Drop the socket now, unsent bytes and all (end of a broker shutdown)."""
        self.end(None, why="aborted", publish_will=False)
        if self._transport is not None:
            self._transport.abort()

    def _connect_timeout(self) -> None:
        self.end(None, why=f"no CONNECT within {self._config.connect_timeout_s} s")

    def _check_keepalive(self) -> None:
        deadline = self._last_rx_s + 1.5 * self._keepalive_s
        if self._loop.time() < deadline:
            self._timer = self._loop.call_at(deadline, self._check_keepalive)
            return
        log.info("%s sent nothing for 1.5 x its keep-alive of %d s", self.name, self._keepalive_s)
        self.end(Reason.KEEP_ALIVE_TIMEOUT, why="keep-alive timeout")

    # -- inbound ------------------------------------------------------------------------

    def _next_frame(self) -> tuple[int, bytes] | None:
        if not self._buffer:
            return None
        if not self._connected and self._buffer[0] != PacketType.CONNECT << 4:
            # Not MQTT at all (or a client out of order): no need to wait for more bytes.
            raise ProtocolViolation(Reason.PROTOCOL_ERROR, "the first packet is not CONNECT")
        header = packets.parse_fixed_header(self._buffer)
        if header is None:
            return None
        first_byte, length, offset = header
        size = offset + length
        if size > self._config.max_packet_bytes:
            raise ProtocolViolation(
                Reason.PACKET_TOO_LARGE,
                f"a {size}-byte packet, above the limit of {self._config.max_packet_bytes}",
            )
        if len(self._buffer) < size:
            return None
        with memoryview(self._buffer) as view:
            body = bytes(view[offset:size])
        del self._buffer[:size]
        return first_byte, body

    def _handle(self, first_byte: int, body: bytes) -> None:
        if not self._connected:
            self._on_connect(first_byte, body)
            return
        packet = packets.decode_packet(first_byte, body, self.version)
        match packet:
            case Publish():
                self._on_publish(packet)
            case Ack():
                self._on_ack(packet)
            case Subscribe():
                self._on_subscribe(packet)
            case Unsubscribe():
                self._on_unsubscribe(packet)
            case PingReq():
                self._write(packets.PINGRESP)
            case Disconnect():
                if packet.reason != Reason.DISCONNECT_WITH_WILL:
                    self._will = None
                self.end(None, why="DISCONNECT from the client")

    def _on_connect(self, first_byte: int, body: bytes) -> None:
        try:
            connect = packets.decode_connect(first_byte, body)
        except ProtocolViolation as violation:
            if violation.reason is Reason.UNSUPPORTED_PROTOCOL_VERSION:
                code = codes.CONNACK_V311_UNACCEPTABLE_VERSION
                self._write(packets.encode_connack(Version.V311, code))
            raise
        self.version = connect.version
        refusal = self._refusal(connect)
        if refusal is not None:
            log.info("refused CONNECT from %s: reason %#04x", self.peer, refusal)
            self._write(packets.encode_connack(self.version, refusal))
            self.end(None, why="CONNECT refused")
            return
        self._accept(connect)

    def _accept(self, connect: Connect) -> None:
        """Take the client's limits and will, register it, answer CONNACK."""
        assigned = not connect.client_id
        self.client_id = connect.client_id or f"auto-{uuid.uuid4().hex}"
        self._keepalive_s = connect.keepalive_s
        receive_maximum = packets.get_property(connect.properties, Prop.RECEIVE_MAXIMUM, 65535)
        self._client_max_packet = packets.get_property(connect.properties, Prop.MAXIMUM_PACKET_SIZE)
        if receive_maximum == 0 or self._client_max_packet == 0:
            raise ProtocolViolation(Reason.PROTOCOL_ERROR, "Receive Maximum or Packet Size 0")
        self._inflight_limit = min(receive_maximum or 65535, self._config.max_inflight_messages)
        if connect.will is not None:
            will = connect.will
            publish = Publish(will.topic, will.payload, will.qos, will.retain)
            self._will = self._message(publish, will.properties)
        self._broker.attach(self)  # closes an older connection with the same client id
        self._connected = True
        connack_properties = self._connack_properties(connect, assigned)
        self._write(packets.encode_connack(self.version, 0, properties=connack_properties))
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._keepalive_s:
            self._check_keepalive()
        log.debug("%s connected (MQTT %s)", self.name, self.version.name)

    def _refusal(self, connect: Connect) -> int | None:
        """The CONNACK code refusing ``connect``, or None to accept it."""
        v5 = connect.version is Version.V5
        if not connect.client_id and not connect.clean_start and not v5:
            return codes.CONNACK_V311_IDENTIFIER_REJECTED
        if v5 and packets.has_property(connect.properties, Prop.AUTHENTICATION_METHOD):
            return Reason.BAD_AUTHENTICATION_METHOD
        return None

    def _connack_properties(
        self, connect: Connect, assigned: bool
    ) -> list[tuple[int, PropertyValue]]:
        if self.version is not Version.V5:
            return []
        props: list[tuple[int, PropertyValue]] = [
            (Prop.MAXIMUM_PACKET_SIZE, self._config.max_packet_bytes),
            (Prop.TOPIC_ALIAS_MAXIMUM, 0),
            (Prop.RETAIN_AVAILABLE, 1),
            (Prop.WILDCARD_SUBSCRIPTION_AVAILABLE, 1),
            (Prop.SUBSCRIPTION_IDENTIFIER_AVAILABLE, 0),
            (Prop.SHARED_SUBSCRIPTION_AVAILABLE, 1),
        ]
        if packets.get_property(connect.properties, Prop.SESSION_EXPIRY_INTERVAL, 0):
            props.append((Prop.SESSION_EXPIRY_INTERVAL, 0))  # sessions end with the connection
        if assigned:
            props.append((Prop.ASSIGNED_CLIENT_IDENTIFIER, self.client_id))
        return props

    def _message(self, publish: Publish, properties: Properties) -> Message:
        """The routed form of a PUBLISH (or will): expiry made absolute, alias refused."""
        if not is_valid_topic_name(publish.topic):
            raise ProtocolViolation(Reason.TOPIC_NAME_INVALID, f"topic {publish.topic!r}")
        expires_at = None
        kept = []
        for key, value in properties:
            if key == Prop.MESSAGE_EXPIRY_INTERVAL and isinstance(value, int):
                expires_at = time.monotonic() + value
            elif key == Prop.TOPIC_ALIAS:
                raise ProtocolViolation(Reason.TOPIC_ALIAS_INVALID, "Topic Alias Maximum is 0")
            elif key in (Prop.SUBSCRIPTION_IDENTIFIER, Prop.WILL_DELAY_INTERVAL):
                continue  # not for subscribers; a will is due when the session ends anyway
            else:
                kept.append((key, value))
        return Message(
            publish.topic, publish.payload, publish.qos, publish.retain, tuple(kept), expires_at
        )

    def _on_publish(self, publish: Publish) -> None:
        packet_id = publish.packet_id
        if publish.qos == 2 and packet_id in self._incoming_qos2:
            self._write(packets.encode_ack(PacketType.PUBREC, packet_id, self.version))
            return  # a resend before PUBREL: routed already, exactly once
        self._broker.publish(self._message(publish, publish.properties), sender=self)
        if publish.qos == 1 and packet_id is not None:
            self._write(packets.encode_ack(PacketType.PUBACK, packet_id, self.version))
        elif publish.qos == 2 and packet_id is not None:
            self._incoming_qos2.add(packet_id)
            self._write(packets.encode_ack(PacketType.PUBREC, packet_id, self.version))

    def _on_ack(self, ack: Ack) -> None:
        match ack.kind:
            case PacketType.PUBREL:
                self._on_pubrel(ack.packet_id)
            case PacketType.PUBREC:
                self._on_pubrec(ack)
            case PacketType.PUBACK:
                self._complete(ack.packet_id, _Awaiting.PUBACK)
            case PacketType.PUBCOMP:
                self._complete(ack.packet_id, _Awaiting.PUBCOMP)

    def _on_pubrel(self, packet_id: int) -> None:
        """Step 2 of an inbound QoS 2 exchange: forget the id, answer PUBCOMP."""
        known = packet_id in self._incoming_qos2
        self._incoming_qos2.discard(packet_id)
        reason = Reason.SUCCESS if known else Reason.PACKET_IDENTIFIER_NOT_FOUND
        self._write(packets.encode_ack(PacketType.PUBCOMP, packet_id, self.version, reason))

    def _on_pubrec(self, ack: Ack) -> None:
        """Step 1 of an outbound QoS 2 exchange: answer PUBREL, then wait for PUBCOMP."""
        awaiting = self._inflight.get(ack.packet_id)
        if awaiting is _Awaiting.PUBREC and ack.reason >= 0x80:
            self._complete(ack.packet_id, _Awaiting.PUBREC)  # the client refused it
            return
        if awaiting is _Awaiting.PUBREC:
            self._inflight[ack.packet_id] = _Awaiting.PUBCOMP
        reason = Reason.PACKET_IDENTIFIER_NOT_FOUND if awaiting is None else Reason.SUCCESS
        self._write(packets.encode_ack(PacketType.PUBREL, ack.packet_id, self.version, reason))

    def _complete(self, packet_id: int, expected: _Awaiting) -> None:
        """Free the in-flight slot of ``packet_id`` if it waited for ``expected``."""
        if self._inflight.get(packet_id) is not expected:
            log.debug("%s: unexpected acknowledgement for packet %d", self.name, packet_id)
            return
        del self._inflight[packet_id]
        self._pump()

    def _on_subscribe(self, subscribe: Subscribe) -> None:
        if packets.has_property(subscribe.properties, Prop.SUBSCRIPTION_IDENTIFIER):
            raise ProtocolViolation(
                Reason.SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED, "CONNACK said they are not"
            )
        granted: list[int] = []
        retained: list[tuple[Message, int]] = []
        for topic_filter, options in subscribe.requests:
            try:
                existed = self._broker.subscribe(self, topic_filter, options)
            except InvalidFilter as error:
                log.info("%s: refused subscription: %s", self.name, error)
                v5 = self.version is Version.V5
                granted.append(Reason.TOPIC_FILTER_INVALID if v5 else codes.SUBACK_V311_FAILURE)
                continue
            granted.append(options.qos)
            if options.retain_handling == 0 or (options.retain_handling == 1 and not existed):
                retained += [(m, options.qos) for m in self._broker.retained(topic_filter)]
        self._write(packets.encode_suback(self.version, subscribe.packet_id, granted))
        for message, qos in retained:
            self.deliver(message, min(message.qos, qos), retain=True)

    def _on_unsubscribe(self, unsubscribe: Unsubscribe) -> None:
        codes = [
            Reason.SUCCESS
            if self._broker.unsubscribe(self, topic_filter)
            else Reason.NO_SUBSCRIPTION_EXISTED
            for topic_filter in unsubscribe.filters
        ]
        self._write(packets.encode_unsuback(self.version, unsubscribe.packet_id, codes))

    # -- outbound -----------------------------------------------------------------------

    def accepts(self) -> bool:
        """Whether a message delivered now would be kept (not dropped)."""
        return not self._ended and len(self._queue) < self._config.max_queued_messages

    def deliver(self, message: Message, qos: int, *, retain: bool) -> None:
        """Send ``message`` at ``qos`` now, or queue it; drop it if the queue is full."""
        if self._ended:
            return
        if len(self._queue) >= self._config.max_queued_messages:
            self._drop(f"its queue of {self._config.max_queued_messages} messages is full")
            return
        self._queue.append((message, qos, retain))
        if not self._writing_paused:
            self._pump()

    def _pump(self) -> None:
        now = time.monotonic()
        while self._queue and not self._writing_paused and not self._ended:
            message, qos, retain = self._queue[0]
            if qos and len(self._inflight) >= self._inflight_limit:
                return
            self._queue.popleft()
            self._send(message, qos, retain, now)

    def _send(self, message: Message, qos: int, retain: bool, now: float) -> None:
        remaining_s = message.remaining_s(now)
        if remaining_s == 0:
            self._stats.expired += 1
            return
        properties = message.properties
        if remaining_s is not None:
            properties = (*properties, (Prop.MESSAGE_EXPIRY_INTERVAL, remaining_s))
        packet_id = self._allocate_packet_id() if qos else None
        data = packets.encode_publish(
            self.version,
            message.topic,
            message.payload,
            qos=qos,
            retain=retain,
            packet_id=packet_id,
            properties=properties,
        )
        if self._client_max_packet is not None and len(data) > self._client_max_packet:
            self._drop(f"a {len(data)}-byte packet exceeds its Maximum Packet Size")
            return
        if packet_id is not None:
            self._inflight[packet_id] = _Awaiting.PUBACK if qos == 1 else _Awaiting.PUBREC
        self._stats.messages_out += 1
        self._write(data)

    def _allocate_packet_id(self) -> int:
        while True:  # ends: fewer than 65535 ids are ever in flight
            self._next_packet_id = self._next_packet_id % 65535 + 1
            if self._next_packet_id not in self._inflight:
                return self._next_packet_id

    def _drop(self, why: str) -> None:
        self.dropped += 1
        self._stats.dropped += 1
        if self.dropped % _DROP_LOG_EVERY == 1:
            log.warning("dropped a message for %s (%d so far): %s", self.name, self.dropped, why)

    def _write(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)
