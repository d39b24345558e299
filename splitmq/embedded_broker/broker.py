"""The broker proper, on one asyncio event loop: the listening socket, the client id
registry, the subscription tree, retained messages and routing.

Routing a message: every plain subscription matching its topic gets it once per
client (at the highest QoS among that client's matching filters, capped by the
publish QoS); every matching shared group gets it once, at the member whose turn it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from splitmq.embedded_broker.connection import Connection
from splitmq.embedded_broker.model import BrokerConfig, BrokerStats, Message
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
        self._sessions: dict[str, Connection] = {}
        self._tree: SubscriptionTree[Connection, SubscriptionOptions] = SubscriptionTree()
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

    def attach(self, connection: Connection) -> None:
        """Register a CONNECTed client; an older connection with its id is taken over."""
        older = self._sessions.get(connection.client_id)
        if older is not None:
            log.info(
                "client %r connected again from %s: closing its older connection from %s",
                connection.client_id,
                connection.peer,
                older.peer,
            )
            older.end(Reason.SESSION_TAKEN_OVER, why="another connection took its client id over")
        self._sessions[connection.client_id] = connection
        self.stats.clients = len(self._sessions)

    def detach(self, connection: Connection) -> None:
        """Forget a closing connection's subscriptions (and its id, if still its own)."""
        for topic_filter in list(connection.subscriptions):
            self.unsubscribe(connection, topic_filter)
        if self._sessions.get(connection.client_id) is connection:
            del self._sessions[connection.client_id]
            self.stats.clients = len(self._sessions)

    # -- subscriptions ------------------------------------------------------------------

    def subscribe(
        self, connection: Connection, topic_filter: str, options: SubscriptionOptions
    ) -> bool:
        """Add (or replace) a subscription; True if it replaced one.

        Raises:
            InvalidFilter: a malformed filter, or No Local on a shared subscription.
        """
        group, _ = split_shared(topic_filter)
        if group is not None and options.no_local:
            raise InvalidFilter(
                topic_filter, "topic filter", "No Local on a shared subscription (MQTT-3.8.3-4)"
            )
        existed = self._tree.add(topic_filter, connection, options)
        connection.subscriptions[topic_filter] = options
        return existed

    def unsubscribe(self, connection: Connection, topic_filter: str) -> bool:
        """Remove a subscription; False if there was none."""
        if connection.subscriptions.pop(topic_filter, None) is None:
            return False
        return self._tree.remove(topic_filter, connection)

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
        plain: dict[Connection, SubscriptionOptions] = {}
        for node in self._tree.match(message.topic):
            for connection, options in node.subscribers.items():
                if options.no_local and connection is sender:
                    continue
                best = plain.get(connection)
                if best is None or options.qos > best.qos:
                    plain[connection] = options
            for group in node.groups.values():
                member, options = group.pick(Connection.accepts)
                member.deliver(message, min(message.qos, options.qos), retain=False)
        for connection, options in plain.items():
            retain = message.retain and options.retain_as_published
            connection.deliver(message, min(message.qos, options.qos), retain=retain)
