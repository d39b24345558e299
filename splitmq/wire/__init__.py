"""The wire contract: message types, the CBOR codec with RFC 8746 tensors, topics, limits.

This package knows nothing of MQTT, TFLite or TensorFlow::

    from splitmq.wire import Activation, encode, decode
    payload = encode(message)
    message = decode(payload, expect=Activation)
"""

from splitmq.errors import DecodeError, EncodeError
from splitmq.wire.codec import decode, encode, kinds
from splitmq.wire.limits import DEFAULT_LIMITS, Limits
from splitmq.wire.messages import (
    PLAN_UNAVAILABLE,
    REQUEST_ID_BYTES,
    Activation,
    AgentState,
    AgentStatus,
    Battery,
    CommandReply,
    Deployment,
    DeploymentState,
    DeployReply,
    DeployRequest,
    EnergyLevel,
    ErrorCode,
    ErrorMessage,
    FetchFailed,
    FetchShard,
    Link,
    LoadShard,
    Message,
    Objective,
    Ping,
    Plan,
    PlanRefused,
    PlanRequest,
    Pong,
    Result,
    Route,
    ShardChunk,
    ShardReady,
    StageSpec,
    Telemetry,
    TensorSpec,
    TraceEntry,
    UnloadShard,
)
from splitmq.wire.tensors import Tensor

__all__ = [
    "DEFAULT_LIMITS",
    "PLAN_UNAVAILABLE",
    "REQUEST_ID_BYTES",
    "Activation",
    "AgentState",
    "AgentStatus",
    "Battery",
    "CommandReply",
    "DecodeError",
    "DeployReply",
    "DeployRequest",
    "Deployment",
    "DeploymentState",
    "EncodeError",
    "EnergyLevel",
    "ErrorCode",
    "ErrorMessage",
    "FetchFailed",
    "FetchShard",
    "Limits",
    "Link",
    "LoadShard",
    "Message",
    "Objective",
    "Ping",
    "Plan",
    "PlanRefused",
    "PlanRequest",
    "Pong",
    "Result",
    "Route",
    "ShardChunk",
    "ShardReady",
    "StageSpec",
    "Telemetry",
    "Tensor",
    "TensorSpec",
    "TraceEntry",
    "UnloadShard",
    "decode",
    "encode",
    "kinds",
]
