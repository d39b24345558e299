"""The client's connections, made from whatever the caller gave as ``broker``: its own
transport, and the transport and :class:`~splitmq.agent.Agent` of the agent it may run.

The agent is imported only when one is asked for: a client alone never loads a TFLite
runtime.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from splitmq.errors import ConfigError
from splitmq.transport import (
    MemoryBroker,
    MqttTransport,
    Transport,
    TransportConfig,
    parse_broker_url,
)

if TYPE_CHECKING:
    from splitmq.agent import Agent, AgentConfig


def client_transport(
    broker: str | TransportConfig | Transport | MemoryBroker, mqtt_id: str
) -> Transport:
    """The client's own transport (a given :class:`Transport` is used as it is)."""
    if isinstance(broker, MemoryBroker):
        return broker.transport(mqtt_id)
    if isinstance(broker, str):
        return MqttTransport(parse_broker_url(broker, client_id=mqtt_id))
    if isinstance(broker, TransportConfig):
        return MqttTransport(replace(broker, client_id=broker.client_id or mqtt_id))
    return broker


def client_agent(
    config: AgentConfig,
    broker: str | TransportConfig | Transport | MemoryBroker,
    transport: Transport | None,
    namespace: str,
) -> Agent:
    """The client's agent on a transport of its own with the agent's will (``transport``
    when given: it must carry that will)."""
    from splitmq.agent import Agent, agent_will

    if config.namespace != namespace:
        raise ConfigError(
            f"the client's agent is in namespace {config.namespace!r}, not {namespace!r}"
        )
    mqtt_id, will = f"splitmq-agent-{config.agent_id}", agent_will(config)
    if transport is None and isinstance(broker, MemoryBroker):
        transport = broker.transport(mqtt_id, will=will)
    elif transport is None and isinstance(broker, str | TransportConfig):
        settings = parse_broker_url(broker) if isinstance(broker, str) else broker
        transport = MqttTransport(replace(settings, client_id=mqtt_id), will=will)
    elif transport is None:
        raise ConfigError("give agent_transport (made with agent_will) when broker is a Transport")
    return Agent(config, transport)
