"""PNG plots of a report: latency distribution, stage breakdown, battery, latency over
time, and for task requests the members' accuracy against latency and energy.

matplotlib is imported only when a plot is drawn (it is the ``client`` extra, not needed
to send requests); figures are drawn on the Agg canvas directly, without pyplot's global
state, so plotting is safe from any thread.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from splitmq.client.kpi import KpiReport, ReportInputs, Summary
from splitmq.client.records import RequestRecord, TelemetrySample
from splitmq.client.task_kpi import MemberKpi

__all__ = [
    "BATTERY",
    "LATENCY_DISTRIBUTION",
    "LATENCY_OVER_TIME",
    "STAGE_BREAKDOWN",
    "TASK_TRADEOFF",
    "plot_battery",
    "plot_latency_distribution",
    "plot_latency_over_time",
    "plot_stage_breakdown",
    "plot_task_tradeoff",
    "write_plots",
]

LATENCY_DISTRIBUTION = "latency_distribution.png"
STAGE_BREAKDOWN = "stage_breakdown.png"
BATTERY = "battery.png"
LATENCY_OVER_TIME = "latency_over_time.png"
TASK_TRADEOFF = "task_tradeoff.png"
DPI = 110
WIDE_RANGE = 20.0
"""An axis whose figures span more than this factor is drawn on a log scale."""
PERCENTILE_STYLES = (("p50", "tab:green"), ("p95", "tab:orange"), ("p99", "tab:red"))


def write_plots(inputs: ReportInputs, out_dir: str | Path) -> list[Path]:
    """Draw every plot the inputs have data for into ``out_dir``; returns the files written.

    The latency distribution needs a successful request, the stage breakdown a trace, the
    latency over time any request, the battery plot telemetry.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = inputs.kpis()
    written = []
    label = inputs.label
    if report.ok:
        written.append(plot_latency_distribution(inputs.records, out / LATENCY_DISTRIBUTION, label))
    if report.stages:
        written.append(plot_stage_breakdown(report, out / STAGE_BREAKDOWN, label))
    if inputs.records:
        written.append(plot_latency_over_time(inputs.records, out / LATENCY_OVER_TIME, label))
    if inputs.telemetry:
        written.append(plot_battery(inputs.telemetry, out / BATTERY, label))
    if report.members:
        written.append(plot_task_tradeoff(report.members, inputs.records, out / TASK_TRADEOFF))
    return written


