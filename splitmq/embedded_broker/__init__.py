"""An MQTT 3.1.1 and 5.0 broker in pure Python, for machines without Mosquitto.

``splitmq demo`` starts it when no Mosquitto is installed; it needs nothing but the
standard library. In a background thread::

    from splitmq.embedded_broker import EmbeddedBroker
    with EmbeddedBroker(port=0) as broker:
        print(broker.url)                  # mqtt://127.0.0.1:PORT

or as a process, until SIGINT or SIGTERM::

    python -m splitmq.embedded_broker --port 1883

It supports QoS 0, 1 and 2, wildcards, retained messages, last wills, keep-alive,
shared subscriptions (``$share/GROUP/filter``), client id take-over, and in MQTT 5
message expiry, user properties and the Maximum Packet Size. Sessions are always
clean (nothing persists across a disconnect), there is no authentication and no TLS:
listen on loopback. Modules:

- ``splitmq.mqtt`` (shared with the client transport): constants and the codec.
- ``topics``: topic filters and the subscription tree (pure).
- ``connection``: one client connection, an :class:`asyncio.Protocol`.
- ``broker``: the listening socket, sessions, retained messages and routing.
- ``embedded``: :class:`EmbeddedBroker`, the broker's event loop in a thread.
"""

from splitmq.embedded_broker.embedded import EmbeddedBroker
from splitmq.embedded_broker.model import DEFAULT_MAX_PACKET_BYTES, BrokerConfig, BrokerStats

__all__ = ["DEFAULT_MAX_PACKET_BYTES", "BrokerConfig", "BrokerStats", "EmbeddedBroker"]
