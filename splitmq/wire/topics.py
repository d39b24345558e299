"""The topic table: every topic splitmq uses, as an object that knows its pattern,
payload types, QoS and retain flag, and publishes and decodes with them.

Topics live under a namespace prefix (default ``splitmq/v1``)::

    >>> STATUS.name(agent="rpi-1")
    'splitmq/v1/agents/rpi-1/status'
    >>> STAGE.filter(deployment="d1")
    'splitmq/v1/stage/d1/+/+'
    >>> STAGE.parse("splitmq/v1/stage/d1/0/rpi-1")
    {'deployment': 'd1', 'stage': '0', 'agent': 'rpi-1'}

``DEPLOYMENTS.publish(transport, deployment, namespace, deployment="d1")`` encodes the
message, checks it is one of the topic's payload types and publishes it with the
topic's QoS and retain flag; ``PLANS.decode(payload)`` accepts only the topic's types.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from splitmq.errors import EncodeError
from splitmq.topic_syntax import matches
from splitmq.wire.codec import decode, encode
from splitmq.wire.limits import DEFAULT_LIMITS, Limits
from splitmq.wire.messages import (
    Activation,
    AgentStatus,
    CommandReply,
    Deployment,
    DeployReply,
    DeployRequest,
    ErrorMessage,
    FetchFailed,
    FetchShard,
    Lease,
    LoadShard,
    Message,
    Ping,
    Plan,
    PlanRefused,
    PlanRequest,
    Pong,
    Result,
    ShardChunk,
    ShardReady,
    Telemetry,
    UnloadShard,
)

DEFAULT_NAMESPACE = "splitmq/v1"
ANY_AGENT = "any"
"""The agent segment of a stage topic that any replica may take (shared subscription)."""

M = TypeVar("M", bound=Message)
R_co = TypeVar("R_co", covariant=True)
Payload = bytes | bytearray | list[bytes | bytearray | memoryview]
"""What a transport publishes: bytes, or the parts ``encode_parts`` gives."""


class Publisher(Protocol[R_co]):
    """What a topic publishes through: a :class:`splitmq.transport.Transport` is one."""

    def publish(
        self,
        topic: str,
        payload: Payload,
        *,
        qos: int = ...,
        retain: bool = ...,
        expiry_s: float | None = ...,
    ) -> R_co: ...


_PARAM = re.compile(r"\{(\w+)\}")
_FORBIDDEN = re.compile(r"[/+#\x00]")


def check_segment(name: str, value: str) -> str:
    """``value`` if it can stand as one topic level, else ``ValueError`` naming ``name``."""
    if not value or _FORBIDDEN.search(value) or value.startswith("$"):
        raise ValueError(
            f"{name} {value!r} cannot be a topic level: it must be non-empty and hold "
            "no '/', '+', '#', NUL, nor start with '$'"
        )
    return value


@dataclass(frozen=True)
class Topic(Generic[M]):
    """One row of the topic table; ``M`` is the union of its message types.

    Attributes:
        pattern: the topic below the namespace, with ``{param}`` levels.
        payload: the message types that may be published on it (and are decoded from it).
        qos: the MQTT QoS to publish and subscribe with.
        retain: whether publications are retained by the broker.
        description: who publishes it, for whom.
    """

    pattern: str
    payload: tuple[type[M], ...]
    qos: int
    retain: bool
    description: str
    params: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", tuple(_PARAM.findall(self.pattern)))

    def name(self, namespace: str = DEFAULT_NAMESPACE, **params: str | int) -> str:
        """The concrete topic; every parameter must be given."""
        missing = set(self.params) - params.keys()
        if missing:
            raise ValueError(f"topic {self.pattern!r} needs {sorted(missing)}")
        return self._render(namespace, params, wildcard=None)

    def filter(self, namespace: str = DEFAULT_NAMESPACE, **params: str | int) -> str:
        """A subscription filter: parameters not given become ``+``."""
        return self._render(namespace, params, wildcard="+")

    def shared_filter(
        self, group: str, namespace: str = DEFAULT_NAMESPACE, **params: str | int
    ) -> str:
        """A shared subscription (``$share/group/...``): one subscriber of ``group`` gets each."""
        return f"$share/{check_segment('group', group)}/{self.filter(namespace, **params)}"

    def parse(self, topic: str, namespace: str = DEFAULT_NAMESPACE) -> dict[str, str] | None:
        """The parameters of a concrete ``topic`` of this row, or None if it is not one."""
        prefix = namespace + "/"
        if not topic.startswith(prefix):
            return None
        levels = topic[len(prefix) :].split("/")
        pattern_levels = self.pattern.split("/")
        if len(levels) != len(pattern_levels):
            return None
        params: dict[str, str] = {}
        for level, pattern_level in zip(levels, pattern_levels, strict=True):
            match = _PARAM.fullmatch(pattern_level)
            if match:
                params[match.group(1)] = level
            elif level != pattern_level:
                return None
        return params

    def publish(
        self,
        transport: Publisher[R_co],
        message: M,
        namespace: str = DEFAULT_NAMESPACE,
        *,
        expiry_s: float | None = None,
        **params: str | int,
    ) -> R_co:
        """Encode ``message`` and publish it on the topic ``params`` name, with this
        topic's QoS and retain flag; what ``transport.publish`` returns (a receipt).

        Raises:
            EncodeError: ``message`` is not one of this topic's payload types.
        """
        if not isinstance(message, self.payload):
            kinds = ", ".join(repr(c.KIND) for c in self.payload)
            raise EncodeError(
                f"a {message.KIND!r} message does not go on {self.pattern!r} (it carries {kinds})"
            )
        return self.publish_payload(
            transport, self.name(namespace, **params), encode(message), expiry_s=expiry_s
        )

    def publish_payload(
        self,
        transport: Publisher[R_co],
        topic: str,
        payload: Payload,
        *,
        expiry_s: float | None = None,
        qos: int | None = None,
    ) -> R_co:
        """Publish bytes already encoded (or the parts ``encode_parts`` gives) on ``topic``,
        a concrete topic of this row, with this topic's retain flag and QoS (or ``qos``:
        a request's hops go at the QoS its client chose, see ``ClientConfig.hop_qos``)."""
        return transport.publish(
            topic,
            payload,
            qos=self.qos if qos is None else qos,
            retain=self.retain,
            expiry_s=expiry_s,
        )

    def decode(
        self,
        payload: bytes | bytearray | memoryview,
        *,
        topic: str | None = None,
        limits: Limits = DEFAULT_LIMITS,
    ) -> M:
        """Decode a payload received on this topic: only its message types are accepted.

        Raises:
            DecodeError: the payload is not a message of one of this topic's types.
        """
        return decode(payload, expect=self.payload, limits=limits, topic=topic)

    def _render(self, namespace: str, params: dict[str, str | int], wildcard: str | None) -> str:
        unknown = params.keys() - set(self.params)
        if unknown:
            raise ValueError(f"topic {self.pattern!r} has no parameter {sorted(unknown)}")

        def level(match: re.Match[str]) -> str:
            key = match.group(1)
            if key not in params and wildcard is not None:
                return wildcard
            return check_segment(key, str(params[key]))

        return f"{namespace}/{_PARAM.sub(level, self.pattern)}"


