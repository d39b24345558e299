"""The report for task requests: which member and variant served each, as a table and
as the accuracy/latency/energy trade-off plot."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from splitmq.client import plots
from splitmq.client.kpi import ReportInputs
from splitmq.client.records import RequestRecord
from splitmq.client.report_cli import format_report
from splitmq.client.task_kpi import member_kpis
from tests.client.records_fixtures import BASE_MS, Hop, failed_record, ok_record
from tests.client.test_plots import assert_drawn
from tests.helpers import needs


def served(
    request_id: str, sent_ms: float, model: str, variant: str, *, accuracy: float, compute_ms: float
) -> RequestRecord:
    """A task request served by ``model`` ``variant``: one stage of ``compute_ms``, energy
    1 mJ per ms of compute."""
    hop = Hop("phone-1", 0.5, 0.0, compute_ms, energy_j=compute_ms / 1000)
    record = ok_record(request_id, sent_ms, [hop], 0.5, predicted_energy_j=compute_ms / 1000)
    return replace(record, task="digits", model=model, variant=variant, accuracy=accuracy)


def task_run() -> list[RequestRecord]:
    """Six requests on the large member, then (the battery falling) four on the small
    one; a model request and a failed task request that no member served."""
    records = [
        served(f"l{i}", BASE_MS + 10 * i, "digits-large", "float32", accuracy=0.973, compute_ms=4.0)
        for i in range(6)
    ]
    records += [
        served(
            f"s{i}", BASE_MS + 100 + 10 * i, "digits-small", "int8", accuracy=0.787, compute_ms=1.0
        )
        for i in range(4)
    ]
    records.append(ok_record("m0", BASE_MS + 200, [Hop("pi-1", 1, 0, 2)], 1))
    records.append(
        replace(failed_record("f0", BASE_MS + 300, BASE_MS + 301, "plan_refused"), task="digits")
    )
    return records


def test_what_each_member_served() -> None:
    large, small = member_kpis(task_run())
    assert (large.model, large.variant, large.requests) == ("digits-large", "float32", 6)
    assert (small.model, small.variant, small.requests) == ("digits-small", "int8", 4)
    assert large.share == pytest.approx(0.6) and small.share == pytest.approx(0.4)
    assert large.accuracy == 0.973 and small.accuracy == 0.787
    assert large.latency_p50_ms == pytest.approx(5.0)  # 0.5 + 4 + 0.5
    assert small.latency_p50_ms == pytest.approx(2.0)
    assert large.energy_per_inference_j == pytest.approx(0.004)
    assert small.energy_per_inference_j == pytest.approx(0.001)


def test_the_report_has_a_table_of_the_members() -> None:
    text = format_report(ReportInputs(tuple(task_run())).kpis(), source="results.db")
    table = text.split("\n\n")[-1].splitlines()
    assert table[0].split() == [
        "task",
        "member",
        "variant",
        "requests",
        "share",
        "%",
        "accuracy",
        "p50",
        "ms",
        "p95",
        "ms",
        "energy",
        "mJ/inference",
    ]
    assert table[2].split() == [
        "digits",
        "digits-large",
        "float32",
        "6",
        "60",
        "0.973",
        "5.00",
        "5.00",
        "4.000",
    ]
    assert table[3].split()[:6] == ["digits", "digits-small", "int8", "4", "40", "0.787"]


def test_a_report_without_task_requests_has_no_member_table() -> None:
    records = [r for r in task_run() if not r.task]
    text = format_report(ReportInputs(tuple(records)).kpis())
    assert not any(line.startswith("task  ") for line in text.splitlines())


@needs("matplotlib", "client")
def test_the_tradeoff_plot(tmp_path: Path) -> None:
    written = plots.write_plots(ReportInputs(tuple(task_run())), tmp_path)
    assert written[-1].name == plots.TASK_TRADEOFF
    assert_drawn(written[-1])
