"""An MQTT 3.1.1 and 5.0 broker in pure Python, for machines without Mosquitto.

``splitmq demo`` starts it when no Mosquitto is installed; it needs nothing but the
standard library. In a background thread::

    from splitmq.embedded_broker import EmbeddedBroker
    with EmbeddedBroker(port=0) as broker:
        print(broker.url)                  # mqtt://127.0.0.1:PORT

or as a process, until SIGINT or SIGTERM::

    python -m splitmq.embedded_broker --port 1883

It supports QoS 0, 1 and 2, wildcards, retained messages, last wills, keep-alive,
shared subscriptions (``$share/GROUP/filter``), client id take-over, sessions that
outlive a connection (3.1.1 CleanSession=0, MQTT 5 Session Expiry) with their
subscriptions, queued QoS 1/2 messages and re-delivery of unacknowledged ones, and in
MQTT 5 message expiry, Will Delay, Server Keep Alive, user properties and the Maximum
Packet Size. Queues are bounded in messages and bytes. Sessions live in memory only
(a restart forgets them).

It has NO authentication, NO ACL and NO TLS: it listens on loopback and refuses any
other address unless ``allow_remote`` (``--allow-remote``) is given. Modules:

- ``splitmq.mqtt`` (shared with the client transport): constants and the codec.
- ``topics``: topic filters and the subscription tree (pure).
- ``session``: what outlives a connection.
- ``connection``: one client connection, an :class:`asyncio.Protocol`.
- ``broker``: the listening socket, sessions, retained messages and routing.
- ``embedded``: :class:`EmbeddedBroker`, the broker's event loop in a thread.
"""

from splitmq.embedded_broker.embedded import EmbeddedBroker
from splitmq.embedded_broker.model import DEFAULT_MAX_PACKET_BYTES, BrokerConfig, BrokerStats

__all__ = ["DEFAULT_MAX_PACKET_BYTES", "BrokerConfig", "BrokerStats", "EmbeddedBroker"]