STATUS: Topic[AgentStatus] = Topic(
    "agents/{agent}/status",
    (AgentStatus,),
    qos=1,
    retain=True,
    description="agent birth; the broker publishes its will (offline)",
)
TELEMETRY: Topic[Telemetry] = Topic(
    "agents/{agent}/telemetry",
    (Telemetry,),
    qos=0,
    retain=True,
    description="agent -> coordinator, every period",
)
COMMANDS: Topic[LoadShard | UnloadShard | Ping] = Topic(
    "agents/{agent}/cmd",
    (LoadShard, UnloadShard, Ping),
    qos=1,
    retain=False,
    description="coordinator -> agent: load, unload, ping",
)
EVENTS: Topic[CommandReply | ShardReady | Pong] = Topic(
    "agents/{agent}/events",
    (CommandReply, ShardReady, Pong),
    qos=1,
    retain=False,
    description="agent -> coordinator: replies, shard ready, errors",
)
POOL_FETCH: Topic[FetchShard] = Topic(
    "pool/fetch",
    (FetchShard,),
    qos=1,
    retain=False,
    description="agent -> model pool: send me a chunk of a shard",
)
POOL_CHUNKS: Topic[ShardChunk | FetchFailed] = Topic(
    "agents/{agent}/pool",
    (ShardChunk, FetchFailed),
    qos=1,
    retain=False,
    description="model pool -> agent: shard chunks",
)
STAGE: Topic[Activation] = Topic(
    "stage/{deployment}/{stage}/{agent}",
    (Activation,),
    qos=1,
    retain=False,
    description="previous hop -> the agent hosting that stage ('any': shared by replicas)",
)
PLAN_REQUESTS: Topic[PlanRequest] = Topic(
    "plans/request",
    (PlanRequest,),
    qos=1,
    retain=False,
    description="client -> coordinators (shared subscription $share/coordinators/...)",
)
PLANS: Topic[Plan | PlanRefused] = Topic(
    "clients/{client}/plan",
    (Plan, PlanRefused),
    qos=1,
    retain=False,
    description="coordinator -> client",
)
RESULTS: Topic[Result | ErrorMessage] = Topic(
    "clients/{client}/result",
    (Result, ErrorMessage),
    qos=1,
    retain=False,
    description="last stage (or a failing one) -> client: the callback topic",
)
DEPLOYMENTS: Topic[Deployment] = Topic(
    "deployments/{deployment}",
    (Deployment,),
    qos=1,
    retain=True,
    description="coordinator: how a model is spread over the fleet",
)

