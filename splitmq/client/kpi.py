"""KPIs of a set of finished requests: pure functions from records to a :class:`KpiReport`.

Definitions (times in ms, from the records and their traces; a trace is the one of the
attempt that answered, one entry per stage, in the order the stages ran):

- latency: ``finished_ms - sent_ms`` of each successful request, from the first send,
  retries included. Failed requests are counted, not timed.
- throughput: successful requests per second over the span from the first request sent
  to the last one finished (all requests, failed ones too).
- per stage, over successful requests: compute ``finished - started``, queueing
  ``started - received``, transfer ``received`` minus the previous stage's ``finished``
  (for stage 0: minus the send time of the attempt that answered). The final hop, last
  stage to client, is the record's ``finished_ms`` minus the last stage's ``finished``.
  Transfer and final hop subtract times taken by different devices' clocks: they are
  exact on one machine and need synchronised clocks (NTP, PTP) across devices, where
  a clock offset shows up as a transfer time that is too long, too short or negative.
- energy per inference per device: the joules of a device's trace entries summed over
  successful requests, divided by the number of successful requests (so the devices'
  figures add up to the energy of one inference).
- bytes on the wire per request: the client's payload bytes sent and received (mean
  over all requests) and the stages' ``bytes_in`` and ``bytes_out`` summed per trace
  (mean over successful requests).
- predicted vs measured: the median of measured / predicted, latency and energy (the
  sum of a trace's ``energy_j``), over successful requests that carry a prediction.
  End to end latency mixes two things: the cost model (what a stage takes to send and
  compute) and queueing (requests waiting behind each other on a busy agent). So, over
  the successful requests served on the plan's own route (its first agents: a fallback
  ran where nothing was predicted) whose plan gave the parts of its prediction, each
  part is set against the trace's figure: per stage transfer, queueing and compute, the
  final hop, and two sums per request: *transfer + compute* (every stage's transfer and
  compute, and the final hop: the cost model) and *queueing* (every stage's; predicted
  from the queue depths the coordinator saw when it planned). Each part has the median
  predicted, the median measured and the median of measured / predicted (requests whose
  prediction is 0 have no ratio).
- share of stages: a device's stage executions over all stage executions in the
  traces of successful requests.

Percentiles are numpy's ``linear`` method (the default: linear interpolation between the
closest ranks, ``p`` at position ``(n - 1) * p / 100`` of the sorted values). Empty
inputs and runs where every request failed give a report with zero counts and ``None``
figures, never an exception.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Final

import numpy as np

from splitmq.client.records import RequestRecord, TelemetrySample
from splitmq.client.task_kpi import MemberKpi, member_kpis

__all__ = [
    "PERCENTILE_METHOD",
    "AgentKpi",
    "BytesKpi",
    "KpiReport",
    "PartKpi",
    "PredictionKpi",
    "ReportInputs",
    "StageKpi",
    "StageTimes",
    "Summary",
    "compute_kpis",
    "stage_times",
    "telemetry_in_span",
]

PERCENTILE_METHOD: Final = "linear"
UNKNOWN_ERROR = "unknown"


@dataclass(frozen=True)
class Summary:
    """Count, mean, median, tail percentiles and extremes of a sample (None when empty)."""

    count: int = 0
    mean: float | None = None
    p50: float | None = None
    p95: float | None = None
    p99: float | None = None
    min: float | None = None
    max: float | None = None

    @classmethod
    def of(cls, values: Sequence[float]) -> Summary:
        if not values:
            return cls()
        data = np.asarray(values, dtype=np.float64)
        p50, p95, p99 = np.percentile(data, [50, 95, 99], method=PERCENTILE_METHOD)
        return cls(
            count=len(data),
            mean=float(data.mean()),
            p50=float(p50),
            p95=float(p95),
            p99=float(p99),
            min=float(data.min()),
            max=float(data.max()),
        )


@dataclass(frozen=True)
class StageKpi:
    """One stage over the successful requests: its times (ms) and who ran it."""

    stage: int
    count: int
    queueing_ms: Summary
    compute_ms: Summary
    transfer_ms: Summary
    """From the previous stage's finish (or the client's send) to this stage's receipt."""
    agents: dict[str, int]
    """Executions of this stage per agent."""


@dataclass(frozen=True)
class AgentKpi:
    """One device: the stages it served, its energy and its battery during the run."""

    agent_id: str
    stages_served: int
    share: float | None
    """Its stage executions over all stage executions (0..1); None without traces."""
    requests_served: int
    energy_total_j: float
    energy_per_inference_j: float | None
    battery_start_pct: float | None = None
    battery_end_pct: float | None = None
    telemetry_energy_j: float | None = None
    """Energy its telemetry counted over the samples, idle time included (J)."""
    telemetry_samples: int = 0


