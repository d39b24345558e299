"""Every message splitmq sends, each defined once as a frozen dataclass.

A message's class names its ``KIND`` (the ``kind`` field on the wire) and its schema
``VERSION`` (the ``v`` field). Field names are the CBOR map keys. Fields with a default
are optional on the wire; fields a reader does not know are ignored, so an older agent
reads a newer coordinator's messages. Units are in the names (``_ms``, ``_bytes``,
``_j``, ``_pct``); times are Unix epoch milliseconds unless the name says otherwise.

The codec (:mod:`splitmq.wire.codec`) turns these into bytes and back; the topic table
(:mod:`splitmq.wire.topics`) says which message goes where.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar

from splitmq.wire.tensors import Tensor

REQUEST_ID_BYTES = 16

# A route lists, per stage, the agents that can run it: the chosen one first, then
# its fallbacks in the order to try them. In a stage graph (fan-out and fan-in) too:
# ``route[i]`` is stage ``i``'s, whatever stages feed it.
Route = tuple[tuple[str, ...], ...]

REQUESTER = -1
"""In a stage graph, the requester's end of an edge: the request's input tensors (a
:class:`StageEdge` source) or the model's outputs sent back to it (a target)."""


def _check_request_id(request_id: bytes) -> None:
    if not isinstance(request_id, bytes) or len(request_id) != REQUEST_ID_BYTES:
        raise ValueError(f"request_id must be {REQUEST_ID_BYTES} bytes")


class AgentState(StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"


class ErrorCode(StrEnum):
    """Why a request failed at a stage (the ``code`` of an :class:`ErrorMessage`)."""

    BAD_MESSAGE = "bad_message"
    UNKNOWN_DEPLOYMENT = "unknown_deployment"
    SHAPE_MISMATCH = "shape_mismatch"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    OVERLOADED = "overloaded"
    SHARD_NOT_LOADED = "shard_not_loaded"
    INTERNAL = "internal"
    BRANCH_MISSING = "branch_missing"
    """A join waited for this branch (``stage``) in vain: retry that branch alone."""
    JOIN_FULL = "join_full"
    """A join's memory for waiting branches is full: retry the request elsewhere."""


class EnergyLevel(StrEnum):
    PERFORMANCE = "performance"
    BALANCED = "balanced"
    SAVER = "saver"


class DeploymentState(StrEnum):
    ACTIVE = "active"
    RETIRED = "retired"


@dataclass(frozen=True)
class Message:
    """Base of every wire message."""

    KIND: ClassVar[str] = ""
    VERSION: ClassVar[int] = 1


# --- shared parts ---------------------------------------------------------------


@dataclass(frozen=True)
class Battery:
    """A device's battery: real (psutil) or simulated from its profile."""

    pct: float
    plugged: bool
    simulated: bool = False


@dataclass(frozen=True)
class Link:
    """A device's (possibly emulated) network link."""

    bandwidth_mbps: float
    latency_ms: float


@dataclass(frozen=True)
class TensorSpec:
    """A tensor as the outside world sees it: at a model's or a shard's boundary.

    One type for the converter (graph analysis, manifests), the coordinator's pool
    (its JSON index) and the wire (load commands, deployments).

    Attributes:
        name: its name in the original graph (shards keep it).
        shape: static shape; ``-1`` marks a dimension only known at run time.
        dtype: numpy dtype name (``float32``, ``int8``...).
        scale: quantization scale of a per-tensor quantized tensor, else ``None``.
        zero_point: quantization zero point of a per-tensor quantized tensor, else ``None``.
        size_bytes: bytes of one instance (element count times item size); 0 where
            the maker did not count them (a runtime's or a test's spec).
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    scale: float | None = None
    zero_point: int | None = None
    size_bytes: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "scale": self.scale,
            "zero_point": self.zero_point,
            "size_bytes": self.size_bytes,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TensorSpec:
        return cls(
            name=str(data["name"]),
            shape=tuple(int(d) for d in data["shape"]),
            dtype=str(data["dtype"]),
            scale=None if data.get("scale") is None else float(data["scale"]),
            zero_point=None if data.get("zero_point") is None else int(data["zero_point"]),
            size_bytes=int(data.get("size_bytes", 0)),
        )


@dataclass(frozen=True)
class StageEdge:
    """An edge of a stage graph: tensors one stage sends another.

    Attributes:
        stage: the stage at the other end; :data:`REQUESTER` for the requester.
        tensors: the tensors' names (as in the shards' inputs and outputs).
    """

    stage: int
    tensors: tuple[str, ...]


@dataclass(frozen=True)
class TraceEntry:
    """One stage's pass over a request, as the agent that ran it saw it."""

    stage: int
    agent_id: str
    received_ms: float
    started_ms: float
    finished_ms: float
    bytes_in: int = 0
    attempt: int = 0
    bytes_out: int = 0
    energy_j: float = 0.0
    """The stage's energy on this agent by its profile: compute plus radio (J)."""


