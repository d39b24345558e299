"""The MQTT transport: our own MQTT 3.1.1/5 client, built for the activation path.

Why not paho-mqtt (still here as :class:`splitmq.transport.paho_transport.PahoTransport`):
measured on loopback through Mosquitto, four hops carrying the sizes of a 3-stage
MobileNetV3 request (600, 126, 88 and 4 kB) take 1.9-2.1 ms with paho and 0.6-0.7 ms
with sockets used directly (``benchmarks/bench_transport.py``). paho hands every
publish to its network thread, reads a packet in several slices joined together, and
copies a payload four times. Here:

- ``publish`` writes from the caller's thread: the packet header and the payload go
  to the socket in one ``sendmsg``, the payload never copied.
- The network thread reads into one growing buffer and cuts each payload out of it
  once; it only parses, acknowledges and enqueues (the bounded :class:`Inbox`, or a
  component's own fast path).
- MQTT 5 by default, 3.1.1 on request (and, once, when the broker answers an MQTT 5
  CONNECT as a 3.1.1 broker does); QoS 0, 1 and 2 in and out; message expiry.
- Every CONNACK property that binds a client is obeyed: Maximum Packet Size, Receive
  Maximum (without one, a 3.1.1 broker gets at most :data:`DEFAULT_INFLIGHT_311`
  messages in flight: Mosquitto drops QoS 2 messages past its
  ``max_inflight_messages``, 20 by default), Server Keep Alive, Assigned Client
  Identifier, Retain / Wildcard / Shared Subscription Available (a call that needs
  one the broker lacks fails at once) and Maximum QoS (a publish above it goes out at
  the broker's maximum, with one warning). No Topic Alias and no Subscription
  Identifier is ever sent.
- Topic names and filters are checked before anything is sent
  (:mod:`splitmq.topic_syntax`): a bad one raises :class:`InvalidTopic` at the call.
- TCP_NODELAY before CONNECT; TLS with client certificates (``channel.TlsChannel``).
- A last will; a clean close sends DISCONNECT so the broker drops it.
- Keep-alive: PINGREQ when idle; a broker silent for 1.5 keep-alive periods is
  dropped (a blocked reader or writer is woken by shutting the socket down).
- Reconnects with jittered exponential backoff ("full jitter"; a connection that
  dies within :data:`STABLE_CONNECTION_S` does not reset it), re-subscribing every
  filter and re-sending unacknowledged QoS 1/2 messages (DUP) after each reconnect;
  a QoS 2 message the broker has acknowledged with PUBREC only gets its PUBREL again.
  QoS 1/2 messages published while disconnected wait (up to ``outbox_size``).
- A packet the broker rejects fails once, to its caller, with the broker's reason: a
  failure reason code in PUBACK / PUBREC / SUBACK, or a close. After the broker closed
  a connection with messages in flight, they are re-sent one at a time; one that is
  alone in flight when the broker closes again is the culprit and fails with
  :class:`PublishRefused` (never re-sent in a loop). A SUBSCRIBE waiting when the
  broker closes fails the same way.
- A size check before publishing raises :class:`PayloadTooLarge`.

Beside it: ``mqtt_reader`` cuts packets out of the byte stream, ``mqtt_connack`` reads
what a CONNACK says, ``mqtt_errors`` holds what the client raises about the broker.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import queue
import random
import socket
import ssl
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence

from splitmq.errors import NotConnected, PayloadTooLarge, TransportError
from splitmq.mqtt.codes import (
    CONNACK_V311_TEXT,
    PacketType,
    Prop,
    Reason,
    Version,
    reason_text,
)
from splitmq.mqtt.packets import (
    PINGREQ,
    Ack,
    ConnAck,
    Disconnect,
    ProtocolViolation,
    SubAck,
    WillMessage,
    decode_server_packet,
    encode_ack,
    encode_client_disconnect,
    encode_connect,
    encode_subscribe,
    encode_unsubscribe,
    expiry_property,
    get_property,
    publish_header,
    string_property,
)
from splitmq.topic_syntax import check_topic_filter, check_topic_name
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
from splitmq.transport.channel import Channel, TlsChannel
from splitmq.transport.config import (
    ACK_HOLD_MOST,
    MqttVersion,
    TransportConfig,
    paced_wait_s,
)
from splitmq.transport.mqtt_connack import BrokerFeatures, answered_as_311, broker_reason
from splitmq.transport.mqtt_errors import (
    BrokerClosed,
    ConnectionRefused,
    NotMqtt5,
    PublishRefused,
)
from splitmq.transport.mqtt_reader import LARGE_PACKET, LargePublish, PacketReader, payload_view
from splitmq.transport.payload import Buffer, Payload, payload_size

log = logging.getLogger(__name__)

__all__ = [  # what other modules and the tests take from here
    "LARGE_PACKET",
    "MAX_EXPIRY_S",
    "BrokerClosed",
    "BrokerFeatures",
    "ConnectionRefused",
    "MqttEngine",
    "MqttTransport",
    "NotMqtt5",
    "PublishRefused",
    "backoff_delay",
    "max_payload_bytes",
    "packet_size",
]

MAX_TOPIC_BYTES = 512
"""The longest topic we budget for when telling callers the largest payload."""
MAX_EXPIRY_S = 0xFFFFFFFF
"""The largest MQTT 5 message expiry interval (a four-byte integer, seconds)."""
CONNECT_TIMEOUT_S = 10.0
DEFAULT_INFLIGHT_311 = 20
"""QoS 1/2 messages in flight when the broker announces no Receive Maximum (MQTT
3.1.1 has none): Mosquitto's default ``max_inflight_messages``, past which it drops
QoS 2 messages from a 3.1.1 client."""
STABLE_CONNECTION_S = 10.0
"""A connection that lived shorter than this does not reset the reconnect back-off."""
_PUBACK_BYTE = PacketType.PUBACK << 4
"""A PUBACK's first byte (its flags are 0: 3.4.1)."""


