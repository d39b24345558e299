"""The broker proper, on one asyncio event loop: the listening socket, the sessions
(by client id), the subscription tree, retained messages and routing.

Routing a message: every plain subscription matching its topic gets it once per
session (at the highest QoS among that session's matching filters, capped by the
publish QoS); every matching shared group gets it once, at the member whose turn it
is. A session whose client is away keeps its QoS 1 and 2 messages in its queue.

Sessions end with their connection unless the client asked to keep them (3.1.1:
CleanSession=0; 5.0: a Session Expiry Interval), then when the interval runs out
after the disconnect. A will waits for its Will Delay Interval (MQTT 5), or less if
the session ends first, and is not sent if the client comes back in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from splitmq.embedded_broker.client_connection import Connection
from splitmq.embedded_broker.model import BrokerConfig, BrokerStats, Message
from splitmq.embedded_broker.session import NEVER_EXPIRES, Session
from splitmq.embedded_broker.topics import (
    InvalidFilter,
    SubscriptionTree,
    matches,
    split_shared,
)
from splitmq.errors import ConfigError
from splitmq.mqtt.codes import Reason
from splitmq.mqtt.packets import SubscriptionOptions

log = logging.getLogger(__name__)


class Broker:
    """An MQTT broker on the running event loop; :meth:`start` it, then :meth:`stop` it."""

    def __init__(self, config: BrokerConfig):
        self.config = config
        self.stats = BrokerStats()
        self.port = config.port
        self._server: asyncio.Server | None = None
        self._connections: set[Connection] = set()
        self._idle = asyncio.Event()
        self._sessions: dict[str, Session] = {}
        self._tree: SubscriptionTree[Session, SubscriptionOptions] = SubscriptionTree()
        self._retained: dict[str, Message] = {}

    @property
    def url(self) -> str:
        return f"mqtt://{self.config.host}:{self.port}"

    async def start(self) -> None:
        """Listen; ``port`` is the real one afterwards.

        Raises:
            ConfigError: the address cannot be listened on (port in use, bad host).
        """
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(
                lambda: Connection(self), self.config.host, self.config.port, reuse_address=True
            )
        except OSError as error:
            raise ConfigError(
                f"the embedded broker cannot listen on {self.config.host}:{self.config.port}: "
                f"{error.strerror or error}; is another broker running there? pick another port"
            ) from None
        self.port = int(self._server.sockets[0].getsockname()[1])
        log.info("embedded MQTT broker listening on %s", self.url)

    async def stop(self, timeout_s: float = 2.0) -> None:
        """Stop listening, tell every client (MQTT 5: DISCONNECT 0x8B) and close."""
        if self._server is not None:
            self._server.close()
        for connection in list(self._connections):
            connection.end(
                Reason.SERVER_SHUTTING_DOWN, why="the broker is stopping", publish_will=False
            )
        if self._connections:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), timeout_s)
        for connection in list(self._connections):
            connection.abort()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        log.info("embedded MQTT broker on port %d stopped", self.port)

    # -- connections and sessions (called by Connection) --------------------------------

    def opened(self, connection: Connection) -> None:
        self._connections.add(connection)
        self._idle.clear()
        self.stats.connections_total += 1

    def closed(self, connection: Connection) -> None:
        self._connections.discard(connection)
        if not self._connections:
            self._idle.set()

    def attach(
        self, connection: Connection, *, clean_start: bool, expiry_s: int
    ) -> tuple[Session, bool]:
        """Open or resume the session of a CONNECTed client; ``(session, present)``.

        An older connection with the same client id is closed (taken over); a clean
        start ends the old session, otherwise it is resumed (its delayed will dropped).
        """
        client_id = connection.client_id
        session = self._sessions.get(client_id)
        if session is not None and session.connection is not None:
            older = session.connection
            log.info(
                "client %r connected again from %s: closing its older connection from %s",
                client_id,
                connection.peer,
                older.peer,
            )
            older.end(Reason.SESSION_TAKEN_OVER, why="another connection took its client id over")
            session = self._sessions.get(client_id)
        if session is not None and clean_start:
            self._end_session(session)
            session = None
        present = session is not None
        if session is None:
            session = Session(client_id)
            self._sessions[client_id] = session
        else:  # back in time: no will (MQTT-3.1.3-9), no expiry
            session.cancel_timers()
            session.will = None
        session.connection = connection
        session.expiry_s = expiry_s
        self._count()
        return session, present

    def detach(self, connection: Connection, will: Message | None, will_delay_s: int) -> None:
        """A connection closed: end its session, or keep it for its expiry interval;
        publish its will now, or after its delay."""
        session = connection.session
        if session is None or session.connection is not connection:
            if will is not None:  # its session was taken over: the will goes now
                self._publish_will(will, connection.client_id)
            return
        session.connection = None
        if session.expiry_s == 0:
            self._end_session(session)
            if will is not None:
                self._publish_will(will, session.client_id)
            self._count()
            return
        loop = asyncio.get_running_loop()
        if will is not None:
            if will_delay_s == 0:
                self._publish_will(will, session.client_id)
            else:
                session.will = will
                delay = min(will_delay_s, session.expiry_s)
                session.will_timer = loop.call_later(delay, self._will_due, session)
        if session.expiry_s != NEVER_EXPIRES:
            session.expiry_timer = loop.call_later(session.expiry_s, self._expire, session)
        self._count()

    def _will_due(self, session: Session) -> None:
        will, session.will = session.will, None
        session.will_timer = None
        if will is not None and session.connection is None:
            self._publish_will(will, session.client_id)

    def _expire(self, session: Session) -> None:
        if session.connection is not None or self._sessions.get(session.client_id) is not session:
            return
        log.info("session of %r expired", session.client_id)
        will = session.will
        self._end_session(session)  # the session ends: a delayed will goes now
        if will is not None:
            self._publish_will(will, session.client_id)
        self._count()

    def _publish_will(self, will: Message, client_id: str) -> None:
        log.info("publishing the will of %r on %s", client_id, will.topic)
        self.publish(will, sender=None)

    def _end_session(self, session: Session) -> None:
        session.cancel_timers()
        session.will = None
        for topic_filter in list(session.subscriptions):
            self.unsubscribe(session, topic_filter)
        session.queue.clear()
        session.queued_bytes = 0
        session.inflight.clear()
        if self._sessions.get(session.client_id) is session:
            del self._sessions[session.client_id]

    def _count(self) -> None:
        self.stats.sessions = len(self._sessions)
        self.stats.clients = sum(1 for s in self._sessions.values() if s.connection is not None)

    # -- subscriptions ------------------------------------------------------------------

    def subscribe(self, session: Session, topic_filter: str, options: SubscriptionOptions) -> bool:
        """Add (or replace) a subscription; True if it replaced one.

        Raises:
            InvalidFilter: a malformed filter, or No Local on a shared subscription.
        """
        group, _ = split_shared(topic_filter)
        if group is not None and options.no_local:
            raise InvalidFilter(
                topic_filter, "topic filter", "No Local on a shared subscription (MQTT-3.8.3-4)"
            )
        existed = self._tree.add(topic_filter, session, options)
        session.subscriptions[topic_filter] = options
        return existed

    def unsubscribe(self, session: Session, topic_filter: str) -> bool:
        """Remove a subscription; False if there was none."""
        if session.subscriptions.pop(topic_filter, None) is None:
            return False
        return self._tree.remove(topic_filter, session)

    def retained(self, topic_filter: str) -> list[Message]:
        """Retained messages for a new subscription (none for a shared one)."""
        group, plain = split_shared(topic_filter)
        if group is not None:
            return []
        expired = [topic for topic, message in self._retained.items() if message.expired()]
        for topic in expired:
            del self._retained[topic]
        return [message for topic, message in self._retained.items() if matches(plain, topic)]

    # -- routing ------------------------------------------------------------------------

    def publish(self, message: Message, sender: Connection | None) -> None:
        """Retain (or un-retain) ``message`` if flagged, and deliver it to subscribers."""
        self.stats.messages_in += 1
        if message.retain:
            if message.payload:
                self._retained[message.topic] = message
            else:
                self._retained.pop(message.topic, None)
        origin = sender.session if sender is not None else None
        plain: dict[Session, SubscriptionOptions] = {}
        for node in self._tree.match(message.topic):
            for session, options in node.subscribers.items():
                if options.no_local and session is origin:
                    continue
                best = plain.get(session)
                if best is None or options.qos > best.qos:
                    plain[session] = options
            for group in node.groups.values():
                member, options = group.pick(
                    lambda s: s.connection is not None and self.has_room(s, message)
                )
                self.deliver(member, message, min(message.qos, options.qos), retain=False)
        for session, options in plain.items():
            retain = message.retain and options.retain_as_published
            self.deliver(session, message, min(message.qos, options.qos), retain=retain)

    def has_room(self, session: Session, message: Message) -> bool:
        """Whether ``session``'s queue can take ``message`` (its count and bytes limits)."""
        config = self.config
        return (
            len(session.queue) < config.max_queued_messages
            and session.queued_bytes + len(message.payload) <= config.max_queued_bytes
        )

    def deliver(self, session: Session, message: Message, qos: int, *, retain: bool) -> None:
        """Hand ``message`` to the session's connection, or keep it for the client's
        return (QoS 1 and 2); drop it, counted, when the queue is full."""
        if session.connection is None and qos == 0:
            return  # QoS 0 is not kept for a client that is away
        if not self.has_room(session, message):
            config = self.config
            self.dropped(
                session,
                f"its queue is full ({config.max_queued_messages} messages or "
                f"{config.max_queued_bytes} bytes)",
            )
            return
        if session.connection is not None:
            session.connection.deliver(message, qos, retain=retain)
        else:
            session.enqueue(message, qos, retain)

    def dropped(self, session: Session, why: str) -> None:
        """Count a message ``session`` will not get, and log the first of each 1000."""
        session.dropped += 1
        self.stats.dropped += 1
        if session.dropped % 1000 == 1:
            log.warning(
                "dropped a message for %r (%d so far): %s", session.client_id, session.dropped, why
            )
