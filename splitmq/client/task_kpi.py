"""Which member and variant of a task served the requests, and what each delivered.

For every task request (a :class:`~splitmq.client.records.RequestRecord` whose ``task``
is set) the plan says which member (``model``) and variant served it, and that
variant's measured accuracy. Grouped by member and variant: how many requests each
served, its accuracy, its measured latency and its energy per inference (the traces'
energy, as in :mod:`splitmq.client.kpi`): the trade-off a user chooses along.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from splitmq.client.records import RequestRecord

__all__ = ["MemberKpi", "member_kpis"]


@dataclass(frozen=True)
class MemberKpi:
    """What one member and variant of a task served.

    Attributes:
        task, model, variant: the member and variant.
        requests: task requests it served (a result arrived).
        share: its part of the task's served requests.
        accuracy: its measured accuracy, from the plans (None: unknown).
        latency_p50_ms, latency_p95_ms: measured latency of those requests.
        energy_per_inference_j: mean of the traces' energy.
        predicted_energy_j: mean of the plans' predicted energy.
    """

    task: str
    model: str
    variant: str
    requests: int
    share: float
    accuracy: float | None
    latency_p50_ms: float
    latency_p95_ms: float
    energy_per_inference_j: float | None
    predicted_energy_j: float | None


def member_kpis(records: Sequence[RequestRecord]) -> tuple[MemberKpi, ...]:
    """One :class:`MemberKpi` per task, member and variant that served a request, most
    accurate first within each task."""
    import numpy as np

    groups: dict[tuple[str, str, str], list[RequestRecord]] = defaultdict(list)
    for record in records:
        if record.task and record.ok:
            groups[(record.task, record.model, record.variant)].append(record)
    served: dict[str, int] = defaultdict(int)
    for (task, _, _), members in groups.items():
        served[task] += len(members)
    result = []
    for (task, model, variant), members in groups.items():
        latencies = np.asarray([r.latency_ms for r in members], dtype=np.float64)
        energies = [sum(e.energy_j for e in r.trace) for r in members if r.trace]
        predicted = [r.predicted_energy_j for r in members if r.predicted_energy_j is not None]
        accuracies = [r.accuracy for r in members if r.accuracy is not None]
        result.append(
            MemberKpi(
                task=task,
                model=model,
                variant=variant,
                requests=len(members),
                share=len(members) / served[task],
                accuracy=accuracies[-1] if accuracies else None,
                latency_p50_ms=float(np.percentile(latencies, 50)),
                latency_p95_ms=float(np.percentile(latencies, 95)),
                energy_per_inference_j=sum(energies) / len(energies) if energies else None,
                predicted_energy_j=sum(predicted) / len(predicted) if predicted else None,
            )
        )
    result.sort(key=lambda m: (m.task, -(m.accuracy or -1.0), m.model, m.variant))
    return tuple(result)