def packet_size(topic: str, payload_bytes: int, qos: int, version: MqttVersion) -> int:
    """The size of the PUBLISH packet that carries ``payload_bytes`` on ``topic``.

    Properties (MQTT 5) are budgeted generously: message expiry and a length byte.
    """
    variable = 2 + len(topic.encode("utf-8")) + (2 if qos else 0)
    if version is MqttVersion.V5:
        variable += 1 + 5
    remaining = variable + payload_bytes
    length_bytes = 1
    while remaining >= 128**length_bytes:
        length_bytes += 1
    return 1 + length_bytes + remaining


def backoff_delay(attempt: int, min_s: float, max_s: float, rng: random.Random) -> float:
    """Full-jitter exponential backoff: uniform in ``[min_s, min(max_s, min_s * 2**attempt))``."""
    ceiling = min(max_s, min_s * 2 ** min(attempt, 32))
    return rng.uniform(min_s, max(min_s, ceiling))


def max_payload_bytes(max_packet_bytes: int, version: MqttVersion) -> int:
    """The largest payload that fits ``max_packet_bytes`` on the longest topic we allow."""
    return max_packet_bytes - packet_size("x" * MAX_TOPIC_BYTES, 0, 1, version) - 4


class ConnectionEvents:
    """Tells connection listeners of each (re)connection and loss, on a thread of its own
    (never the network thread: a listener may publish or block)."""

    def __init__(self, name: str):
        self._listeners: list[ConnectionListener] = []
        self._queue: queue.Queue[bool | None] = queue.Queue()
        self._events_thread = threading.Thread(target=self._run, name=f"{name}-events", daemon=True)

    def add(self, listener: ConnectionListener) -> None:
        self._listeners.append(listener)

    def start(self) -> None:
        self._events_thread.start()

    def put(self, up: bool) -> None:
        self._queue.put(up)

    def stop(self, timeout_s: float = 5.0) -> None:
        if self._events_thread.is_alive():
            self._queue.put(None)
            self._events_thread.join(timeout_s)

    def _run(self) -> None:
        while True:
            event = self._queue.get()
            if event is None:
                return
            for listener in list(self._listeners):
                try:
                    listener(event)
                except Exception:
                    log.exception("connection listener failed")


_EVENTS = threading.Lock()
"""Makes the one event a message gets when somebody waits for its acknowledgement."""


class _Outgoing:
    """A message on its way out; also the :class:`Receipt` ``publish`` returns.

    Most receipts are never waited for (a hop's activation, a result): the event a
    waiter needs is made when one waits, not for every message.
    """

    __slots__ = (
        "_done",
        "_error",
        "_event",
        "expires_at",
        "length",
        "packet_id",
        "parts",
        "qos",
        "released",
        "retain",
        "sent",
        "topic",
        "topic_bytes",
    )

    def __init__(  # noqa: PLR0917 (private, one caller)
        self,
        topic: str,
        parts: list[Buffer],
        length: int,
        qos: int,
        retain: bool,
        expires_at: float | None,
    ):
        self.topic = topic
        self.topic_bytes = topic.encode("utf-8")
        self.parts = parts
        self.length = length
        self.qos = qos
        self.retain = retain
        self.expires_at = expires_at
        self.packet_id = 0
        self.sent = False  # transmitted at least once: a re-send carries DUP
        self.released = False  # QoS 2: PUBREC came, only PUBREL may be sent again
        self._done = False
        self._event: threading.Event | None = None
        self._error: TransportError | None = None

    def finish(self, error: TransportError | None = None) -> None:
        self._error = error
        self._done = True
        event = self._event  # read after _done is set: a waiter that made it after sees _done
        if event is not None:
            event.set()

    def wait(self, timeout_s: float | None = 10.0) -> None:
        if not self._done:
            with _EVENTS:
                if self._event is None:
                    self._event = threading.Event()
                event = self._event
            if not self._done and not event.wait(timeout_s):
                raise TransportError(f"publish on {self.topic!r} not acknowledged in {timeout_s} s")
        if self._error is not None:
            raise self._error


