"""The MQTT transport over paho-mqtt 2.x: the same guarantees as
:class:`splitmq.transport.mqtt.MqttTransport`, kept as the reference implementation
(construct it instead of ``MqttTransport``; it needs the ``paho`` extra,
``pip install 'splitmq[paho]'``). The default is our own client: on the four hops of a
split request paho takes 1.55x to 1.75x its p50 (``benchmarks/bench_transport.py``,
docs/performance.md).

- MQTT 5 by default, 3.1.1 on request: everything routing needs travels in the CBOR
  body; MQTT 5 adds message expiry (a request's deadline) when the broker has it.
- TCP_NODELAY on the socket before CONNECT is sent (without it a 1 kB message takes
  ~88 ms over three hops instead of well under 2 ms).
- A last will, registered before connecting.
- Reconnects with jittered exponential backoff ("full jitter"), re-subscribing every
  filter after each reconnect; connection listeners are told on a thread of their own.
- A size check before publishing: a packet above the broker's limit would make paho
  reconnect and resend forever, so it is refused with :class:`PayloadTooLarge`.
- Inbound messages go into a bounded :class:`Inbox`; paho's network thread only
  enqueues.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import random
import socket
import ssl
import threading
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from splitmq.errors import NotConnected, PayloadTooLarge, TransportError
from splitmq.transport.base import (
    FastPath,
    Handler,
    InboundMessage,
    OverflowHandler,
    Will,
)
from splitmq.transport.config import MqttVersion, TransportConfig
from splitmq.transport.mqtt import (
    MAX_EXPIRY_S,
    ConnectionRefused,
    MqttEngine,
    PublishRefused,
    backoff_delay,
    packet_size,
)
from splitmq.transport.payload import Payload, payload_bytes

log = logging.getLogger(__name__)


class _Receipt:
    def __init__(self, transport: PahoTransport, topic: str, info: paho.MQTTMessageInfo):
        self._transport = transport
        self._topic = topic
        self._info = info

    def wait(self, timeout_s: float | None = 10.0) -> None:
        try:
            self._info.wait_for_publish(timeout_s)
        except (RuntimeError, ValueError) as error:
            raise TransportError(f"publish on {self._topic!r} failed: {error}") from None
        if not self._info.is_published():
            raise TransportError(f"publish on {self._topic!r} not acknowledged in {timeout_s} s")
        reason = self._transport._take_refusal(self._info.mid)
        if reason is not None:
            raise PublishRefused(self._topic, reason)


class PahoTransport(MqttEngine):
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
        self._pending_subacks: dict[int, tuple[threading.Event, list[str]]] = {}
        self._refusals: dict[int, str] = {}
        self._resubscribed: set[int] = set()  # SUBACKs awaited before telling listeners
        self._told_up = False  # the listeners heard of the current connection
        self._attempt = 0
        self._ever_connected = False
        self._closing = False
        self._started = False
        self._client = self._make_client(will)

    # -- properties ---------------------------------------------------------------------

    @property
    def fast_paths_may_block(self) -> bool:
        return False  # paho's network thread also writes every publish

    # -- life cycle ---------------------------------------------------------------------

    def start(self, timeout_s: float = 10.0) -> None:
        if self._started:
            return
        self._started = True
        self._inbox.start()
        self._events.start()
        self._client.connect_async(
            self.config.host,
            self.config.port,
            keepalive=self.config.keepalive_s,
            clean_start=(
                True if self.config.version is MqttVersion.V5 else paho.MQTT_CLEAN_START_FIRST_ONLY
            ),
        )
        self._client.loop_start()
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
        if self._closing:
            return
        self._closing = True
        with contextlib.suppress(OSError, ValueError):
            self._client.disconnect()
        self._client.loop_stop()
        self._connected.clear()
        self._inbox.stop()
        self._events.stop()

    def __enter__(self) -> PahoTransport:
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
    ) -> _Receipt:
        if self._closing:
            raise NotConnected(f"transport {self._client_id} is closed")
        payload = payload_bytes(payload)  # paho takes one bytes object
        size = packet_size(topic, len(payload), qos, self.config.version)
        if size > self.max_packet_bytes:
            raise PayloadTooLarge(topic, size, self.max_packet_bytes)
        properties = None
        if expiry_s is not None and self.config.version is MqttVersion.V5:
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            # A four-byte field: a deadline centuries away must not fail the publish.
            properties.MessageExpiryInterval = min(MAX_EXPIRY_S, max(1, int(expiry_s + 0.999)))
        info = self._client.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        if info.rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
            raise TransportError(
                f"outgoing queue full ({self.config.outbox_size} messages) publishing on "
                f"{topic!r}: the broker is unreachable or too slow"
            )
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            raise TransportError(f"publish on {topic!r} failed: {paho.error_string(info.rc)}")
        self._stats.msgs_out += 1
        self._stats.bytes_out += len(payload)
        return _Receipt(self, topic, info)

    def subscribe(
        self,
        topic_filter: str,
        handler: Handler,
        *,
        qos: int = 1,
        timeout_s: float = 10.0,
        fast_path: FastPath | None = None,
    ) -> None:
        self._inbox.route(topic_filter, handler, fast_path)  # before a retained message comes
        with self._lock:
            self._subscriptions[topic_filter] = qos
        try:  # paho checks the filter first, connected or not
            result, mid = self._client.subscribe(topic_filter, qos=qos)
        except ValueError:  # refused at the call: not kept, so no reconnect sends it again
            self._inbox.unroute(topic_filter)
            with self._lock:
                self._subscriptions.pop(topic_filter, None)
            raise
        if not self.connected:
            return  # subscribed on (re)connect
        if result != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            return  # the connection dropped meanwhile: the reconnect re-subscribes
        self._await_suback(topic_filter, mid, timeout_s)

    def unsubscribe(self, topic_filter: str) -> None:
        self._inbox.unroute(topic_filter)
        with self._lock:
            self._subscriptions.pop(topic_filter, None)
        if self.connected:
            self._client.unsubscribe(topic_filter)

    # -- internals --------------------------------------------------------------------

    def _make_client(self, will: Will | None) -> paho.Client:
        v5 = self.config.version is MqttVersion.V5
        client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=self._client_id,
            clean_session=None if v5 else True,
            protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
            reconnect_on_failure=True,
        )
        client.max_queued_messages_set(self.config.outbox_size)
        client.max_inflight_messages_set(self.config.max_inflight)
        if self.config.username is not None:
            client.username_pw_set(self.config.username, self.config.password)
        if self.config.tls:
            client.tls_set(
                ca_certs=str(self.config.ca_certs) if self.config.ca_certs else None,
                certfile=str(self.config.certfile) if self.config.certfile else None,
                keyfile=str(self.config.keyfile) if self.config.keyfile else None,
                cert_reqs=ssl.CERT_REQUIRED,
            )
            if self.config.tls_insecure:
                client.tls_insecure_set(True)
        if will is not None:
            client.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)
        self._set_backoff(client)
        client.on_socket_open = self._on_socket_open
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        client.on_publish = self._on_publish
        return client

    def _set_backoff(self, client: paho.Client) -> None:
        # paho waits exactly reconnect_min_delay when min == max; we pick the jittered
        # delay for the next attempt ourselves each time.
        delay = backoff_delay(
            self._attempt, self.config.reconnect_min_s, self.config.reconnect_max_s, self._rng
        )
        client.reconnect_delay_set(min_delay=delay, max_delay=delay)  # type: ignore[arg-type]

    def _await_suback(self, topic_filter: str, mid: int, timeout_s: float) -> None:
        # Either this thread or paho's (if the SUBACK is already in) creates the entry.
        event, failures = self._pending_subacks.setdefault(mid, (threading.Event(), []))
        if not event.wait(timeout_s):
            raise TransportError(f"no SUBACK for {topic_filter!r} within {timeout_s} s")
        self._pending_subacks.pop(mid, None)
        if failures:
            self._inbox.unroute(topic_filter)
            with self._lock:
                self._subscriptions.pop(topic_filter, None)
            raise TransportError(f"broker refused the subscription {topic_filter!r}: {failures[0]}")

    def _take_refusal(self, mid: int) -> str | None:
        return self._refusals.pop(mid, None)

    # paho callbacks: all run on paho's network thread, none may block.

    def _on_socket_open(self, _client: paho.Client, _userdata: Any, sock: Any) -> None:
        if not self.config.tcp_nodelay:
            return
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (OSError, AttributeError) as error:
            log.warning("could not set TCP_NODELAY: %s", error)

    def _on_connect(
        self,
        client: paho.Client,
        _userdata: Any,
        _flags: Any,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            log.warning("broker %s refused connection: %s", self.config.url, reason)
            if not self._ever_connected:
                self._first_result.put(str(reason))
                client.disconnect()
            return
        if properties is not None and hasattr(properties, "MaximumPacketSize"):
            self._broker_max_packet = int(properties.MaximumPacketSize)
        if self._ever_connected:
            self._stats.reconnects += 1
        self._attempt = 0
        self._set_backoff(client)
        with self._lock:
            subscriptions = list(self._subscriptions.items())
        self._resubscribed.clear()
        for topic_filter, qos in subscriptions:
            try:
                result, mid = client.subscribe(topic_filter, qos=qos)
            except ValueError as error:  # never kept (subscribe checks first): never kill the loop
                log.error("not subscribing again to %r: %s", topic_filter, error)
                continue
            if result == MQTTErrorCode.MQTT_ERR_SUCCESS and mid is not None:
                self._resubscribed.add(mid)
        self._connected.set()
        if not self._resubscribed:  # else once the broker acknowledged them all
            self._tell_up()
        if not self._ever_connected:
            self._ever_connected = True
            self._first_result.put(None)

    def _on_connect_fail(self, client: paho.Client, _userdata: Any) -> None:
        self._attempt += 1
        self._set_backoff(client)

    def _on_disconnect(
        self,
        client: paho.Client,
        _userdata: Any,
        _flags: Any,
        reason: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        was_connected = self._connected.is_set()
        self._connected.clear()
        if self._closing:
            return
        self._attempt += 1
        self._set_backoff(client)
        self._resubscribed.clear()
        if was_connected:
            log.warning("lost the broker %s (%s); reconnecting", self.config.url, reason)
        if self._told_up:
            self._told_up = False
            self._events.put(False)

    def _tell_up(self) -> None:
        """Tell the listeners of the connection, once re-subscribed: paho writes the
        SUBSCRIBEs after ``on_connect`` returns, and a listener may rely on them (an agent
        announcing itself, a client expecting answers)."""
        self._told_up = True
        self._events.put(True)

    def _on_message(self, _client: paho.Client, _userdata: Any, message: paho.MQTTMessage) -> None:
        payload = bytes(message.payload)
        self._stats.msgs_in += 1
        self._stats.bytes_in += len(payload)
        self._inbox.put(
            InboundMessage(
                topic=message.topic, payload=payload, qos=message.qos, retain=message.retain
            )
        )

    def _on_subscribe(
        self,
        _client: paho.Client,
        _userdata: Any,
        mid: int,
        reasons: list[ReasonCode],
        _properties: Properties | None,
    ) -> None:
        refused = [str(r) for r in reasons if r.is_failure]
        if mid in self._resubscribed:  # a re-subscription after reconnect: nobody waits
            self._resubscribed.discard(mid)
            if refused:
                log.error("broker refused a re-subscription: %s", refused[0])
            if not self._resubscribed and self._connected.is_set() and not self._told_up:
                self._tell_up()
            return
        event, failures = self._pending_subacks.setdefault(mid, (threading.Event(), []))
        failures.extend(refused)
        event.set()

    def _on_publish(
        self,
        _client: paho.Client,
        _userdata: Any,
        mid: int,
        reason: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            self._refusals[mid] = str(reason)
            if len(self._refusals) > 10000:  # nobody waits for these: keep it bounded
                self._refusals.pop(next(iter(self._refusals)))
            log.warning("broker refused publish mid=%s: %s", mid, reason)