def plot_task_tradeoff(
    members: Sequence[MemberKpi], records: Sequence[RequestRecord], path: str | Path
) -> Path:
    """Accuracy against latency (left) and energy per inference (right): every member
    and variant of a task the plans weighed, as a circle at the planner's predicted
    figures (filled when it served requests, hollow when it served none), the dashed
    trade-off curve through those no other beats on both counts; every served request
    as a dot at its measured figures. An axis spanning more than :data:`WIDE_RANGE`
    times is logarithmic (requests queued in a burst measure far above the prediction).

    Where no member's accuracy is known, the y axis is the agreement with the task's
    reference member; members with neither figure are left out (the table has them).
    """
    figure = _figure((11, 4.5))
    by_latency, by_energy = figure.subplots(1, 2, sharey=True)
    colors = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown"]
    tasks = sorted({m.task for m in members})
    measured = any(m.accuracy is not None for m in members)
    drawn = [m for m in members if (m.accuracy if measured else m.agreement) is not None]
    for index, member in enumerate(drawn):
        color = colors[index % len(colors)]
        score = (member.accuracy if measured else member.agreement) or 0.0
        served = [
            r
            for r in records
            if r.ok and (r.task, r.model, r.variant) == (member.task, member.model, member.variant)
        ]
        latencies = [r.latency_ms for r in served]
        energies = [1000 * sum(e.energy_j for e in r.trace) for r in served if r.trace]
        by_latency.scatter(latencies, [score] * len(latencies), s=8, alpha=0.35, color=color)
        by_energy.scatter(energies, [score] * len(energies), s=8, alpha=0.35, color=color)
        circle: dict[str, Any] = {"s": 90, "edgecolor": color, "linewidth": 1.5, "zorder": 3}
        circle["facecolor"] = color if member.requests else "none"
        label = f"{member.model} {member.variant}: " + (
            f"{member.requests} served" if member.requests else _not_chosen(member)
        )
        if member.predicted_latency_ms is not None:
            by_latency.scatter([member.predicted_latency_ms], [score], label=label, **circle)
        if member.predicted_energy_j is not None:
            by_energy.scatter([1000 * member.predicted_energy_j], [score], **circle)
    line = {"color": "grey", "linestyle": "--", "linewidth": 0.8, "zorder": 0}
    scores = [(m.accuracy if measured else m.agreement) or 0.0 for m in drawn]
    latency_points = sorted(
        (m.predicted_latency_ms, score)
        for m, score in zip(drawn, scores, strict=True)
        if m.predicted_latency_ms is not None
    )
    energy_points = sorted(
        (1000 * m.predicted_energy_j, score)
        for m, score in zip(drawn, scores, strict=True)
        if m.predicted_energy_j is not None
    )
    for axis, points in ((by_latency, latency_points), (by_energy, energy_points)):
        frontier = _frontier(points)
        axis.plot([x for x, _ in frontier], [y for _, y in frontier], **line)
        axis.grid(alpha=0.3)
        shown = [x for collection in axis.collections for x, _ in collection.get_offsets()]
        if shown and min(shown) > 0 and max(shown) / min(shown) > WIDE_RANGE:
            axis.set_xscale("log")  # measured figures far from predicted ones: both seen
    by_latency.set_xlabel("latency (ms): circles predicted, dots the requests served")
    by_energy.set_xlabel("energy per inference (mJ): circles predicted, dots measured")
    by_latency.set_ylabel(
        "accuracy (measured)" if measured else "agreement with the reference member"
    )
    if drawn:
        by_latency.legend(fontsize="small", title="member variant")
    title = f"task {', '.join(tasks)}: accuracy against latency and energy"
    if len(drawn) < len(members):
        title += f" ({len(members) - len(drawn)} of unknown accuracy not drawn)"
    figure.suptitle(title)
    return _save(figure, path)


