"""The transport seam: what the agent, coordinator and client need from a broker.

Implementations: :class:`splitmq.transport.mqtt.MqttTransport`, splitmq's own MQTT
client (the default), :class:`splitmq.transport.paho_transport.PahoTransport` over
paho-mqtt (the reference; the ``paho`` extra), and
:class:`splitmq.transport.memory.MemoryTransport` for fast component tests. All hand
inbound messages to handlers on worker threads through a bounded :class:`Inbox`, never
on a network thread.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from splitmq.transport.payload import Payload
from splitmq.wire.topics import matches

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """A message as it arrived: topic, payload, and when (``time.monotonic()``)."""

    topic: str
    payload: bytes | bytearray
    """The bytes as they arrived (a large one may be a bytearray: it is not copied)."""
    qos: int = 0
    retain: bool = False
    received_s: float = field(default_factory=time.monotonic)


Handler = Callable[[InboundMessage], None]
FastPath = Callable[[InboundMessage], bool]
"""Runs on the network thread before the inbox; must only enqueue, never block. It
returns True when it took the message, False to leave it to the handler's worker."""
ConnectionListener = Callable[[bool], None]
"""Called with True after every (re)connection, False on a loss.

True comes once the re-subscriptions were sent (the paho engine: acknowledged): what
the listener then publishes on the same connection reaches the broker after them.
"""


@dataclass(frozen=True, slots=True)
class Will:
    """The last will the broker publishes for us if we vanish without a clean close."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


@dataclass(slots=True)
class TransportStats:
    """Counters of traffic through one transport (payload bytes, not packet bytes)."""

    msgs_in: int = 0
    msgs_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    dropped_in: int = 0
    reconnects: int = 0


class Receipt(Protocol):
    """What ``publish`` returns: wait for it to know the broker accepted the message."""

    def wait(self, timeout_s: float | None = None) -> None:
        """Block until the broker acknowledged (QoS 1) or the message left (QoS 0).

        Raises:
            TransportError: the broker refused it, or ``timeout_s`` passed.
        """


class Transport(Protocol):
    """Publish and subscribe, with handlers run off the network thread."""

    @property
    def client_id(self) -> str: ...

    @property
    def connected(self) -> bool: ...

    @property
    def stats(self) -> TransportStats: ...

    @property
    def max_payload_bytes(self) -> int:
        """The largest payload that fits the broker's packet limit on the longest topic."""

    @property
    def fast_paths_may_block(self) -> bool:
        """Whether a fast path may do short work (a client handling an answer) on the
        network thread instead of only enqueueing.

        True only where that thread does nothing but read this connection: a short stop
        there delays this connection's reads, nothing else (publishing goes on from
        other threads). Where the thread also writes for everyone (paho) or is the
        publisher's own (in memory), fast paths must only enqueue. Long work (a shard)
        never runs there: the agent's bounded stage queues must keep refusing floods.
        """

    def start(self, timeout_s: float = 10.0) -> None:
        """Connect and start the worker threads; block until connected."""

    def close(self) -> None:
        """Disconnect cleanly (the will is not published) and stop every thread."""

    def publish(
        self,
        topic: str,
        payload: Payload,
        *,
        qos: int = 1,
        retain: bool = False,
        expiry_s: float | None = None,
    ) -> Receipt:
        """Send ``payload``; raise ``PayloadTooLarge`` before sending what cannot fit.

        The transport may keep ``payload`` (and the buffers of a list) until the broker
        has acknowledged it, to send it again after a reconnect: do not change them.
        """

    def subscribe(
        self,
        topic_filter: str,
        handler: Handler,
        *,
        qos: int = 1,
        timeout_s: float = 10.0,
        fast_path: FastPath | None = None,
    ) -> None:
        """Deliver messages matching ``topic_filter`` to ``handler``; kept across reconnects.

        ``fast_path``, when given, sees each message first, on the network thread: a
        component with queues of its own (the agent's stage workers) saves a thread
        hand-off by enqueueing there; what it declines goes to ``handler`` as usual.
        """

    def unsubscribe(self, topic_filter: str) -> None: ...

    def pace_acks(self, stage_s: float) -> None:
        """This client writes about once per ``stage_s`` (an agent's stage-time, a
        requester's period between the results of its stream; 0: unknown): where
        acknowledgements can wait to go out or be read with the next packet, let them
        wait that long (``TransportConfig.ack_hold_s``); elsewhere nothing changes."""

    def add_connection_listener(self, listener: ConnectionListener) -> None: ...


