"""``splitmq report``: KPIs of saved results, as tables (or JSON) and PNG plots.

Reads the results database (``--db``, SQLite) or a JSON lines export (``--jsonl``),
optionally one run only, and prints request counts, latency percentiles, throughput,
per-stage transfer, queueing and compute, per-device energy and battery, bytes on the
wire and predicted versus measured figures. The definitions are in
:mod:`splitmq.client.kpi`.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from splitmq.client.kpi import KpiReport, PredictionKpi, ReportInputs, Summary
from splitmq.client.results_db import DEFAULT_PATH, ResultsDB
from splitmq.errors import ConfigError, SplitMQError
from splitmq.tables import format_table

__all__ = ["add_parser", "configure_parser", "format_report", "format_table", "run_report"]


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``splitmq report`` to the main command's subparsers (runs with ``args.run``)."""
    parser = subparsers.add_parser(
        "report",
        help="KPIs of saved results: latency, throughput, per-stage time, energy, bytes",
        description="Turn saved results and their traces into KPIs: a table (or JSON) and, "
        "with --plots, PNG plots.",
    )
    configure_parser(parser)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Declare the report's options."""
    add = parser.add_argument
    add("--db", type=Path, default=DEFAULT_PATH, help=f"results database (default {DEFAULT_PATH})")
    add("--jsonl", type=Path, help="read a JSON lines export instead of the database")
    # ``args.run`` is the subcommand's runner (see splitmq.cli): the run label is ``run_name``.
    add("--run", dest="run_name", metavar="NAME", help="only the requests of this run")
    add("--plots", type=Path, metavar="DIR", help="write PNG plots into this directory")
    add("--json", action="store_true", help="print the KPIs as JSON instead of tables")
    add("--export-jsonl", type=Path, metavar="PATH", help="also export the requests as JSON lines")
    parser.set_defaults(run=run_report)


def run_report(args: argparse.Namespace) -> int:
    """Print the report; 0 when done, 2 when the results cannot be read."""
    try:
        return _report(args)
    except SplitMQError as error:
        print(f"splitmq report: error: {error}", file=sys.stderr)
        return 2


def _report(args: argparse.Namespace) -> int:
    notes: TextIO = sys.stderr if args.json else sys.stdout
    with _open(args) as db:
        runs = db.runs()
        if args.run_name is not None and args.run_name not in runs:
            raise ConfigError(
                f"no run {args.run_name!r} in {db.path if not args.jsonl else args.jsonl}; "
                f"runs: {', '.join(repr(r) for r in runs) or 'none'}"
            )
        records = db.requests(run=args.run_name)
        span = (
            (min(r.sent_ms for r in records), max(r.finished_ms for r in records))
            if records
            else (None, None)
        )
        inputs = ReportInputs(
            records=tuple(records),
            telemetry=tuple(db.telemetry(since_ms=span[0], until_ms=span[1])),
            label=args.run_name or "",
        )
        if args.export_jsonl is not None:
            count = db.export_jsonl(args.export_jsonl, run=args.run_name)
            print(f"exported {count} requests to {args.export_jsonl}", file=notes)
    report = inputs.kpis()
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        source = str(args.jsonl) if args.jsonl else str(args.db)
        print(format_report(report, source=source, run=args.run_name))
    if args.plots is not None:
        from splitmq.client.plots import write_plots

        try:
            written = write_plots(inputs, args.plots)
        except OSError as error:
            raise ConfigError(f"cannot write the plots into {args.plots}: {error}") from None
        names = ", ".join(p.name for p in written) or "none (no requests or telemetry)"
        print(f"\nplots in {args.plots}/: {names}", file=notes)
    return 0


def _open(args: argparse.Namespace) -> ResultsDB:
    if args.jsonl is not None:
        db = ResultsDB.memory()
        try:
            db.import_jsonl(args.jsonl)
        except SplitMQError:
            db.close()
            raise
        return db
    if not Path(args.db).is_file():
        raise ConfigError(
            f"no results database at {args.db}: record some requests first, "
            "or give --db PATH or --jsonl EXPORT"
        )
    return ResultsDB(args.db)


# --- tables -----------------------------------------------------------------------------


def format_report(report: KpiReport, source: str = "", run: str | None = None) -> str:
    """The report a person reads: a heading, then one table per subject."""
    sections = [_heading(report, source, run)]
    if not report.requests:
        sections.append("no requests to report")
        return "\n\n".join(sections)
    sections.append(_requests_table(report, run))
    if report.failures:
        sections.append(
            format_table(
                ["failed with", "requests"],
                [[code, str(count)] for code, count in report.failures.items()],
            )
        )
    if report.ok:
        sections.append(_latency_table(report))
    else:
        sections.append("no successful request: no latency, stage or energy figures")
    if report.stages:
        sections.append(_stages_table(report))
    if report.agents:
        sections.append(_agents_table(report))
    sections.append(_bytes_table(report))
    if report.prediction.latency_count or report.prediction.energy_count:
        sections.append(_prediction_table(report))
    if report.members:
        sections.append(_members_table(report))
    return "\n\n".join(sections)


