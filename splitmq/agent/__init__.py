"""The edge agent: what runs on every device (Raspberry Pi, phone, laptop, the client's own).

::

    from splitmq.agent import Agent, AgentConfig, agent_will, load_profile
    from splitmq.transport import MqttTransport, parse_broker_url

    config = AgentConfig(agent_id="rpi-1", profile=load_profile("rpi4"))
    transport = MqttTransport(parse_broker_url("mqtt://10.0.0.2"), will=agent_will(config))
    with Agent(config, transport):
        ...

or from a shell: ``splitmq agent --broker mqtt://HOST:PORT --id rpi-1 --profile rpi4``.
Importing this package never imports TensorFlow (nor a TFLite runtime: that happens when
an agent is created). See ``docs/agent.md``.
"""

from splitmq.agent.agent import Agent, agent_will
from splitmq.agent.cache import DigestMismatch, ShardCache
from splitmq.agent.config import AgentConfig
from splitmq.agent.energy import BatteryMode, EnergyMeter
from splitmq.agent.fetch import FetchError
from splitmq.agent.profiles import DeviceProfile, builtin_profiles, load_profile
from splitmq.agent.requests import stage_key
from splitmq.agent.runtime import (
    LoadedShard,
    Runtime,
    RuntimeKind,
    RuntimeUnavailable,
    ShardLoadError,
    find_runtime,
)

__all__ = [
    "Agent",
    "AgentConfig",
    "BatteryMode",
    "DeviceProfile",
    "DigestMismatch",
    "EnergyMeter",
    "FetchError",
    "LoadedShard",
    "Runtime",
    "RuntimeKind",
    "RuntimeUnavailable",
    "ShardCache",
    "ShardLoadError",
    "agent_will",
    "builtin_profiles",
    "find_runtime",
    "load_profile",
    "stage_key",
]