@dataclass(frozen=True)
class StagePrediction:
    """What a plan predicts for one stage of its route, on the agent chosen for it (ms).

    The figures a trace measures (:class:`TraceEntry`), so the two can be set side by
    side: ``transfer_ms`` is the stage's input on its way (the client's send for stage
    0, else the previous stage's agent sending its output; 0 when that agent is this
    one), ``queueing_ms`` the wait behind the requests its agent had queued for the stage
    when the plan was made (telemetry's queue depth), ``compute_ms`` running the shard.
    """

    stage: int
    agent_id: str
    transfer_ms: float
    queueing_ms: float
    compute_ms: float


@dataclass(frozen=True)
class TaskCandidate:
    """A member and variant of a task that a :class:`Plan` weighed, with its figures.

    For a request naming a task the plan lists every deployed member and variant it
    considered, so a client sees the trade-off it chose along (accuracy against latency
    and energy), not only the member that served it. ``predicted_latency_ms`` and
    ``predicted_energy_j`` are those of the route the planner would take through it
    (None: no route now); ``excluded`` names the constraint it missed (``min_fidelity``,
    ``min_accuracy``, ``max_latency_ms``, ``energy_j``, ``max_latency_ms+energy_j``,
    ``unavailable``), None when it met every one.
    """

    model: str
    version: str
    variant: str
    accuracy: float | None = None
    """Its measured accuracy (None: never evaluated on labelled data)."""
    agreement: float | None = None
    """Its agreement with the task's reference member on unlabelled data."""
    predicted_latency_ms: float | None = None
    predicted_energy_j: float | None = None
    excluded: str | None = None


# --- presence and telemetry -------------------------------------------------------


@dataclass(frozen=True)
class AgentStatus(Message):
    """Retained on ``agents/{agent}/status``: the birth message, or the will (offline)."""

    KIND: ClassVar[str] = "status"

    agent_id: str
    state: AgentState
    ts_ms: int = 0
    version: str = ""
    runtime: str = ""
    runtime_version: str = ""
    cores: int = 0
    memory_bytes: int = 0
    profile: str = ""
    cached_shards: tuple[str, ...] = ()
    speed_gflops: float = 0.0
    """Calibrated compute speed at start, after the profile's slow-down (0: unknown)."""
    active_power_w: float = 0.0
    idle_power_w: float = 0.0
    radio_j_per_mb: float = 0.0
    compute_factor: float = 1.0
    link: Link | None = None
    tensor_dtypes: tuple[str, ...] | None = None
    """The tensor dtypes its runtime can pass across a shard's boundary (its inputs and
    outputs); ``None``: any (left off the wire, as older agents send it)."""
    site: str | None = None
    """Where the agent is (a home, a site, a campus; its site broker): free text; None
    when not said (left off the wire). Readers that predate it ignore it."""
    machine: str | None = None
    """The device's CPU architecture as it reports it (``x86_64``, ``aarch64``; a
    browser: ``wasm32``); None: not said (left off the wire, as every field below)."""
    cpu_model: str | None = None
    """The CPU or board model the device reports (a Pi: its /proc/cpuinfo ``Model``)."""
    kernels: str | None = None
    """The kernel set its shards run with (``xnnpack``, ``builtin``; LiteRT.js: ``wasm``):
    with ``runtime``, ``runtime_version`` and ``machine`` it says whether its outputs
    can be bit-identical to a reference run elsewhere (splitmq.client.equality)."""
    emulator: str | None = None
    """How the agent is emulated (``qemu-user cortex-a72``): its cores, memory and speed
    are then the host's or the emulator's, not a real device's. None: native."""


@dataclass(frozen=True)
class Telemetry(Message):
    """Retained on ``agents/{agent}/telemetry`` every period."""

    KIND: ClassVar[str] = "telemetry"

    agent_id: str
    ts_ms: int
    period_s: float
    cpu_pct: float
    mem_free_bytes: int
    battery: Battery
    profile: str = ""
    temperature_c: float | None = None
    queue_depth: dict[str, int] = field(default_factory=dict)
    compute_ms: dict[str, float] = field(default_factory=dict)
    msgs_in: int = 0
    msgs_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    broker_rtt_ms: float | None = None
    energy_j: float = 0.0
    link: Link | None = None
    duplicates: int = 0
    """Activations delivered again (QoS 1) and not computed twice, since start."""
    unroutable: int = 0
    """Failed requests whose callback topic was unknown: logged and counted, since start."""
    joins: dict[str, int] | None = None
    """Its join stages' counters since start (``duplicates``, ``late``, ``missing``,
    ``refused_full``: branches dropped as duplicates, after their join ran, reported
    missing, refused for want of memory); None until a join dropped or missed one."""
    hop_mbps: float | None = None
    """What a hop through the broker carries per second, as the agent measured it with
    a large probe of itself against a small one (Mbit/s; None until measured). The
    planner's bandwidth for an agent whose profile emulates no link."""