def _members_table(report: KpiReport) -> str:
    """Every member and variant of each task the plans weighed: accuracy, the planner's
    predicted figures, what it served and what that measured, and why it was passed over."""
    headers = ["task", "member", "variant", "accuracy", "predicted ms", "predicted mJ"]
    headers += ["requests", "share %", "p50 ms", "p95 ms", "energy mJ/inference", "missed"]
    rows = [
        [
            m.task,
            m.model,
            m.variant,
            _accuracy(m.accuracy, m.agreement),
            _num(m.predicted_latency_ms, 2),
            _num(None if m.predicted_energy_j is None else 1000 * m.predicted_energy_j, 3),
            str(m.requests),
            f"{100 * m.share:.0f}",
            _num(m.latency_p50_ms, 2),
            _num(m.latency_p95_ms, 2),
            _num(None if m.energy_per_inference_j is None else 1000 * m.energy_per_inference_j, 3),
            m.excluded or "-",
        ]
        for m in report.members
    ]
    note = (
        "predicted: the planner's median for the route through it; missed: the constraint "
        "it missed most often in the plans that weighed it"
    )
    return format_table(headers, rows, left=(0, 1, 2, len(headers) - 1)) + "\n" + note


def _accuracy(accuracy: float | None, agreement: float | None) -> str:
    if accuracy is not None:
        return f"{accuracy:.3f}"
    return "unknown" if agreement is None else f"unknown (agrees {agreement:.3f})"


def _heading(report: KpiReport, source: str, run: str | None) -> str:
    what = f"run {run}" if run else f"runs {', '.join(report.runs) or '-'}"
    heading = f"splitmq report: {source}, {what}"
    if report.first_sent_ms is not None and report.last_finished_ms is not None:
        heading += f"\nfrom {_time(report.first_sent_ms)} to {_time(report.last_finished_ms)}"
    return heading


def _requests_table(report: KpiReport, run: str | None) -> str:
    headers = ["run", "requests", "ok", "failed", "retried", "extra attempts", "recovered"]
    headers += ["span (s)", "throughput (req/s)"]
    row = [run or ", ".join(report.runs), str(report.requests), str(report.ok)]
    row += [str(report.failed), str(report.retried_requests), str(report.extra_attempts)]
    row += [str(report.recovered), _num(report.span_s, 2), _num(report.throughput_rps, 2)]
    return format_table(headers, [row])


def _latency_table(report: KpiReport) -> str:
    headers = ["latency (ms)", "n", "mean", "p50", "p95", "p99", "min", "max"]
    return format_table(headers, [["end to end", *_summary_cells(report.latency_ms)]])


def _summary_cells(summary: Summary) -> list[str]:
    values = (summary.mean, summary.p50, summary.p95, summary.p99, summary.min, summary.max)
    return [str(summary.count), *(_num(v, 1) for v in values)]


def _stages_table(report: KpiReport) -> str:
    headers = ["stage", "n", "transfer (ms) p50", "p95", "queueing (ms) p50", "p95"]
    headers += ["compute (ms) p50", "p95", "served by"]
    rows = []
    for stage in report.stages:
        agents = " ".join(f"{a}:{n}" for a, n in stage.agents.items())
        rows.append(
            [
                str(stage.stage),
                str(stage.count),
                _num(stage.transfer_ms.p50, 1),
                _num(stage.transfer_ms.p95, 1),
                _num(stage.queueing_ms.p50, 1),
                _num(stage.queueing_ms.p95, 1),
                _num(stage.compute_ms.p50, 1),
                _num(stage.compute_ms.p95, 1),
                agents,
            ]
        )
    final = report.final_hop_ms
    rows.append(["to client", str(final.count), _num(final.p50, 1), _num(final.p95, 1)])
    rows[-1] += ["-"] * 4
    return format_table(headers, rows, left=(0, len(headers) - 1)) + (
        "\ntransfer across devices assumes synchronised clocks (NTP); exact on one machine"
    )


def _agents_table(report: KpiReport) -> str:
    headers = ["agent", "stages", "share (%)", "requests", "J/inference", "energy (J)"]
    headers += ["battery start (%)", "battery end (%)", "telemetry (J)"]
    rows = [
        [
            agent.agent_id,
            str(agent.stages_served),
            _num(None if agent.share is None else 100 * agent.share, 1),
            str(agent.requests_served),
            _num(agent.energy_per_inference_j, 4),
            _num(agent.energy_total_j, 4),
            _num(agent.battery_start_pct, 1),
            _num(agent.battery_end_pct, 1),
            _num(agent.telemetry_energy_j, 2),
        ]
        for agent in report.agents
    ]
    if report.ok:
        stages = sum(a.stages_served for a in report.agents)
        energy = sum(a.energy_total_j for a in report.agents)
        rows.append(["all devices", str(stages), "", str(report.ok)])
        rows[-1] += [_num(report.energy_per_inference_j, 4), _num(energy, 4)]
    return format_table(headers, rows)