@dataclass(frozen=True)
class BytesKpi:
    """Payload bytes per request (means) and in total."""

    client_sent_mean: float | None = None
    client_received_mean: float | None = None
    client_per_request: float | None = None
    """Sent plus received, mean over all requests."""
    stages_in_mean: float | None = None
    stages_out_mean: float | None = None
    stages_per_request: float | None = None
    """Every stage's bytes in plus bytes out, mean over successful requests."""
    client_sent_total: int = 0
    client_received_total: int = 0
    stages_in_total: int = 0
    stages_out_total: int = 0


@dataclass(frozen=True)
class PartKpi:
    """One part of the latency, predicted and measured over the same requests (ms)."""

    part: str
    """``stage 0 transfer``, ``stage 0 queueing``, ``stage 0 compute``, ..., ``to client``,
    ``transfer + compute``, ``queueing``."""
    count: int = 0
    predicted_median: float | None = None
    measured_median: float | None = None
    ratio_median: float | None = None
    """Median of measured / predicted over the requests whose prediction is above 0."""

    @classmethod
    def of(cls, part: str, pairs: Sequence[tuple[float, float]]) -> PartKpi:
        """From ``(predicted, measured)`` per request."""
        if not pairs:
            return cls(part)
        ratios = [measured / predicted for predicted, measured in pairs if predicted > 0]
        return cls(
            part,
            count=len(pairs),
            predicted_median=float(np.median([p for p, _ in pairs])),
            measured_median=float(np.median([m for _, m in pairs])),
            ratio_median=float(np.median(ratios)) if ratios else None,
        )


@dataclass(frozen=True)
class PredictionKpi:
    """How the plans' predictions compare with what was measured (median ratios)."""

    latency_count: int = 0
    latency_ratio_median: float | None = None
    """Median of measured / predicted latency end to end: above 1, slower than predicted."""
    energy_count: int = 0
    energy_ratio_median: float | None = None
    parts: tuple[PartKpi, ...] = ()
    """Per stage transfer, queueing and compute, then the final hop (see the module)."""
    cost_model: PartKpi = PartKpi("transfer + compute")
    """Transfer and compute of every stage and the final hop, per request: the cost model."""
    queueing: PartKpi = PartKpi("queueing")
    """Queueing of every stage, per request: how busy the fleet was."""


@dataclass(frozen=True)
class KpiReport:
    """Every KPI of a set of requests; see the module docstring for the definitions."""

    runs: tuple[str, ...]
    requests: int
    ok: int
    failed: int
    failures: dict[str, int]
    """Failed requests per error code (``unknown`` when a record has none)."""
    retried_requests: int
    extra_attempts: int
    recovered: int
    """Requests that were retried and then succeeded."""
    first_sent_ms: float | None
    last_finished_ms: float | None
    span_s: float | None
    throughput_rps: float | None
    latency_ms: Summary
    stages: tuple[StageKpi, ...]
    final_hop_ms: Summary
    energy_per_inference_j: float | None
    agents: tuple[AgentKpi, ...]
    wire_bytes: BytesKpi
    prediction: PredictionKpi
    members: tuple[MemberKpi, ...] = ()
    """For task requests: what each member and variant served (:mod:`task_kpi`)."""

    def to_dict(self) -> dict[str, Any]:
        """Plain data, ready for JSON."""
        return asdict(self)


@dataclass(frozen=True)
class ReportInputs:
    """What a report is made of: finished requests and the agents' telemetry."""

    records: tuple[RequestRecord, ...]
    telemetry: tuple[TelemetrySample, ...] = ()
    label: str = ""
    """Says where the inputs come from, for titles (a run name, a file)."""

    def kpis(self) -> KpiReport:
        return compute_kpis(self.records, self.telemetry)


@dataclass(frozen=True)
class StageTimes:
    """One trace entry's times (ms), for KPIs and plots."""

    stage: int
    agent_id: str
    transfer_ms: float
    queueing_ms: float
    compute_ms: float


@dataclass
class _AgentTotals:
    stages: int = 0
    requests: set[str] = field(default_factory=set)
    energy_j: float = 0.0


def stage_times(record: RequestRecord) -> list[StageTimes]:
    """Transfer, queueing and compute of each trace entry of a request, in trace order."""
    previous = _answer_sent_ms(record)
    times = []
    for entry in record.trace:
        times.append(
            StageTimes(
                stage=entry.stage,
                agent_id=entry.agent_id,
                transfer_ms=entry.received_ms - previous,
                queueing_ms=entry.started_ms - entry.received_ms,
                compute_ms=entry.finished_ms - entry.started_ms,
            )
        )
        previous = entry.finished_ms
    return times


