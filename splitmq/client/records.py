"""What the client keeps of every request it sent: the input of results storage and KPIs."""

from __future__ import annotations

from dataclasses import MISSING, dataclass, fields
from typing import Any

from splitmq.wire import StagePrediction, TaskCandidate, Telemetry, TraceEntry


@dataclass(frozen=True)
class AttemptRecord:
    """One attempt of a request: where it was sent and how it ended.

    Attributes:
        attempt: 0 for the first send, then 1, 2...
        route: per stage, the agent the attempt was sent to first.
        sent_ms: when the client published it (epoch ms).
        outcome: ``result``, an error code (``overloaded``...), or ``timeout``.
        message: the error's human message, or why the attempt was given up.
    """

    attempt: int
    route: tuple[str, ...]
    sent_ms: float
    outcome: str
    message: str = ""


@dataclass(frozen=True)
class RequestRecord:
    """A finished request: a result, or a failure with every attempt's reason.

    Attributes:
        request_id: hex of the 16-byte request id.
        model, version, variant, deployment, epoch: what served it (from the plan).
        sent_ms: when the first attempt was published (epoch ms).
        finished_ms: when the result (or the final failure) was known.
        ok: a result arrived.
        attempts: every attempt in order.
        error_code, error_message: why it failed, when it did.
        bytes_sent, bytes_received: payload bytes the client published and received.
        predicted_latency_ms, predicted_energy_j: the plan's prediction.
        predicted_stages, predicted_final_hop_ms: the parts of the predicted latency, per
            stage of the plan's route (transfer, queueing, compute), then the last hop:
            what the trace measures, to set side by side (empty, None: not given).
        trace: the trace of the attempt that answered (one entry per stage).
        top: the best classes of the first output, ``(class, score)``, best first.
        run: a label grouping requests (``demo``, a benchmark name...).
        task: the task the request named (then ``model`` and ``variant`` are the member
            and variant the coordinator chose), else ``""``.
        accuracy: the served variant's measured accuracy, from the plan (None: unknown).
        candidates: for a task, every deployed member and variant the plan weighed, with
            its accuracy and predicted latency and energy (the trade-off it chose along).
    """

    request_id: str
    model: str
    sent_ms: float
    finished_ms: float
    ok: bool
    attempts: tuple[AttemptRecord, ...] = ()
    version: str = ""
    variant: str = ""
    deployment: str = ""
    epoch: int = 0
    error_code: str | None = None
    error_message: str | None = None
    bytes_sent: int = 0
    bytes_received: int = 0
    predicted_latency_ms: float | None = None
    predicted_energy_j: float | None = None
    predicted_stages: tuple[StagePrediction, ...] = ()
    predicted_final_hop_ms: float | None = None
    trace: tuple[TraceEntry, ...] = ()
    top: tuple[tuple[int, float], ...] = ()
    run: str = ""
    task: str = ""
    accuracy: float | None = None
    candidates: tuple[TaskCandidate, ...] = ()

    @property
    def latency_ms(self) -> float:
        return self.finished_ms - self.sent_ms

    @property
    def retries(self) -> int:
        return max(0, len(self.attempts) - 1)


@dataclass(frozen=True)
class TelemetrySample:
    """What results storage keeps of one agent's telemetry message (battery over time).

    Attributes:
        agent_id: the agent that sent it.
        ts_ms: when the agent took it (epoch ms, the agent's clock).
        battery_pct, plugged, simulated: the agent's battery.
        cpu_pct: CPU use over the last period.
        energy_j: energy the agent has spent since it started, by its profile (J).
        mem_free_bytes: free memory.
    """

    agent_id: str
    ts_ms: int
    battery_pct: float
    plugged: bool
    simulated: bool = False
    cpu_pct: float = 0.0
    energy_j: float = 0.0
    mem_free_bytes: int = 0

    @classmethod
    def from_telemetry(cls, telemetry: Telemetry) -> TelemetrySample:
        """The parts of a telemetry message a report uses."""
        return cls(
            agent_id=telemetry.agent_id,
            ts_ms=int(telemetry.ts_ms),
            battery_pct=float(telemetry.battery.pct),
            plugged=bool(telemetry.battery.plugged),
            simulated=bool(telemetry.battery.simulated),
            cpu_pct=float(telemetry.cpu_pct),
            energy_j=float(telemetry.energy_j),
            mem_free_bytes=int(telemetry.mem_free_bytes),
        )


_RECORD_DEFAULTS = {f.name: f.default for f in fields(RequestRecord) if f.default is not MISSING}
_RECORD_FIELDS = frozenset(f.name for f in fields(RequestRecord))


def request_record(values: dict[str, Any]) -> RequestRecord:
    """``RequestRecord(**values)``, its fields set in one go: every request makes one, and
    a frozen dataclass's ``__init__`` sets its 24 fields one at a time through
    ``object.__setattr__``. ``values`` holds every field without a default."""
    assert values.keys() <= _RECORD_FIELDS, values.keys() - _RECORD_FIELDS
    record = object.__new__(RequestRecord)
    record.__dict__.update(_RECORD_DEFAULTS)
    record.__dict__.update(values)
    return record