# --- commands (coordinator -> agent) and events (agent -> coordinator) -------------


@dataclass(frozen=True)
class LoadShard(Message):
    """Fetch (unless cached), verify and load a shard to host ``stage`` of a deployment."""

    KIND: ClassVar[str] = "cmd.load"

    command_id: str
    issuer: str
    deployment: str
    stage: int
    digest: str
    size_bytes: int
    inputs: tuple[TensorSpec, ...] = ()
    outputs: tuple[TensorSpec, ...] = ()
    threads: int | None = None
    shared: bool = False
    """Also serve the stage's shared ``any`` topic (one replica of the group takes each)."""
    sources: tuple[StageEdge, ...] | None = None
    """Where the stage's inputs come from, in a stage graph: a join waits for every
    source of a request before it runs. ``None``: a chain (all from the previous stage,
    or from the requester for stage 0)."""
    targets: tuple[StageEdge, ...] | None = None
    """Where the stage's outputs go, in a stage graph: each target is sent its tensors.
    ``None``: a chain (all to the next stage, or to the requester from the last)."""


@dataclass(frozen=True)
class UnloadShard(Message):
    """Stop hosting ``stage`` of ``deployment`` and free its shard."""

    KIND: ClassVar[str] = "cmd.unload"

    command_id: str
    issuer: str
    deployment: str
    stage: int


@dataclass(frozen=True)
class Ping(Message):
    KIND: ClassVar[str] = "cmd.ping"

    command_id: str
    issuer: str
    sent_ms: float
    padding: bytes | None = None
    """Bytes that make an agent's probe of itself as large as an activation: its round
    trip, less a small probe's, is what moving that many bytes through the broker
    costs (``Telemetry.hop_mbps``)."""


@dataclass(frozen=True)
class CommandReply(Message):
    """An agent's answer to a command: done, or failed with a reason."""

    KIND: ClassVar[str] = "event.reply"

    command_id: str
    agent_id: str
    ok: bool
    message: str = ""


@dataclass(frozen=True)
class ShardReady(Message):
    """A shard is loaded, benchmarked and its stage is being served."""

    KIND: ClassVar[str] = "event.shard_ready"

    command_id: str
    agent_id: str
    deployment: str
    stage: int
    digest: str
    runtime: str
    bench_ms: float


@dataclass(frozen=True)
class Pong(Message):
    KIND: ClassVar[str] = "event.pong"

    command_id: str
    agent_id: str
    sent_ms: float
    ts_ms: float


# --- model pool -----------------------------------------------------------------------


@dataclass(frozen=True)
class FetchShard(Message):
    """On ``pool/fetch``: send bytes ``[offset, offset + length)`` of shard ``digest``."""

    KIND: ClassVar[str] = "pool.fetch"

    agent_id: str
    digest: str
    offset: int
    length: int


@dataclass(frozen=True)
class ShardChunk(Message):
    """On ``agents/{agent}/pool``: bytes ``[offset, offset + len(data))`` of a shard."""

    KIND: ClassVar[str] = "pool.chunk"

    digest: str
    offset: int
    total_bytes: int
    data: bytes


@dataclass(frozen=True)
class FetchFailed(Message):
    """On ``agents/{agent}/pool``: the pool cannot serve the shard asked for."""

    KIND: ClassVar[str] = "pool.error"

    digest: str
    message: str


# --- requests -----------------------------------------------------------------------


@dataclass(frozen=True)
class Activation(Message):
    """Tensors on their way into ``stage``: the input of a request, or a stage's output."""

    KIND: ClassVar[str] = "activation"

    request_id: bytes
    attempt: int
    deployment: str
    stage: int
    route: Route
    callback: str
    deadline_ms: int
    tensors: tuple[Tensor, ...]
    trace: tuple[TraceEntry, ...] = ()
    client_id: str = ""
    source: int | None = None
    """In a stage graph, the stage that produced ``tensors`` (:data:`REQUESTER` for the
    request's input): one branch's share of what ``stage`` reads. ``None``: a chain."""
    branch: int | None = None
    """A branch retry: this activation re-runs only the path from the requester to stage
    ``branch`` (a fan-out sends it to that branch alone), whose join is still collecting
    ``attempt``. ``None``: the whole request."""
    retry: int | None = None
    """The branch retry's number (1, 2...): the stages on its path de-duplicate it apart
    from the first run of ``attempt``."""

    def __post_init__(self) -> None:
        _check_request_id(self.request_id)