def _answer_sent_ms(record: RequestRecord) -> float:
    """When the attempt that answered was sent (its trace says which attempt it was)."""
    if record.trace:
        for attempt in record.attempts:
            if attempt.attempt == record.trace[0].attempt:
                return attempt.sent_ms
    return record.sent_ms


def telemetry_in_span(
    samples: Iterable[TelemetrySample], records: Sequence[RequestRecord]
) -> list[TelemetrySample]:
    """Samples taken from the first request's send to the last one's finish (all if none)."""
    if not records:
        return list(samples)
    start = min(r.sent_ms for r in records)
    end = max(r.finished_ms for r in records)
    return [s for s in samples if start <= s.ts_ms <= end]


def compute_kpis(
    records: Sequence[RequestRecord], telemetry: Sequence[TelemetrySample] = ()
) -> KpiReport:
    """Every KPI of ``records``; ``telemetry`` adds each agent's battery and energy."""
    successes = [r for r in records if r.ok]
    failures = Counter(r.error_code or UNKNOWN_ERROR for r in records if not r.ok)
    first_sent = min((r.sent_ms for r in records), default=None)
    last_finished = max((r.finished_ms for r in records), default=None)
    span_s = None
    if first_sent is not None and last_finished is not None:
        span_s = (last_finished - first_sent) / 1000
    throughput = len(successes) / span_s if span_s else None
    stages, final_hops = _stages(successes)
    agents = _agents(successes, telemetry)
    energies = [sum(e.energy_j for e in r.trace) for r in successes]
    return KpiReport(
        runs=tuple(dict.fromkeys(r.run for r in records)),
        requests=len(records),
        ok=len(successes),
        failed=len(records) - len(successes),
        failures=dict(sorted(failures.items(), key=lambda item: (-item[1], item[0]))),
        retried_requests=sum(1 for r in records if r.retries),
        extra_attempts=sum(r.retries for r in records),
        recovered=sum(1 for r in successes if r.retries),
        first_sent_ms=first_sent,
        last_finished_ms=last_finished,
        span_s=span_s,
        throughput_rps=throughput,
        latency_ms=Summary.of([r.latency_ms for r in successes]),
        stages=stages,
        final_hop_ms=Summary.of(final_hops),
        energy_per_inference_j=_mean(energies),
        agents=agents,
        wire_bytes=_bytes(records, successes),
        prediction=_prediction(successes),
        members=member_kpis(records),
    )


def _stages(successes: Sequence[RequestRecord]) -> tuple[tuple[StageKpi, ...], list[float]]:
    by_stage: dict[int, list[StageTimes]] = defaultdict(list)
    final_hops = []
    for record in successes:
        for times in stage_times(record):
            by_stage[times.stage].append(times)
        if record.trace:
            final_hops.append(record.finished_ms - record.trace[-1].finished_ms)
    stages = tuple(
        StageKpi(
            stage=stage,
            count=len(times),
            queueing_ms=Summary.of([t.queueing_ms for t in times]),
            compute_ms=Summary.of([t.compute_ms for t in times]),
            transfer_ms=Summary.of([t.transfer_ms for t in times]),
            agents=dict(sorted(Counter(t.agent_id for t in times).items())),
        )
        for stage, times in sorted(by_stage.items())
    )
    return stages, final_hops


def _agents(
    successes: Sequence[RequestRecord], telemetry: Sequence[TelemetrySample]
) -> tuple[AgentKpi, ...]:
    totals: dict[str, _AgentTotals] = defaultdict(_AgentTotals)
    for record in successes:
        for entry in record.trace:
            agent = totals[entry.agent_id]
            agent.stages += 1
            agent.requests.add(record.request_id)
            agent.energy_j += entry.energy_j
    samples: dict[str, list[TelemetrySample]] = defaultdict(list)
    for sample in sorted(telemetry, key=lambda s: s.ts_ms):
        samples[sample.agent_id].append(sample)
    all_stages = sum(t.stages for t in totals.values())
    agents = []
    for agent_id in sorted(set(totals) | set(samples)):
        total = totals.get(agent_id, _AgentTotals())
        own = samples.get(agent_id, [])
        spent = own[-1].energy_j - own[0].energy_j if len(own) > 1 else None
        agents.append(
            AgentKpi(
                agent_id=agent_id,
                stages_served=total.stages,
                share=total.stages / all_stages if all_stages else None,
                requests_served=len(total.requests),
                energy_total_j=total.energy_j,
                energy_per_inference_j=total.energy_j / len(successes) if successes else None,
                battery_start_pct=own[0].battery_pct if own else None,
                battery_end_pct=own[-1].battery_pct if own else None,
                # A counter that went down means the agent restarted: no figure.
                telemetry_energy_j=spent if spent is not None and spent >= 0 else None,
                telemetry_samples=len(own),
            )
        )
    return tuple(agents)