def _frontier(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other beats on both counts (less cost, more accuracy), by cost: the
    trade-off curve a request chooses along."""
    kept: list[tuple[float, float]] = []
    for x, y in sorted(points, key=lambda point: (point[0], -point[1])):
        if not kept or y > kept[-1][1]:
            kept.append((x, y))
    return kept


def _not_chosen(member: MemberKpi) -> str:
    return f"none served ({member.excluded})" if member.excluded else "none served"


def plot_latency_distribution(
    records: Sequence[RequestRecord], path: str | Path, label: str = ""
) -> Path:
    """Histogram and CDF of successful requests' latency, p50/p95/p99 marked."""
    latencies = np.sort([r.latency_ms for r in records if r.ok])
    summary = Summary.of(latencies.tolist())
    figure = _figure((11, 4.5))
    histogram, cdf = figure.subplots(1, 2)
    bins = int(min(50, max(5, np.sqrt(len(latencies)))))
    histogram.hist(latencies, bins=bins, color="tab:blue", alpha=0.8)
    histogram.set_xlabel("latency (ms)")
    histogram.set_ylabel("requests")
    histogram.yaxis.get_major_locator().set_params(integer=True)
    fractions = np.arange(1, len(latencies) + 1) / len(latencies)
    cdf.step(latencies, fractions, where="post", color="tab:blue")
    cdf.set_xlabel("latency (ms)")
    cdf.set_ylabel("fraction of requests at or below")
    cdf.set_ylim(0, 1.02)
    for name, color in PERCENTILE_STYLES:
        value = getattr(summary, name)
        for axis in (histogram, cdf):
            axis.axvline(value, color=color, linestyle="--", label=f"{name} {value:.1f} ms")
    histogram.legend(fontsize="small")
    cdf.grid(alpha=0.3)
    figure.suptitle(_titled(f"latency of {summary.count} successful requests", label))
    return _save(figure, path)


def plot_stage_breakdown(report: KpiReport, path: str | Path, label: str = "") -> Path:
    """Stacked bars per stage, then the hop back to the client: median transfer,
    queueing and compute (ms). Medians do not add up to the median latency."""
    labels = []
    for stage in report.stages:
        agents = sorted(stage.agents, key=lambda a: -stage.agents[a])
        more = f" +{len(agents) - 1}" if len(agents) > 1 else ""
        labels.append(f"stage {stage.stage}\n{agents[0]}{more}" if agents else f"{stage.stage}")
    labels.append("to client")
    transfer = [_zero(s.transfer_ms.p50) for s in report.stages] + [_zero(report.final_hop_ms.p50)]
    queueing = [_zero(s.queueing_ms.p50) for s in report.stages] + [0.0]
    compute = [_zero(s.compute_ms.p50) for s in report.stages] + [0.0]
    clipped = any(value < 0 for value in transfer)
    shown = [max(0.0, value) for value in transfer]
    figure = _figure((max(6.0, 1.6 * len(labels) + 2), 4.5))
    axis = figure.subplots()
    x = np.arange(len(labels))
    axis.bar(x, shown, label="transfer", color="tab:blue")
    axis.bar(x, queueing, bottom=shown, label="queueing", color="tab:orange")
    bottom = np.add(shown, queueing)
    axis.bar(x, compute, bottom=bottom, label="compute", color="tab:green")
    for position, total in zip(x, bottom + np.asarray(compute), strict=True):
        axis.annotate(f"{total:.1f}", (position, total), ha="center", va="bottom", fontsize=8)
    axis.set_xticks(x, labels, fontsize=8)
    axis.set_ylabel("median time (ms)")
    axis.legend(fontsize="small")
    title = _titled(f"per-stage time, medians over {report.ok} successful requests", label)
    if clipped:
        title += "\n(negative transfer drawn as 0: are the devices' clocks synchronised?)"
    axis.set_title(title, fontsize=10)
    return _save(figure, path)


def plot_battery(telemetry: Sequence[TelemetrySample], path: str | Path, label: str = "") -> Path:
    """Battery charge of each agent over time, from its telemetry."""
    figure = _figure((9, 4.5))
    axis = figure.subplots()
    start = min(s.ts_ms for s in telemetry)
    for agent_id in sorted({s.agent_id for s in telemetry}):
        own = sorted((s for s in telemetry if s.agent_id == agent_id), key=lambda s: s.ts_ms)
        flags = (("simulated", own[0].simulated), ("plugged", own[-1].plugged))
        notes = [name for name, on in flags if on]
        legend = agent_id + (f" ({', '.join(notes)})" if notes else "")
        axis.plot(
            [(s.ts_ms - start) / 1000 for s in own],
            [s.battery_pct for s in own],
            marker=".",
            label=legend,
        )
    axis.set_xlabel("time since the first sample (s)")
    axis.set_ylabel("battery (%)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize="small")
    axis.set_title(_titled("battery over time", label))
    return _save(figure, path)


def plot_latency_over_time(
    records: Sequence[RequestRecord], path: str | Path, label: str = ""
) -> Path:
    """Each request's latency by when it was sent; retried and failed requests marked."""
    figure = _figure((9, 4.5))
    axis = figure.subplots()
    start = min(r.sent_ms for r in records)
    groups: tuple[tuple[str, Callable[[RequestRecord], bool], str, str], ...] = (
        ("succeeded", lambda r: r.ok and not r.retries, "tab:blue", "o"),
        ("succeeded after a retry", lambda r: r.ok and r.retries > 0, "tab:orange", "o"),
        ("failed (time to the failure)", lambda r: not r.ok, "tab:red", "x"),
    )
    for name, wanted, color, marker in groups:
        chosen = [r for r in records if wanted(r)]
        if chosen:
            axis.scatter(
                [(r.sent_ms - start) / 1000 for r in chosen],
                [r.latency_ms for r in chosen],
                s=14,
                color=color,
                marker=marker,
                label=f"{name}: {len(chosen)}",
            )
    axis.set_xlabel("request sent (s since the first)")
    axis.set_ylabel("latency (ms)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize="small")
    axis.set_title(_titled("latency over time", label))
    return _save(figure, path)


def _titled(title: str, label: str) -> str:
    return f"{title} ({label})" if label else title


def _zero(value: float | None) -> float:
    return 0.0 if value is None else value


def _figure(size: tuple[float, float]) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Any, path: str | Path) -> Path:
    out = Path(path)
    figure.savefig(out, dpi=DPI)
    return out
