"""One client connection and its session: an :class:`asyncio.Protocol`.

Everything runs on the broker's event loop, synchronously: bytes arrive in
``data_received``, complete packets are decoded and handled at once, and routed
messages are written to the subscribers' transports in the same call, so a message
crosses the broker without a task switch.

Outgoing flow control: a message for this client goes out at once when the socket
transport has room and, at QoS 1 and 2, fewer than the in-flight limit are
unacknowledged. Otherwise it waits in its session's bounded queue
(``max_queued_messages`` and ``max_queued_bytes``; beyond either it is dropped and
counted), and the queue is pumped again when the transport drains
(``resume_writing``) or an acknowledgement frees a slot. Messages whose MQTT 5 expiry
passes while queued are dropped when their turn comes.

The state that outlives the connection (subscriptions, queue, unacknowledged
messages) lives in its :class:`~splitmq.embedded_broker.session.Session`; a resumed
session gets its unacknowledged messages again first (PUBLISH with DUP, or PUBREL
once PUBREC came), then its queue.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
import uuid
from typing import TYPE_CHECKING, cast

from splitmq.embedded_broker.model import Message
from splitmq.embedded_broker.session import NEVER_EXPIRES, Awaiting, InFlight, Session
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
    from splitmq.embedded_broker.server import Broker

log = logging.getLogger(__name__)


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
        self.session: Session | None = None
        self._connected = False
        self._ended = False
        self._buffer = bytearray()
        self._last_rx_s = 0.0
        self._keepalive_s = 0
        self._timer: asyncio.TimerHandle | None = None
        self._will: Message | None = None
        self._will_delay_s = 0
        self._inflight_limit = self._config.max_inflight_messages
        self._client_max_packet: int | None = None
        self._writing_paused = False

    @property
    def subscriptions(self) -> dict[str, SubscriptionOptions]:
        return self.session.subscriptions if self.session is not None else {}

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
        """Close the connection once: tell an MQTT 5 client ``reason``, publish the will
        (after its Will Delay Interval, if the session outlives the connection).

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
        self._buffer.clear()
        self._broker.detach(self, will if publish_will else None, self._will_delay_s)
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
                self._on_disconnect(packet)

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

    def _on_disconnect(self, packet: Disconnect) -> None:
        """A client's DISCONNECT: drop the will unless asked to send it (MQTT 5 0x04);
        an MQTT 5 client may change its Session Expiry Interval (but not from 0)."""
        expiry = packets.get_property(packet.properties, Prop.SESSION_EXPIRY_INTERVAL)
        session = self.session
        if expiry is not None and session is not None:
            if session.expiry_s == 0 and expiry != 0:
                raise ProtocolViolation(
                    Reason.PROTOCOL_ERROR, "a Session Expiry Interval set at DISCONNECT after 0"
                )
            session.expiry_s = expiry
        if packet.reason != Reason.DISCONNECT_WITH_WILL:
            self._will = None
        self.end(None, why="DISCONNECT from the client")

    def _accept(self, connect: Connect) -> None:
        """Take the client's limits and will, open or resume its session, answer CONNACK."""
        assigned = not connect.client_id
        self.client_id = connect.client_id or f"auto-{uuid.uuid4().hex}"
        self._keepalive_s = connect.keepalive_s
        server_keepalive = self._config.max_keepalive_s
        imposed = (
            self.version is Version.V5
            and server_keepalive is not None
            and (self._keepalive_s == 0 or self._keepalive_s > server_keepalive)
        )
        if imposed and server_keepalive is not None:
            self._keepalive_s = server_keepalive
        receive_maximum = packets.get_property(connect.properties, Prop.RECEIVE_MAXIMUM, 65535)
        self._client_max_packet = packets.get_property(connect.properties, Prop.MAXIMUM_PACKET_SIZE)
        if receive_maximum == 0 or self._client_max_packet == 0:
            raise ProtocolViolation(Reason.PROTOCOL_ERROR, "Receive Maximum or Packet Size 0")
        self._inflight_limit = min(receive_maximum or 65535, self._config.max_inflight_messages)
        if connect.will is not None:
            will = connect.will
            publish = Publish(will.topic, will.payload, will.qos, will.retain)
            self._will = self._message(publish, will.properties)
            self._will_delay_s = (
                packets.get_property(will.properties, Prop.WILL_DELAY_INTERVAL, 0) or 0
            )
        if self.version is Version.V5:
            expiry_s = packets.get_property(connect.properties, Prop.SESSION_EXPIRY_INTERVAL, 0)
        else:  # 3.1.1: CleanSession=0 keeps the session until a clean one replaces it
            expiry_s = 0 if connect.clean_start else NEVER_EXPIRES
        # closes an older connection with the same client id; resumes its session
        self.session, present = self._broker.attach(
            self, clean_start=connect.clean_start, expiry_s=expiry_s or 0
        )
        self._connected = True
        connack_properties = self._connack_properties(assigned, imposed)
        self._write(
            packets.encode_connack(
                self.version, 0, session_present=present, properties=connack_properties
            )
        )
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._keepalive_s:
            self._check_keepalive()
        log.debug("%s connected (MQTT %s, session present %s)", self.name, self.version, present)
        if present:
            self._resend_inflight()
        self._pump()

    def _resend_inflight(self) -> None:
        """Unacknowledged messages of a resumed session go first, in order (MQTT 4.4):
        PUBLISH again with DUP, or PUBREL where PUBREC came already."""
        assert self.session is not None
        for packet_id, entry in self.session.inflight.items():
            if entry.awaiting is Awaiting.PUBCOMP:
                self._write(packets.encode_ack(PacketType.PUBREL, packet_id, self.version))
                continue
            self._stats.messages_out += 1
            self._write(self._encode(entry.message, entry.qos, entry.retain, packet_id, dup=True))

    def _refusal(self, connect: Connect) -> int | None:
        """The CONNACK code refusing ``connect``, or None to accept it."""
        v5 = connect.version is Version.V5
        if not connect.client_id and not connect.clean_start and not v5:
            return codes.CONNACK_V311_IDENTIFIER_REJECTED
        if v5 and packets.has_property(connect.properties, Prop.AUTHENTICATION_METHOD):
            return Reason.BAD_AUTHENTICATION_METHOD
        return None

    def _connack_properties(self, assigned: bool, imposed: bool) -> list[tuple[int, PropertyValue]]:
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
        if imposed:
            props.append((Prop.SERVER_KEEP_ALIVE, self._keepalive_s))
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
                continue  # not for subscribers
            else:
                kept.append((key, value))
        return Message(
            publish.topic, publish.payload, publish.qos, publish.retain, tuple(kept), expires_at
        )

    def _on_publish(self, publish: Publish) -> None:
        packet_id = publish.packet_id
        assert self.session is not None
        incoming_qos2 = self.session.incoming_qos2
        if publish.qos == 2 and packet_id in incoming_qos2:
            self._write(packets.encode_ack(PacketType.PUBREC, packet_id, self.version))
            return  # a resend before PUBREL: routed already, exactly once
        self._broker.publish(self._message(publish, publish.properties), sender=self)
        if publish.qos == 1 and packet_id is not None:
            self._write(packets.encode_ack(PacketType.PUBACK, packet_id, self.version))
        elif publish.qos == 2 and packet_id is not None:
            incoming_qos2.add(packet_id)
            self._write(packets.encode_ack(PacketType.PUBREC, packet_id, self.version))

    def _on_ack(self, ack: Ack) -> None:
        match ack.kind:
            case PacketType.PUBREL:
                self._on_pubrel(ack.packet_id)
            case PacketType.PUBREC:
                self._on_pubrec(ack)
            case PacketType.PUBACK:
                self._complete(ack.packet_id, Awaiting.PUBACK)
            case PacketType.PUBCOMP:
                self._complete(ack.packet_id, Awaiting.PUBCOMP)

    def _on_pubrel(self, packet_id: int) -> None:
        """Step 2 of an inbound QoS 2 exchange: forget the id, answer PUBCOMP."""
        assert self.session is not None
        known = packet_id in self.session.incoming_qos2
        self.session.incoming_qos2.discard(packet_id)
        reason = Reason.SUCCESS if known else Reason.PACKET_IDENTIFIER_NOT_FOUND
        self._write(packets.encode_ack(PacketType.PUBCOMP, packet_id, self.version, reason))

    def _on_pubrec(self, ack: Ack) -> None:
        """Step 1 of an outbound QoS 2 exchange: answer PUBREL, then wait for PUBCOMP."""
        assert self.session is not None
        entry = self.session.inflight.get(ack.packet_id)
        awaiting = entry.awaiting if entry is not None else None
        if awaiting is Awaiting.PUBREC and ack.reason >= 0x80:
            self._complete(ack.packet_id, Awaiting.PUBREC)  # the client refused it
            return
        if entry is not None and awaiting is Awaiting.PUBREC:
            entry.awaiting = Awaiting.PUBCOMP
        reason = Reason.PACKET_IDENTIFIER_NOT_FOUND if awaiting is None else Reason.SUCCESS
        self._write(packets.encode_ack(PacketType.PUBREL, ack.packet_id, self.version, reason))

    def _complete(self, packet_id: int, expected: Awaiting) -> None:
        """Free the in-flight slot of ``packet_id`` if it waited for ``expected``."""
        assert self.session is not None
        entry = self.session.inflight.get(packet_id)
        if entry is None or entry.awaiting is not expected:
            log.debug("%s: unexpected acknowledgement for packet %d", self.name, packet_id)
            return
        del self.session.inflight[packet_id]
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
                assert self.session is not None
                existed = self._broker.subscribe(self.session, topic_filter, options)
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
            assert self.session is not None
            self._broker.deliver(self.session, message, min(message.qos, qos), retain=True)

    def _on_unsubscribe(self, unsubscribe: Unsubscribe) -> None:
        codes = [
            Reason.SUCCESS
            if self.session is not None and self._broker.unsubscribe(self.session, topic_filter)
            else Reason.NO_SUBSCRIPTION_EXISTED
            for topic_filter in unsubscribe.filters
        ]
        self._write(packets.encode_unsuback(self.version, unsubscribe.packet_id, codes))

    # -- outbound -----------------------------------------------------------------------

    def deliver(self, message: Message, qos: int, *, retain: bool) -> None:
        """Send ``message`` at ``qos`` now, or queue it in the session (the broker
        checked the queue's room)."""
        if self._ended or self.session is None:
            return
        self.session.enqueue(message, qos, retain)
        if not self._writing_paused:
            self._pump()

    def _pump(self) -> None:
        session = self.session
        if session is None or not self._connected:
            return
        now = time.monotonic()
        while session.queue and not self._writing_paused and not self._ended:
            _, qos, _ = session.queue[0]
            if qos and len(session.inflight) >= self._inflight_limit:
                return
            message, qos, retain = session.dequeue()
            self._send(message, qos, retain, now)

    def _send(self, message: Message, qos: int, retain: bool, now: float) -> None:
        assert self.session is not None
        if message.remaining_s(now) == 0:
            self._stats.expired += 1
            return
        packet_id = self.session.allocate_packet_id() if qos else None
        data = self._encode(message, qos, retain, packet_id, now=now)
        if self._client_max_packet is not None and len(data) > self._client_max_packet:
            why = f"a {len(data)}-byte packet exceeds its Maximum Packet Size"
            self._broker.dropped(self.session, why)
            return
        if packet_id is not None:
            awaiting = Awaiting.PUBACK if qos == 1 else Awaiting.PUBREC
            self.session.inflight[packet_id] = InFlight(awaiting, message, qos, retain)
        self._stats.messages_out += 1
        self._write(data)

    def _encode(
        self,
        message: Message,
        qos: int,
        retain: bool,
        packet_id: int | None,
        *,
        dup: bool = False,
        now: float | None = None,
    ) -> bytes:
        remaining_s = message.remaining_s(time.monotonic() if now is None else now)
        properties = message.properties
        if remaining_s is not None:
            properties = (*properties, (Prop.MESSAGE_EXPIRY_INTERVAL, max(1, remaining_s)))
        return packets.encode_publish(
            self.version,
            message.topic,
            message.payload,
            qos=qos,
            retain=retain,
            dup=dup,
            packet_id=packet_id,
            properties=properties,
        )

    def _write(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)
