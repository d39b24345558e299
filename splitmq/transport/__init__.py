"""Transport: publish/subscribe over MQTT with splitmq's own client (``MqttTransport``),
or in memory for tests. The paho-mqtt engine (``splitmq.transport.paho_transport``,
the reference) needs the ``paho`` extra and is imported only where it is named.

::

    from splitmq.transport import MqttTransport, parse_broker_url
    with MqttTransport(parse_broker_url("mqtt://127.0.0.1:1883")) as transport:
        transport.subscribe("splitmq/v1/#", print)
        transport.publish("splitmq/v1/hello", b"...").wait()
"""

from splitmq.transport.base import (
    ConnectionListener,
    Handler,
    InboundMessage,
    Inbox,
    Receipt,
    Transport,
    TransportStats,
    Will,
)
from splitmq.transport.config import MqttVersion, TransportConfig, parse_broker_url
from splitmq.transport.memory import MemoryBroker, MemoryTransport
from splitmq.transport.mqtt import ConnectionRefused, MqttTransport, PublishRefused
from splitmq.transport.payload import Payload

__all__ = [
    "ConnectionListener",
    "ConnectionRefused",
    "Handler",
    "InboundMessage",
    "Inbox",
    "MemoryBroker",
    "MemoryTransport",
    "MqttTransport",
    "MqttVersion",
    "Payload",
    "PublishRefused",
    "Receipt",
    "Transport",
    "TransportConfig",
    "TransportStats",
    "Will",
    "parse_broker_url",
]