OverflowHandler = Callable[[InboundMessage], None]
FAST_TOPICS_REMEMBERED = 1024
"""Topics whose fast path :class:`Inbox` remembers (all are forgotten when one more comes)."""


class Inbox:
    """A bounded queue of inbound messages and the worker threads that dispatch them.

    ``put`` never blocks: it is called on the network thread. When the queue is full
    the message is dropped, counted, and ``on_overflow`` (if set) is called with it so
    the owner can tell the sender (it must be quick: it runs on the network thread).
    """

    def __init__(
        self,
        name: str,
        stats: TransportStats,
        *,
        size: int,
        workers: int = 1,
        on_overflow: OverflowHandler | None = None,
    ):
        self._queue: queue.Queue[InboundMessage | None] = queue.Queue(maxsize=size)
        self._routes: list[tuple[str, Handler]] = []
        self._fast_paths: list[tuple[str, FastPath]] = []
        self._fast_by_topic: dict[str, FastPath | None] = {}
        """Each topic's fast path (None: none), found once per topic (a stream's messages
        repeat their topic); replaced whole when the routes change."""
        self._lock = threading.Lock()
        self._stats = stats
        self._on_overflow = on_overflow
        self._threads = [
            threading.Thread(target=self._run, name=f"{name}-inbox-{i}", daemon=True)
            for i in range(workers)
        ]
        self._started = False

    def start(self) -> None:
        if not self._started:
            self._started = True
            for thread in self._threads:
                thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        if not self._started:
            return
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout_s)
        self._started = False

    def route(self, topic_filter: str, handler: Handler, fast_path: FastPath | None = None) -> None:
        with self._lock:
            self._routes = [r for r in self._routes if r[0] != topic_filter]
            self._routes.append((topic_filter, handler))
            self._fast_paths = [r for r in self._fast_paths if r[0] != topic_filter]
            if fast_path is not None:
                self._fast_paths.append((topic_filter, fast_path))
            self._fast_by_topic = {}

    def unroute(self, topic_filter: str) -> None:
        with self._lock:
            self._routes = [r for r in self._routes if r[0] != topic_filter]
            self._fast_paths = [r for r in self._fast_paths if r[0] != topic_filter]
            self._fast_by_topic = {}

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    def put(self, message: InboundMessage) -> None:
        fast_path = self._fast_path_for(message.topic)
        if fast_path is not None:
            try:
                if fast_path(message):
                    return
            except Exception:
                log.exception("fast path failed on %s", message.topic)
        try:
            self._queue.put_nowait(message)
        except queue.Full:
            self._stats.dropped_in += 1
            log.warning("inbox full, dropped a message on %s", message.topic)
            if self._on_overflow is not None:
                try:
                    self._on_overflow(message)
                except Exception:
                    log.exception("overflow handler failed for %s", message.topic)

    def _fast_path_for(self, topic: str) -> FastPath | None:
        """The fast path of the first route whose filter ``topic`` matches, if it has one."""
        known = self._fast_by_topic  # replaced, never mutated but for one store: unlocked
        try:
            return known[topic]
        except KeyError:
            pass
        found = next((path for f, path in self._fast_paths if matches(f, topic)), None)
        if len(known) >= FAST_TOPICS_REMEMBERED:
            known.clear()
        known[topic] = found
        return found

    def _run(self) -> None:
        while True:
            message = self._queue.get()
            if message is None:
                return
            routes = self._routes  # replaced, never mutated: safe to read unlocked
            for topic_filter, handler in routes:
                if matches(topic_filter, message.topic):
                    try:
                        handler(message)
                    except Exception:
                        log.exception("handler for %s failed on %s", topic_filter, message.topic)
