"""Every member and variant of a task: what the planner offered, and what each served.

For every task request (a :class:`~splitmq.client.records.RequestRecord` whose ``task``
is set) the plan says which member (``model``) and variant served it, that variant's
measured accuracy, and every deployed member and variant it weighed (``candidates``:
accuracy, the predicted latency and energy of the route through it, the constraint it
missed). Grouped by member and variant, over the run: its accuracy, the planner's
median predicted latency and energy, how many requests it served, their measured
latency and energy per inference (the traces' energy, as in :mod:`splitmq.client.kpi`).
Members that served nothing are there too: the whole trade-off a user chooses along.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from splitmq.client.records import RequestRecord

__all__ = ["MemberKpi", "member_kpis"]


@dataclass(frozen=True)
class MemberKpi:
    """One member and variant of a task, over a run.

    Attributes:
        task, model, variant: the member and variant.
        requests: task requests it served (a result arrived).
        share: its part of the task's served requests.
        accuracy: its measured accuracy (None: unknown).
        agreement: its agreement with the task's reference member (None: unknown).
        offered: plans that weighed it (each request's plan counts once).
        predicted_latency_ms, predicted_energy_j: the medians of the planner's figures
            for it, over the plans that weighed it (for a member that served requests
            whose plans list no candidates: its served plans' figures).
        excluded: the constraint it missed most often in those plans, with how many
            times (``min_accuracy 12/20``); ``""`` when it met every constraint.
        latency_p50_ms, latency_p95_ms: measured latency of the requests it served
            (None: it served none).
        energy_per_inference_j: mean of the traces' energy of those requests.
    """

    task: str
    model: str
    variant: str
    requests: int
    share: float
    accuracy: float | None
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    energy_per_inference_j: float | None
    predicted_energy_j: float | None
    predicted_latency_ms: float | None = None
    agreement: float | None = None
    offered: int = 0
    excluded: str = ""

    @property
    def score(self) -> float | None:
        """What members are ranked by: accuracy, else agreement (None: neither known)."""
        return self.accuracy if self.accuracy is not None else self.agreement


Key = tuple[str, str, str]


def member_kpis(records: Sequence[RequestRecord]) -> tuple[MemberKpi, ...]:
    """One :class:`MemberKpi` per task, member and variant that a plan weighed or that
    served a request, most accurate first within each task."""
    served: dict[Key, list[RequestRecord]] = defaultdict(list)
    offers: dict[Key, list[tuple[float | None, float | None]]] = defaultdict(list)
    accuracy: dict[Key, float | None] = {}
    agreement: dict[Key, float | None] = {}
    missed: dict[Key, Counter[str]] = defaultdict(Counter)
    for record in records:
        if not record.task:
            continue
        if record.ok:
            key = (record.task, record.model, record.variant)
            served[key].append(record)
            if record.accuracy is not None:
                accuracy[key] = record.accuracy
        for candidate in record.candidates:
            key = (record.task, candidate.model, candidate.variant)
            offers[key].append((candidate.predicted_latency_ms, candidate.predicted_energy_j))
            accuracy[key] = _known(candidate.accuracy, accuracy.get(key))
            agreement[key] = _known(candidate.agreement, agreement.get(key))
            if candidate.excluded:
                missed[key][candidate.excluded] += 1
    total: Counter[str] = Counter()
    for (task, _, _), members in served.items():
        total[task] += len(members)
    result = []
    for key in {*served, *offers}:
        members = served.get(key, [])
        offered = offers.get(key, [])
        figures = offered or [(r.predicted_latency_ms, r.predicted_energy_j) for r in members]
        latencies = [r.latency_ms for r in members]
        energies = [sum(e.energy_j for e in r.trace) for r in members if r.trace]
        result.append(
            MemberKpi(
                task=key[0],
                model=key[1],
                variant=key[2],
                requests=len(members),
                share=len(members) / total[key[0]] if total[key[0]] else 0.0,
                accuracy=accuracy.get(key),
                agreement=agreement.get(key),
                latency_p50_ms=_percentile(latencies, 50),
                latency_p95_ms=_percentile(latencies, 95),
                energy_per_inference_j=sum(energies) / len(energies) if energies else None,
                predicted_latency_ms=_percentile((f[0] for f in figures), 50),
                predicted_energy_j=_percentile((f[1] for f in figures), 50),
                offered=len(offered),
                excluded=_most_missed(missed.get(key), len(offered)),
            )
        )
    result.sort(
        key=lambda m: (m.task, -(m.score if m.score is not None else -1.0), m.model, m.variant)
    )
    return tuple(result)


def _known(value: float | None, before: float | None) -> float | None:
    return value if value is not None else before


def _percentile(values: Iterable[float | None], q: float) -> float | None:
    import numpy as np

    known = [v for v in values if v is not None]
    return float(np.percentile(np.asarray(known, dtype=np.float64), q)) if known else None


def _most_missed(missed: Counter[str] | None, offered: int) -> str:
    if not missed:
        return ""
    constraint, times = missed.most_common(1)[0]
    return f"{constraint} {times}/{offered}"