def _bytes(records: Sequence[RequestRecord], successes: Sequence[RequestRecord]) -> BytesKpi:
    stages_in = [sum(e.bytes_in for e in r.trace) for r in successes]
    stages_out = [sum(e.bytes_out for e in r.trace) for r in successes]
    sent = [r.bytes_sent for r in records]
    received = [r.bytes_received for r in records]
    return BytesKpi(
        client_sent_mean=_mean(sent),
        client_received_mean=_mean(received),
        client_per_request=_mean([s + r for s, r in zip(sent, received, strict=True)]),
        stages_in_mean=_mean(stages_in),
        stages_out_mean=_mean(stages_out),
        stages_per_request=_mean([i + o for i, o in zip(stages_in, stages_out, strict=True)]),
        client_sent_total=sum(sent),
        client_received_total=sum(received),
        stages_in_total=sum(stages_in),
        stages_out_total=sum(stages_out),
    )


def _prediction(successes: Sequence[RequestRecord]) -> PredictionKpi:
    latency = [
        r.latency_ms / r.predicted_latency_ms
        for r in successes
        if r.predicted_latency_ms is not None and r.predicted_latency_ms > 0
    ]
    energy = [
        sum(e.energy_j for e in r.trace) / r.predicted_energy_j
        for r in successes
        if r.predicted_energy_j is not None and r.predicted_energy_j > 0 and r.trace
    ]
    parts, cost_model, queueing = _predicted_parts(successes)
    return PredictionKpi(
        latency_count=len(latency),
        latency_ratio_median=float(np.median(latency)) if latency else None,
        energy_count=len(energy),
        energy_ratio_median=float(np.median(energy)) if energy else None,
        parts=parts,
        cost_model=cost_model,
        queueing=queueing,
    )


def _on_planned_route(record: RequestRecord) -> bool:
    """Whether the trace ran every stage where the plan predicted it."""
    predicted = record.predicted_stages
    return (
        bool(predicted)
        and len(record.trace) == len(predicted)
        and all(
            (e.stage, e.agent_id) == (p.stage, p.agent_id)
            for e, p in zip(record.trace, predicted, strict=True)
        )
    )


def _predicted_parts(
    successes: Sequence[RequestRecord],
) -> tuple[tuple[PartKpi, ...], PartKpi, PartKpi]:
    """Each part of the latency, predicted against measured; then the two sums."""
    pairs: dict[str, list[tuple[float, float]]] = defaultdict(list)
    order: list[str] = []
    cost_model: list[tuple[float, float]] = []
    queueing: list[tuple[float, float]] = []

    def add(part: str, predicted: float, measured: float) -> None:
        if part not in pairs:
            order.append(part)
        pairs[part].append((predicted, measured))

    for record in successes:
        predicted_hop_ms = record.predicted_final_hop_ms
        if predicted_hop_ms is None or not _on_planned_route(record):
            continue
        final_hop_ms = record.finished_ms - record.trace[-1].finished_ms
        served = stage_times(record)
        for predicted, measured in zip(record.predicted_stages, served, strict=True):
            stage = f"stage {predicted.stage}"
            add(f"{stage} transfer", predicted.transfer_ms, measured.transfer_ms)
            add(f"{stage} queueing", predicted.queueing_ms, measured.queueing_ms)
            add(f"{stage} compute", predicted.compute_ms, measured.compute_ms)
        add("to client", predicted_hop_ms, final_hop_ms)
        cost_model.append(
            (
                sum(p.transfer_ms + p.compute_ms for p in record.predicted_stages)
                + predicted_hop_ms,
                sum(t.transfer_ms + t.compute_ms for t in served) + final_hop_ms,
            )
        )
        queueing.append(
            (
                sum(p.queueing_ms for p in record.predicted_stages),
                sum(t.queueing_ms for t in served),
            )
        )
    parts = tuple(PartKpi.of(part, pairs[part]) for part in _part_order(order))
    return (
        parts,
        PartKpi.of("transfer + compute", cost_model),
        PartKpi.of("queueing", queueing),
    )


def _part_order(parts: Sequence[str]) -> list[str]:
    """Stages in order (transfer, queueing, compute each), the final hop last."""
    kinds = ("transfer", "queueing", "compute")

    def key(part: str) -> tuple[int, int]:
        if part == "to client":
            return (1 << 30, 0)
        _, stage, kind = part.split()
        return (int(stage), kinds.index(kind))

    return sorted(parts, key=key)


def _mean(values: Sequence[float]) -> float | None:
    return float(sum(values) / len(values)) if values else None