DEPLOY_REQUESTS: Topic[DeployRequest] = Topic(
    "control/deploy",
    (DeployRequest,),
    qos=1,
    retain=False,
    description="operator -> coordinators (shared subscription): deploy, roll back, retire",
)
DEPLOY_REPLIES: Topic[DeployReply] = Topic(
    "clients/{client}/control",
    (DeployReply,),
    qos=1,
    retain=False,
    description="coordinator -> operator: the deployment's outcome",
)

LEASE: Topic[Lease] = Topic(
    "coordinators/lease",
    (Lease,),
    qos=1,
    retain=True,
    description="the leading coordinator, every period; its will releases it",
)
LEADER_DEPLOY: Topic[DeployRequest] = Topic(
    "coordinators/{coordinator}/deploy",
    (DeployRequest,),
    qos=1,
    retain=False,
    description="a following coordinator -> the leader: a deploy request to carry out",
)

SITE_STAGE: Topic[Activation] = Topic(
    "sites/{site}/stage/{deployment}/{stage}/{agent}",
    (Activation,),
    qos=1,
    retain=False,
    description="a hop to an agent of another site: its site broker's bridge takes it in",
)
CENTRAL_STAGE: Topic[Activation] = Topic(
    "central/stage/{deployment}/{stage}/{agent}",
    (Activation,),
    qos=1,
    retain=False,
    description="a hop from a site to an agent on the central broker (the bridge takes it out)",
)


def hop_topic(
    namespace: str,
    *,
    deployment: str,
    stage: int,
    agent: str,
    sites: Mapping[str, str],
    here: str = "",
) -> str:
    """Where a hop to ``agent`` goes from a sender at site ``here`` ('': the central
    broker), by the deployment's ``sites``: its own stage topic within one site (it
    stays on that broker), else a topic the site brokers' bridges carry
    (``broker-config/bridge.conf``)."""
    there = "" if agent == ANY_AGENT else sites.get(agent, "")
    if there == here or agent == ANY_AGENT:
        return STAGE.name(namespace, deployment=deployment, stage=stage, agent=agent)
    if not there:
        return CENTRAL_STAGE.name(namespace, deployment=deployment, stage=stage, agent=agent)
    return SITE_STAGE.name(namespace, site=there, deployment=deployment, stage=stage, agent=agent)


TOPICS: tuple[Topic[Any], ...] = (
    STATUS,
    TELEMETRY,
    COMMANDS,
    EVENTS,
    POOL_FETCH,
    POOL_CHUNKS,
    STAGE,
    PLAN_REQUESTS,
    PLANS,
    RESULTS,
    DEPLOYMENTS,
    DEPLOY_REQUESTS,
    DEPLOY_REPLIES,
    LEASE,
    LEADER_DEPLOY,
    SITE_STAGE,
    CENTRAL_STAGE,
)

COORDINATORS_GROUP = "coordinators"

__all__ = [
    "ANY_AGENT",
    "CENTRAL_STAGE",
    "COMMANDS",
    "COORDINATORS_GROUP",
    "DEFAULT_NAMESPACE",
    "DEPLOYMENTS",
    "DEPLOY_REPLIES",
    "DEPLOY_REQUESTS",
    "EVENTS",
    "LEADER_DEPLOY",
    "LEASE",
    "PLANS",
    "PLAN_REQUESTS",
    "POOL_CHUNKS",
    "POOL_FETCH",
    "RESULTS",
    "SITE_STAGE",
    "STAGE",
    "STATUS",
    "TELEMETRY",
    "TOPICS",
    "Topic",
    "check_segment",
    "hop_topic",
    "matches",
]