class _Waiter:
    """A SUBSCRIBE or UNSUBSCRIBE waiting for its acknowledgement."""

    __slots__ = ("closed_by_broker", "event", "lost", "quiet", "reasons", "topic_filter")

    def __init__(self, topic_filter: str, quiet: bool = False):
        self.topic_filter = topic_filter
        self.event = threading.Event()
        self.reasons: tuple[int, ...] = ()
        self.lost = False
        self.closed_by_broker: str | None = None  # the broker's reason, if it closed
        self.quiet = quiet  # a re-subscription after a reconnect: nobody waits


class MqttEngine:
    """What both MQTT engines (:class:`MqttTransport`, and ``PahoTransport``) keep alike:
    identity, statistics, the inbox, the subscriptions to renew, connection events and
    the packet limit (the configured one, lowered by the broker's CONNACK)."""

    def __init__(
        self,
        config: TransportConfig,
        *,
        on_overflow: OverflowHandler | None = None,
        rng: random.Random | None = None,
    ):
        self.config = config
        self._client_id = config.resolved_client_id()
        self._stats = TransportStats()
        self._inbox = Inbox(
            self._client_id,
            self._stats,
            size=config.inbox_size,
            workers=config.inbox_workers,
            on_overflow=on_overflow,
        )
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._subscriptions: dict[str, int] = {}
        self._connected = threading.Event()
        self._first_result: queue.Queue[str | None] = queue.Queue()
        self._events = ConnectionEvents(self._client_id)
        self._broker_max_packet: int | None = None

    # -- properties ---------------------------------------------------------------------

    @property
    def client_id(self) -> str:
        return self._client_id

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def stats(self) -> TransportStats:
        return self._stats

    @property
    def max_packet_bytes(self) -> int:
        limit = self.config.max_packet_bytes
        if self._broker_max_packet is not None:
            limit = min(limit, self._broker_max_packet)
        return limit

    @property
    def max_payload_bytes(self) -> int:
        return max_payload_bytes(self.max_packet_bytes, self.config.version)

    def add_connection_listener(self, listener: ConnectionListener) -> None:
        self._events.add(listener)

    def pace_acks(self, stage_s: float) -> None:
        """Nothing to pace here: paho acknowledges each message and reads each
        acknowledgement as it comes (:class:`MqttTransport` paces its own)."""