@dataclass(frozen=True)
class Result(Message):
    """The last stage's output, on the requester's callback topic."""

    KIND: ClassVar[str] = "result"

    request_id: bytes
    attempt: int
    deployment: str
    tensors: tuple[Tensor, ...]
    trace: tuple[TraceEntry, ...] = ()
    agent_id: str = ""
    stage: int | None = None
    """In a stage graph whose model outputs come from several stages (the requester is
    the join), the stage these outputs are from. ``None``: the last stage of a chain."""

    def __post_init__(self) -> None:
        _check_request_id(self.request_id)


@dataclass(frozen=True)
class ErrorMessage(Message):
    """A request failed at ``stage`` on ``agent_id``, on the requester's callback topic."""

    KIND: ClassVar[str] = "error"

    request_id: bytes
    attempt: int
    stage: int
    agent_id: str
    code: ErrorCode
    message: str
    deployment: str = ""

    def __post_init__(self) -> None:
        _check_request_id(self.request_id)


# --- plans and deployments --------------------------------------------------------------


@dataclass(frozen=True)
class PlanRequest(Message):
    """A client asks for a route through a model within its budgets."""

    KIND: ClassVar[str] = "plan.request"

    request_id: str
    client_id: str
    model: str
    version: str | None = None
    max_latency_ms: float | None = None
    min_fidelity: float | None = None
    energy_j: float | None = None
    energy_level: EnergyLevel = EnergyLevel.BALANCED
    client_battery: Battery | None = None
    task: str | None = None
    """A task instead of a model (``model`` is then ``""``): the coordinator picks the
    member and variant that meet the budgets and ``min_accuracy``."""
    min_accuracy: float | None = None
    """For a task: the least measured accuracy the chosen member's variant must reach."""
    client_ms: float | None = None
    """The client's own work per request, as it measured it (ms): from its call to its
    input's send, and from its result's arrival to its answer. The planner adds it to
    every route's latency (budgets and prediction); None: not measured yet."""


@dataclass(frozen=True)
class Plan(Message):
    """The coordinator's answer: a route with fallbacks, valid for a deployment epoch."""

    KIND: ClassVar[str] = "plan"

    request_id: str
    deployment: str
    epoch: int
    model: str
    version: str
    variant: str
    route: Route
    predicted_latency_ms: float
    predicted_energy_j: float
    predicted_stages: tuple[StagePrediction, ...] | None = None
    """The latency's parts, per stage of the chosen route (None from older coordinators)."""
    predicted_final_hop_ms: float | None = None
    """The last part: the last stage's agent sending the result to the client."""
    task: str | None = None
    """The task asked for, when the request named one; ``model`` and ``variant`` are
    then the member and variant the coordinator chose."""
    accuracy: float | None = None
    """The chosen variant's measured accuracy (None: unknown, or not a task request)."""
    candidates: tuple[TaskCandidate, ...] | None = None
    """For a task: every deployed member and variant weighed, the chosen one among them."""
    predicted_client_ms: float | None = None
    """The client's own work (``PlanRequest.client_ms``), in ``predicted_latency_ms``
    beside the stages and the final hop; None when the request did not say it."""


PLAN_UNAVAILABLE = "unavailable"
"""The :class:`PlanRefused` constraint when a stage has no replica online right now:
passing, not the request's fault (the coordinator heals the deployment), so a client
may ask again within its deadline."""


@dataclass(frozen=True)
class PlanRefused(Message):
    """No plan meets the request: ``constraint`` names the one that failed
    (``model``, ``min_fidelity``, ``max_latency_ms``, ``energy_j``, ``battery``, or
    :data:`PLAN_UNAVAILABLE`)."""

    KIND: ClassVar[str] = "plan.refused"

    request_id: str
    model: str
    constraint: str
    message: str