def _bytes_table(report: KpiReport) -> str:
    wire = report.wire_bytes
    headers = ["bytes on the wire", "client sent (B)", "client received (B)", "client (B)"]
    headers += ["stages in (B)", "stages out (B)", "stages (B)"]
    mean = [wire.client_sent_mean, wire.client_received_mean, wire.client_per_request]
    mean += [wire.stages_in_mean, wire.stages_out_mean, wire.stages_per_request]
    client_total = wire.client_sent_total + wire.client_received_total
    stages_total = wire.stages_in_total + wire.stages_out_total
    total = [wire.client_sent_total, wire.client_received_total, client_total]
    total += [wire.stages_in_total, wire.stages_out_total, stages_total]
    return format_table(
        headers,
        [
            ["mean per request", *(_num(v, 0) for v in mean)],
            ["total", *(_num(v, 0) for v in total)],
        ],
    )


def _prediction_table(report: KpiReport) -> str:
    prediction = report.prediction
    headers = ["predicted vs measured", "n", "predicted (ms) p50", "measured (ms) p50"]
    headers += ["measured / predicted (median)"]
    rows = [
        [
            part.part,
            str(part.count),
            _num(part.predicted_median, 2),
            _num(part.measured_median, 2),
            _num(part.ratio_median, 2),
        ]
        for part in (*prediction.parts, prediction.cost_model, prediction.queueing)
        if part.count
    ]
    rows.append(["end to end latency", str(prediction.latency_count), "", ""])
    rows[-1].append(_num(prediction.latency_ratio_median, 2))
    rows.append(["energy (J)", str(prediction.energy_count), "", ""])
    rows[-1].append(_num(prediction.energy_ratio_median, 2))
    table = format_table(headers, rows)
    return "\n".join([table, *prediction_verdict(prediction)])


COST_MODEL_HOLDS = (0.67, 1.5)
"""Measured / predicted transfer + compute within this range: the cost model holds..."""
COST_MODEL_SLACK_MS = 2.0
"""...or within this many ms of it: a few ms of noise on a fast path is no wrong model."""
BUSY_SHARE = 0.2
"""Queueing above this share of the measured latency: a busy fleet."""


def prediction_verdict(prediction: PredictionKpi) -> list[str]:
    """A line on the cost model and one on queueing: a wrong model or a busy fleet."""
    model, queueing = prediction.cost_model, prediction.queueing
    if not model.count or model.measured_median is None or model.predicted_median is None:
        return [
            "no request carries the parts of its prediction (per stage): the end to end "
            "ratio mixes the cost model with queueing"
        ]
    measured, predicted = model.measured_median, model.predicted_median
    ratio = f" ({model.ratio_median:.2f}x)" if model.ratio_median is not None else ""
    said = (
        f"cost model: transfer + compute took {measured:.1f} ms against {predicted:.1f} ms "
        f"predicted{ratio}"
    )
    low, high = COST_MODEL_HOLDS
    holds = model.ratio_median is not None and low <= model.ratio_median <= high
    if holds or abs(measured - predicted) <= COST_MODEL_SLACK_MS:
        lines = [f"{said}: it holds"]
    else:
        off = max(
            (p for p in prediction.parts if "queueing" not in p.part),
            key=lambda p: abs((p.measured_median or 0.0) - (p.predicted_median or 0.0)),
        )
        lines = [
            f"{said}; the most off: {off.part} ({off.measured_median or 0.0:.1f} ms against "
            f"{off.predicted_median or 0.0:.1f} ms): the cost model is off"
        ]
    waited, foreseen = queueing.measured_median or 0.0, queueing.predicted_median or 0.0
    total = model.measured_median + waited
    if total > 0 and waited / total > BUSY_SHARE:
        lines.append(
            f"queueing: requests waited {waited:.1f} ms (median; {foreseen:.1f} ms "
            f"predicted from the queue depths at planning), {100 * waited / total:.0f}% of "
            "the time: a busy fleet (requests in flight queue behind each other), not a "
            "wrong cost model"
        )
    else:
        lines.append(
            f"queueing: requests waited {waited:.1f} ms (median; {foreseen:.1f} ms "
            "predicted): the fleet kept up"
        )
    return lines


def _num(value: float | None, digits: int) -> str:
    """A figure with ``digits`` decimals and thousands separators; ``-`` when unknown."""
    return "-" if value is None else f"{value:,.{digits}f}"


def _time(epoch_ms: float) -> str:
    moment = datetime.fromtimestamp(epoch_ms / 1000, tz=UTC)
    return moment.isoformat(sep=" ", timespec="milliseconds").replace("+00:00", " UTC")