class MqttTransport(MqttEngine):
    """A broker connection; see the module docstring for what it guarantees."""

    def __init__(
        self,
        config: TransportConfig,
        *,
        will: Will | None = None,
        on_overflow: OverflowHandler | None = None,
        rng: random.Random | None = None,
    ):
        super().__init__(config, on_overflow=on_overflow, rng=rng)
        self._version = Version.V5 if config.version is MqttVersion.V5 else Version.V311
        self._will = will
        self._channel: Channel | None = None
        self._closing = threading.Event()
        self._next_id = 0
        self._inflight: dict[int, _Outgoing] = {}
        self._pending: deque[_Outgoing] = deque()
        self._waiters: dict[int, _Waiter] = {}
        self._qos2_in: set[int] = set()
        self._receive_max = max(1, min(config.max_inflight, DEFAULT_INFLIGHT_311))
        self._suspects: set[int] = set()
        self._keepalive_s = config.keepalive_s
        self._broker = BrokerFeatures()
        self._qos_capped_warned = False
        self._reader: PacketReader | None = None
        self._last_read = 0.0
        self._last_write = 0.0
        self._ever_connected = False
        self._started = False
        self._ack_hold_s = config.ack_hold_s
        self._lone_ack_wait_s = config.lone_ack_wait_s
        self._threads = [
            threading.Thread(target=self._run, name=f"{self._client_id}-mqtt", daemon=True),
            threading.Thread(target=self._run_keepalive, name=f"{self._client_id}-ka", daemon=True),
        ]

    # -- properties ---------------------------------------------------------------------

    @property
    def fast_paths_may_block(self) -> bool:
        return True  # the reader thread only reads; publishing never waits for it

    @property
    def protocol_version(self) -> MqttVersion:
        """The MQTT version spoken now (3.1.1 after falling back from 5)."""
        return MqttVersion.V5 if self._version is Version.V5 else MqttVersion.V311

    @property
    def max_payload_bytes(self) -> int:
        return max_payload_bytes(self.max_packet_bytes, self.protocol_version)

    @property
    def keepalive_s(self) -> int:
        """The keep-alive in force: ours, or the broker's Server Keep Alive (MQTT 5)."""
        return self._keepalive_s

    @property
    def broker_features(self) -> BrokerFeatures:
        """What the broker's last CONNACK said it supports."""
        return self._broker

    # -- life cycle ---------------------------------------------------------------------

    def start(self, timeout_s: float = 10.0) -> None:
        if self._started:
            return
        self._started = True
        self._inbox.start()
        self._events.start()
        for thread in self._threads:
            thread.start()
        try:
            outcome = self._first_result.get(timeout=timeout_s)
        except queue.Empty:
            self.close()
            raise TransportError(
                f"no connection to the broker at {self.config.url} within {timeout_s} s: "
                "is it running, and is the address right?"
            ) from None
        if outcome is not None:
            self.close()
            raise ConnectionRefused(self.config.url, outcome)

    def close(self) -> None:
        if self._closing.is_set():
            return
        self._closing.set()
        channel = self._channel
        if channel is not None and self._connected.is_set():
            with contextlib.suppress(OSError, ssl.SSLError):
                self._write(channel, [encode_client_disconnect(self._version)])
        self._connected.clear()
        if channel is not None:
            channel.close()
        for thread in self._threads:
            if thread.is_alive() and thread is not threading.current_thread():
                thread.join(5.0)
        self._inbox.stop()
        self._events.stop()
        with self._lock:
            unsent = [*self._inflight.values(), *self._pending]
            self._inflight.clear()
            self._pending.clear()
        for message in unsent:
            message.finish(NotConnected(f"transport {self._client_id} closed before the ack"))

    def __enter__(self) -> MqttTransport:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- publish / subscribe ---------------------------------------------------------

    def publish(
        self,
        topic: str,
        payload: Payload,
        *,
        qos: int = 1,
        retain: bool = False,
        expiry_s: float | None = None,
    ) -> _Outgoing:
        if self._closing.is_set():
            raise NotConnected(f"transport {self._client_id} is closed")
        _checked_name(topic)
        if qos not in (0, 1, 2):
            raise ValueError(f"QoS {qos} publishing on {topic!r}: MQTT has QoS 0, 1 and 2")
        features = self._broker
        if retain and not features.retain_available:
            raise TransportError(
                f"the broker {self.config.url} does not keep retained messages (CONNACK: "
                f"Retain Available 0): publish on {topic!r} without retain"
            )
        if qos > features.maximum_qos:
            if not self._qos_capped_warned:
                self._qos_capped_warned = True
                log.warning(
                    "the broker %s accepts QoS %d at most (CONNACK Maximum QoS): "
                    "publishing QoS %d messages at QoS %d",
                    self.config.url,
                    features.maximum_qos,
                    qos,
                    features.maximum_qos,
                )
            qos = features.maximum_qos
        parts: list[Buffer] = list(payload) if isinstance(payload, list) else [payload]
        length = payload_size(parts)
        size = packet_size(topic, length, qos, self.protocol_version)
        if size > self.max_packet_bytes:
            raise PayloadTooLarge(topic, size, self.max_packet_bytes)
        expires_at = None
        if expiry_s is not None and self._version is Version.V5:
            expires_at = time.monotonic() + expiry_s
        message = _Outgoing(topic, parts, length, qos, retain, expires_at)
        self._stats.msgs_out += 1
        self._stats.bytes_out += length
        if qos == 0:
            channel = self._channel
            if channel is not None and self._connected.is_set():
                with contextlib.suppress(OSError, ssl.SSLError):  # the reader sees the loss
                    self._transmit(channel, message)
            message.finish()  # at most once: lost with the connection, as MQTT says
            return message
        with self._lock:
            if len(self._inflight) + len(self._pending) >= self.config.outbox_size:
                self._stats.msgs_out -= 1
                self._stats.bytes_out -= length
                raise TransportError(
                    f"outgoing queue full ({self.config.outbox_size} messages) publishing on "
                    f"{topic!r}: the broker is unreachable or too slow"
                )
            message.packet_id = self._allocate_id()
            channel = self._channel
            send_now = (
                channel is not None
                and self._connected.is_set()
                and not self._pending
                and len(self._inflight) < self._window()
            )
            if send_now:
                self._inflight[message.packet_id] = message
                message.sent = True
            else:
                self._pending.append(message)
        if send_now and channel is not None:
            try:  # noqa: SIM105 (contextlib.suppress: three Python calls more per publish)
                self._transmit(channel, message)
            except (OSError, ssl.SSLError):
                pass  # re-sent after the reconnect
        return message

    def subscribe(
        self,
        topic_filter: str,
        handler: Handler,
        *,
        qos: int = 1,
        timeout_s: float = 10.0,
        fast_path: FastPath | None = None,
    ) -> None:
        check_topic_filter(topic_filter)
        if qos not in (0, 1, 2):
            raise ValueError(f"QoS {qos} subscribing to {topic_filter!r}: MQTT has 0, 1 and 2")
        self._check_features(topic_filter)
        self._inbox.route(topic_filter, handler, fast_path)
        with self._lock:
            self._subscriptions[topic_filter] = qos
        waiter = self._request(
            topic_filter, lambda pid: encode_subscribe(self._version, pid, topic_filter, qos)
        )
        if waiter is None:
            return  # not connected: subscribed on (re)connect
        if not waiter.event.wait(timeout_s):
            raise TransportError(f"no SUBACK for {topic_filter!r} within {timeout_s} s")
        if waiter.closed_by_broker is not None:
            self._forget(topic_filter)
            raise TransportError(
                f"the broker closed the connection on SUBSCRIBE {topic_filter!r} "
                f"({waiter.closed_by_broker}); not subscribed"
            )
        if waiter.lost:
            return  # the connection dropped meanwhile: the reconnect re-subscribes
        refused = [code for code in waiter.reasons if code >= 0x80]
        if refused:
            self._forget(topic_filter)
            reason = reason_text(refused[0]) if self._version is Version.V5 else "failure"
            raise TransportError(f"broker refused the subscription {topic_filter!r}: {reason}")

    def _check_features(self, topic_filter: str) -> None:
        """Refuse at once what the broker's CONNACK said it does not support."""
        features = self._broker
        shared = topic_filter.startswith("$share/")
        if shared and not features.shared_subscriptions:
            raise TransportError(
                f"the broker {self.config.url} has no shared subscriptions (CONNACK: Shared "
                f"Subscription Available 0): cannot subscribe to {topic_filter!r}"
            )
        plain = topic_filter.split("/", 2)[2] if shared else topic_filter
        levels = plain.split("/")
        if ("+" in levels or levels[-1] == "#") and not features.wildcard_subscriptions:
            raise TransportError(
                f"the broker {self.config.url} refuses wildcard subscriptions (CONNACK: "
                f"Wildcard Subscription Available 0): cannot subscribe to {topic_filter!r}"
            )

    def _forget(self, topic_filter: str) -> None:
        self._inbox.unroute(topic_filter)
        with self._lock:
            self._subscriptions.pop(topic_filter, None)

    def unsubscribe(self, topic_filter: str) -> None:
        check_topic_filter(topic_filter)
        self._forget(topic_filter)
        self._request(
            topic_filter, lambda pid: encode_unsubscribe(self._version, pid, topic_filter)
        )

    def pace_acks(self, stage_s: float) -> None:
        """Hold PUBACKs and read lone acknowledgements late for
        :func:`~splitmq.transport.config.paced_wait_s` of ``stage_s``, from the next
        message on (and on every later connection)."""
        config = self.config
        self._ack_hold_s = paced_wait_s(config.ack_hold_s, stage_s)
        self._lone_ack_wait_s = paced_wait_s(config.lone_ack_wait_s, stage_s)
        channel = self._channel
        if channel is not None:
            channel.wait_for_lone_acks(self._lone_ack_wait_s)

    # -- sending ------------------------------------------------------------------------

    def _allocate_id(self) -> int:
        """A packet identifier no message or request in flight uses (under ``_lock``)."""
        for _ in range(65535):
            self._next_id = self._next_id % 65535 + 1
            candidate = self._next_id
            busy = candidate in self._inflight or candidate in self._waiters
            if not busy and not any(m.packet_id == candidate for m in self._pending):
                return candidate
        raise TransportError("all 65535 MQTT packet identifiers are in use")

    def _request(self, topic_filter: str, encode: Callable[[int], bytes]) -> _Waiter | None:
        """Send a SUBSCRIBE or UNSUBSCRIBE made by ``encode(packet_id)``; None if offline."""
        channel = self._channel
        if channel is None or not self._connected.is_set():
            return None
        waiter = _Waiter(topic_filter)
        with self._lock:
            packet_id = self._allocate_id()
            self._waiters[packet_id] = waiter
        try:
            self._write(channel, [encode(packet_id)])
        except (OSError, ssl.SSLError):
            with self._lock:
                self._waiters.pop(packet_id, None)
            return None
        return waiter

    def _transmit(self, channel: Channel, message: _Outgoing, dup: bool = False) -> None:
        properties = b"\x00"
        if message.expires_at is not None:
            left = message.expires_at - time.monotonic()
            properties = expiry_property(min(MAX_EXPIRY_S, max(1, int(left + 0.999))))
        header = publish_header(
            self._version,
            message.topic_bytes,
            message.length,
            qos=message.qos,
            retain=message.retain,
            dup=dup,
            packet_id=message.packet_id,
            properties=properties,
        )
        self._write(channel, [header, *message.parts])

    def _acks_awaited(self) -> bool:
        """Whether messages wait for a free in-flight slot: then the broker's PUBACKs
        are read at once, alone or not (:meth:`Channel.read_lone_acks_late`)."""
        return bool(self._pending)

    def _window(self) -> int:
        """QoS 1/2 messages allowed in flight: one at a time while re-sending those the
        broker had in flight when it closed the connection (to find a culprit)."""
        return 1 if self._suspects else self._receive_max

    def _write(self, channel: Channel, parts: Sequence[Buffer]) -> None:
        with channel.send_lock:
            channel.send(parts)
        self._last_write = time.monotonic()

    def _release_pending(self, channel: Channel) -> None:
        """Move waiting messages into free in-flight slots and send them (any thread)."""
        if not self._pending:  # read without the lock, to spare taking it: looked at again
            return
        while True:
            with self._lock:
                if not self._pending or len(self._inflight) >= self._window():
                    return
                message = self._pending.popleft()
                self._inflight[message.packet_id] = message
                dup, message.sent = message.sent, True
            self._transmit(channel, message, dup=dup)

    # -- the network thread -----------------------------------------------------------

    def _run(self) -> None:
        attempt = 0
        while not self._closing.is_set():
            try:
                channel = self._connect()
            except ConnectionRefused as refused:
                if not self._ever_connected:
                    self._first_result.put(refused.reason)
                    return
                log.warning("broker %s refused to reconnect: %s", self.config.url, refused.reason)
            except NotMqtt5 as error:
                log.warning("%s; falling back to MQTT 3.1.1", error)
                self._version = Version.V311
                continue  # once: the version stays 3.1.1
            except (OSError, ssl.SSLError, ProtocolViolation, TransportError) as error:
                log.debug("connecting to %s failed: %s", self.config.url, error)
            else:
                connected_at = time.monotonic()
                loss: BaseException | None = None
                try:
                    self._on_connected(channel)
                    self._read_loop(channel)
                except (OSError, ssl.SSLError, ProtocolViolation, TransportError) as error:
                    loss = error
                    if not self._closing.is_set():
                        log.warning("lost the broker %s (%s); reconnecting", self.config.url, error)
                finally:
                    self._on_lost(channel, loss)
                if time.monotonic() - connected_at >= STABLE_CONNECTION_S:
                    attempt = 0  # a short-lived connection keeps backing off
            if self._closing.is_set():
                return
            delay = backoff_delay(
                attempt, self.config.reconnect_min_s, self.config.reconnect_max_s, self._rng
            )
            attempt += 1
            self._closing.wait(delay)

    def _connect(self) -> Channel:
        config = self.config
        sock = socket.create_connection((config.host, config.port), timeout=CONNECT_TIMEOUT_S)
        try:
            if config.tcp_nodelay:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            channel: Channel
            if config.tls:
                tls = TlsChannel(sock, self._tls_context(), config.host)
                tls.handshake()
                channel = tls
            else:
                channel = Channel(sock)
            will = None
            if self._will is not None:
                w = self._will
                will = WillMessage(w.topic, w.payload, w.qos, w.retain)
            channel.send(
                [
                    encode_connect(
                        self._version,
                        self._client_id,
                        keepalive_s=config.keepalive_s,
                        will=will,
                        username=config.username,
                        password=config.password,
                    )
                ]
            )
            reader = PacketReader(channel, functools.partial(publish_payload_start, self._version))
            first, body = reader.next_packet()
            if isinstance(body, LargePublish):
                raise ProtocolViolation(Reason.PROTOCOL_ERROR, "the first packet is not CONNACK")
            packet = decode_server_packet(first, bytes(body), self._version)
            if not isinstance(packet, ConnAck):
                raise ProtocolViolation(Reason.PROTOCOL_ERROR, "the first packet is not CONNACK")
            if self._version is Version.V5 and answered_as_311(packet, len(body)):
                raise NotMqtt5(
                    f"the broker {config.url} does not speak MQTT 5: it answered the MQTT 5 "
                    f"CONNECT as an MQTT 3.1.1 broker (CONNACK code {packet.reason})"
                )
            if packet.reason:
                if self._version is Version.V5:
                    raise ConnectionRefused(config.url, reason_text(packet.reason))
                text = CONNACK_V311_TEXT.get(packet.reason, f"return code {packet.reason}")
                raise ConnectionRefused(config.url, text)
            sock.settimeout(None)
            self._reader = reader
            self._apply_connack(packet)
            channel.read_lone_acks_late(self._lone_ack_wait_s, self._acks_awaited)
            return channel
        except BaseException:
            with contextlib.suppress(OSError):
                sock.close()
            raise

    def _tls_context(self) -> ssl.SSLContext:
        config = self.config
        context = ssl.create_default_context(
            cafile=str(config.ca_certs) if config.ca_certs else None
        )
        if config.certfile is not None and config.keyfile is not None:
            context.load_cert_chain(str(config.certfile), str(config.keyfile))
        if config.tls_insecure:
            context.check_hostname = False
        return context

    def _apply_connack(self, connack: ConnAck) -> None:
        """Obey what the broker's CONNACK binds a client to (MQTT 5.0 section 3.2.2.3)."""
        properties = connack.properties
        self._broker_max_packet = get_property(properties, Prop.MAXIMUM_PACKET_SIZE)
        receive_max = get_property(properties, Prop.RECEIVE_MAXIMUM)
        if receive_max is None:  # 3.1.1 has none; MQTT 5 means 65,535 by omitting it
            receive_max = 65535 if self._version is Version.V5 else DEFAULT_INFLIGHT_311
        self._receive_max = max(1, min(self.config.max_inflight, receive_max))
        server_keepalive = get_property(properties, Prop.SERVER_KEEP_ALIVE)
        self._keepalive_s = (
            self.config.keepalive_s if server_keepalive is None else server_keepalive
        )
        assigned = string_property(properties, Prop.ASSIGNED_CLIENT_IDENTIFIER)
        if assigned:
            self._client_id = assigned
        self._broker = BrokerFeatures.from_properties(properties)

    def _on_connected(self, channel: Channel) -> None:
        now = time.monotonic()
        self._last_read = self._last_write = now
        if self._ever_connected:
            self._stats.reconnects += 1
        with self._lock:
            self._channel = channel
            self._qos2_in.clear()
            subscriptions = list(self._subscriptions.items())
            released = list(self._inflight.values())  # _on_lost left only these
        for topic_filter, qos in subscriptions:
            with self._lock:
                packet_id = self._allocate_id()
                self._waiters[packet_id] = _Waiter(topic_filter, quiet=True)
            self._write(channel, [encode_subscribe(self._version, packet_id, topic_filter, qos)])
        for message in released:  # PUBREC came: only PUBREL may go again (MQTT 4.3.3)
            self._write(channel, [encode_ack(PacketType.PUBREL, message.packet_id, self._version)])
        self._connected.set()
        self._release_pending(channel)
        self._events.put(True)
        if not self._ever_connected:
            self._ever_connected = True
            self._first_result.put(None)

    def _on_lost(self, channel: Channel, loss: BaseException | None) -> None:
        """Forget the connection; put the messages it had in flight back in line.

        After the broker itself closed the connection (``BrokerClosed``), the messages
        it had in flight become suspects, re-sent one at a time: one alone in flight
        when the broker closes again is refused for good (:class:`PublishRefused`).
        """
        was_connected = self._connected.is_set()
        self._connected.clear()
        channel.close()
        closed_by = broker_reason(loss)
        culprit: _Outgoing | None = None
        with self._lock:
            if self._channel is channel:
                self._channel = None
            waiters = list(self._waiters.values())
            self._waiters.clear()
            unreleased = [m for m in self._inflight.values() if not m.released]
            for message in unreleased:
                del self._inflight[message.packet_id]
            if closed_by is not None and unreleased:
                if len(unreleased) == 1 and unreleased[0].packet_id in self._suspects:
                    culprit = unreleased.pop()
                    self._suspects.discard(culprit.packet_id)
                else:
                    self._suspects.update(m.packet_id for m in unreleased)
            self._pending.extendleft(reversed(unreleased))
        if culprit is not None:
            log.error(
                "the broker closed the connection each time the message on %r was sent (%s): "
                "refused, not sent again",
                culprit.topic,
                closed_by,
            )
            culprit.finish(PublishRefused(culprit.topic, f"it closed the connection ({closed_by})"))
        for waiter in waiters:
            waiter.lost = True
            if not waiter.quiet:
                waiter.closed_by_broker = closed_by
            waiter.event.set()
        if was_connected and not self._closing.is_set():
            self._events.put(False)

    def _read_loop(self, channel: Channel) -> None:
        reader = self._reader
        assert reader is not None
        while True:
            first, body = reader.next_packet()
            self._last_read = time.monotonic()
            if first >> 4 == PacketType.PUBLISH:
                self._on_publish(channel, first, body)
                continue
            assert not isinstance(body, LargePublish)  # only a PUBLISH is read so
            if first == _PUBACK_BYTE and len(body) == 2 and (body[0] or body[1]):
                self._on_puback(channel, (body[0] << 8) | body[1])
            else:
                self._on_control(channel, decode_server_packet(first, bytes(body), self._version))

    def _on_publish(
        self, channel: Channel, first: int, packet: memoryview | bytearray | LargePublish
    ) -> None:
        body = memoryview(packet.head if isinstance(packet, LargePublish) else packet)
        qos = (first >> 1) & 0x03
        position = publish_payload_start(self._version, first, body)
        if position is None:
            raise ProtocolViolation(Reason.MALFORMED_PACKET, "a PUBLISH cut short in its header")
        (length,) = struct.unpack_from("!H", body, 0)
        try:
            topic = str(body[2 : 2 + length], "utf-8")
        except UnicodeDecodeError:
            raise ProtocolViolation(Reason.MALFORMED_PACKET, "a topic is not UTF-8") from None
        packet_id = struct.unpack_from("!H", body, 2 + length)[0] if qos else 0
        if isinstance(packet, LargePublish):
            payload: bytes | bytearray = packet.payload
        else:
            payload = payload_view(packet, body, position)
        if qos == 2:
            fresh = packet_id not in self._qos2_in
            self._qos2_in.add(packet_id)
            self._write(channel, [encode_ack(PacketType.PUBREC, packet_id, self._version)])
            if not fresh:
                return  # a re-sent QoS 2 message we already delivered
        self._stats.msgs_in += 1
        self._stats.bytes_in += len(payload)
        puback = encode_ack(PacketType.PUBACK, packet_id, self._version) if qos == 1 else None
        hold_s = self._ack_hold_s
        if puback is not None and hold_s:  # held before delivery: the handler's packet carries it
            with channel.send_lock:
                channel.hold(puback, hold_s, ACK_HOLD_MOST)
                puback = None
        self._inbox.put(InboundMessage(topic, payload, qos, bool(first & 0x01)))
        if puback is not None:
            self._write(channel, [puback])

    def _on_control(self, channel: Channel, packet: object) -> None:
        if isinstance(packet, Ack):
            self._on_ack(channel, packet)
        elif isinstance(packet, SubAck):
            with self._lock:
                waiter = self._waiters.pop(packet.packet_id, None)
            if waiter is None:
                return
            waiter.reasons = packet.reasons
            if waiter.quiet and any(code >= 0x80 for code in packet.reasons):
                log.error(
                    "broker refused the re-subscription %r (%s): dropped it",
                    waiter.topic_filter,
                    ", ".join(reason_text(code) for code in packet.reasons),
                )
                self._forget(waiter.topic_filter)
            waiter.event.set()
        elif isinstance(packet, Disconnect):
            text = reason_text(packet.reason)
            detail = string_property(packet.properties, Prop.REASON_STRING)
            why = f"DISCONNECT {text}" + (f": {detail}" if detail else "")
            raise BrokerClosed(why, packet.reason)
        elif isinstance(packet, ConnAck):
            raise ProtocolViolation(Reason.PROTOCOL_ERROR, "an unexpected CONNACK")

    def _on_puback(self, channel: Channel, packet_id: int) -> None:
        """A PUBACK of Remaining Length 2: a packet identifier alone, success (3.4.2.1 in
        MQTT 5; all of it in 3.1.1), the ack of each QoS 1 message: what :meth:`_on_ack`
        does for it, without decoding it into an :class:`Ack` first."""
        message = self._acknowledged(packet_id)
        if message is not None:
            message.finish()
            self._release_pending(channel)

    def _acknowledged(self, packet_id: int) -> _Outgoing | None:
        """The in-flight message ``packet_id`` acknowledged for good, out of the window."""
        with self._lock:
            self._suspects.discard(packet_id)
            return self._inflight.pop(packet_id, None)

    def _on_ack(self, channel: Channel, ack: Ack) -> None:
        if ack.kind == PacketType.PUBREL:  # the end of an inbound QoS 2 exchange
            self._qos2_in.discard(ack.packet_id)
            self._write(channel, [encode_ack(PacketType.PUBCOMP, ack.packet_id, self._version)])
            return
        if ack.kind == PacketType.PUBREC and ack.reason < 0x80:  # our QoS 2: release it
            with self._lock:
                message = self._inflight.get(ack.packet_id)
                if message is not None:
                    message.released = True
                    self._suspects.discard(ack.packet_id)
            self._write(channel, [encode_ack(PacketType.PUBREL, ack.packet_id, self._version)])
            return
        message = self._acknowledged(ack.packet_id)
        if message is None:
            return
        error = None
        # A PUBCOMP after PUBREC completes the message whatever its reason: the broker
        # took it at PUBREC (after a reconnect with a clean session it may no longer
        # know the identifier: 0x92, Packet Identifier not found).
        if ack.reason >= 0x80 and not message.released:
            reason = reason_text(ack.reason)
            log.warning("broker refused publish on %s: %s", message.topic, reason)
            error = PublishRefused(message.topic, reason)
        message.finish(error)
        self._release_pending(channel)

    # -- keep-alive ------------------------------------------------

    def _run_keepalive(self) -> None:
        tick = 1.0
        while not self._closing.wait(tick):
            keepalive = self._keepalive_s  # the broker's Server Keep Alive may change it
            tick = min(1.0, keepalive / 4) if keepalive > 0 else 1.0
            channel = self._channel
            if keepalive <= 0 or channel is None or not self._connected.is_set():
                continue
            now = time.monotonic()
            if now - self._last_read > 1.5 * keepalive:
                log.warning(
                    "broker %s silent for %.0f s; reconnecting",
                    self.config.url,
                    now - self._last_read,
                )
                channel.shutdown()
            elif now - self._last_write >= keepalive / 2 and channel.send_lock.acquire(timeout=1):
                try:
                    channel.send([PINGREQ])
                    self._last_write = now
                except (OSError, ssl.SSLError):
                    channel.shutdown()
                finally:
                    channel.send_lock.release()


def publish_payload_start(version: Version, first: int, body: memoryview) -> int | None:
    """Where the payload of a PUBLISH starts in its body (after the topic, the packet id
    at QoS 1 and 2, and MQTT 5's properties), or None when ``body``, a prefix of it, is
    too short to tell or the packet is not a PUBLISH."""
    if first >> 4 != PacketType.PUBLISH or len(body) < 2:
        return None
    position = 2 + ((body[0] << 8) | body[1])
    if first & 0x06:  # QoS 1 or 2: a packet identifier
        position += 2
    if version is Version.V5:
        size = 0
        for shift in (0, 7, 14, 21):
            if position >= len(body):
                return None
            byte = body[position]
            position += 1
            size |= (byte & 0x7F) << shift
            if not byte & 0x80:
                break
        else:
            return None  # malformed: the general path says so
        position += size
    return position if position <= len(body) else None


@functools.lru_cache(maxsize=4096)
def _checked_name(topic: str) -> str:
    """:func:`check_topic_name`, remembered for names that passed (the hot path)."""
    return check_topic_name(topic)