@dataclass(frozen=True)
class StageSpec:
    """One stage of a deployment: operators ``[start_op, end_op)`` of the model.

    In a stage graph (fan-out, branches in parallel, fan-in) a stage runs a set of
    operators within ``[start_op, end_op)`` (``operators``), and ``sources`` and
    ``targets`` say which stages feed it and which it feeds. A chain leaves all three
    ``None`` and is written as before.
    """

    stage: int
    start_op: int
    end_op: int
    digest: str
    size_bytes: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    replicas: tuple[str, ...]
    sources: tuple[StageEdge, ...] | None = None
    """Where its inputs come from (see :class:`StageEdge`); ``None``: the previous
    stage, or the requester for stage 0."""
    targets: tuple[StageEdge, ...] | None = None
    """Where its outputs go; ``None``: the next stage, or the requester from the last."""
    operators: tuple[int, ...] | None = None
    """The model's operators it runs, when not the whole ``[start_op, end_op)``."""


@dataclass(frozen=True)
class Deployment(Message):
    """Retained on ``deployments/{deployment}``: how a model is spread over the fleet."""

    KIND: ClassVar[str] = "deployment"

    deployment: str
    model: str
    version: str
    variant: str
    epoch: int
    stages: tuple[StageSpec, ...]
    state: DeploymentState = DeploymentState.ACTIVE
    created_ms: int = 0
    objective: str = ""
    target_replicas: int = 1
    """Replicas each stage should have; healing restores it when agents are lost."""
    sites: dict[str, str] = field(default_factory=dict)
    """The site of each replica that has one (``AgentStatus.site``): a hop to an agent
    of another site goes on ``sites/{site}/stage/...``, which the site brokers' bridges
    carry (docs/scaling.md); hops within a site stay on its broker."""


class PlanShape(StrEnum):
    """Which placements a deployment's optimizer considers."""

    CHAIN = "chain"
    """Plan 1: stages one after another."""
    PARALLEL = "parallel"
    """Plan 2: a parallel section's branches on agents of their own, then joined."""
    AUTO = "auto"
    """Whichever of the two the objective prefers."""


class Objective(StrEnum):
    """What a deployment's partition optimises."""

    LATENCY = "latency"
    THROUGHPUT = "throughput"
    ENERGY = "energy"


@dataclass(frozen=True)
class DeployRequest(Message):
    """An operator asks the coordinators to deploy (or retire) a model.

    ``stages`` 0 lets the optimizer choose the number of stages. A deployment that
    misses a gate (``max_latency_ms``, ``max_shard_bytes``) is refused with the figures.
    Deploying an earlier ``version`` is a rollback.
    """

    KIND: ClassVar[str] = "deploy.request"

    request_id: str
    client_id: str
    model: str
    version: str | None = None
    variant: str | None = None
    stages: int = 0
    replicas: int = 1
    objective: Objective = Objective.LATENCY
    pin_first: str | None = None
    pin_last: str | None = None
    max_latency_ms: float | None = None
    max_shard_bytes: int | None = None
    ready_timeout_s: float = 60.0
    retire: bool = False
    task: str | None = None
    """Deploy ``model`` as a member of this task: refused unless its manifest says so."""
    plans: PlanShape | None = None
    """The placements to consider; ``None``: a chain."""


@dataclass(frozen=True)
class DeployReply(Message):
    """The coordinator's answer to a :class:`DeployRequest`, when it is done or refused."""

    KIND: ClassVar[str] = "deploy.reply"

    request_id: str
    ok: bool
    message: str
    deployment: str = ""
    epoch: int = 0
    failed_agents: tuple[str, ...] = ()
    predicted_latency_ms: float | None = None


@dataclass(frozen=True)
class Lease(Message):
    """Retained on ``coordinators/lease``: which coordinator leads (deploys and heals).

    The holder publishes it every ``period_s`` while it leads; the others take the lease
    as lost after ``expiry_s`` of silence, or at once on a release (``released``: the
    holder's clean stop, or its will published by the broker when it vanishes).
    ``term`` grows by one at every change of leader; ``holder`` is the coordinator's
    connection id, unique per process. ``telemetry_period_s`` is the leader's advice to
    the agents: send telemetry no more often than that (0: no advice), so that the
    broker's telemetry load stays bounded as the fleet grows.
    """

    KIND: ClassVar[str] = "coordinator.lease"

    holder: str
    term: int
    period_s: float
    expiry_s: float
    released: bool = False
    telemetry_period_s: float = 0.0


MESSAGE_TYPES: tuple[type[Message], ...] = (
    AgentStatus,
    Telemetry,
    LoadShard,
    UnloadShard,
    Ping,
    CommandReply,
    ShardReady,
    Pong,
    FetchShard,
    ShardChunk,
    FetchFailed,
    Activation,
    Result,
    ErrorMessage,
    PlanRequest,
    Plan,
    PlanRefused,
    Deployment,
    DeployRequest,
    DeployReply,
    Lease,
)
