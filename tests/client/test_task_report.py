"""The report for task requests: which member and variant served each, as a table and
as the accuracy/latency/energy trade-off plot."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from splitmq.client import plots
from splitmq.client.kpi import ReportInputs
from splitmq.client.records import RequestRecord
from splitmq.client.report_cli import format_report
from splitmq.client.task_kpi import member_kpis
from splitmq.wire import TaskCandidate
from tests.client.records_fixtures import BASE_MS, Hop, failed_record, ok_record
from tests.client.test_plots import assert_drawn
from tests.helpers import needs

WEIGHED = (  # what each plan weighed: accuracy, predicted ms and J, the constraint missed
    TaskCandidate("digits-large", "7ac2", "float32", 0.973, None, 4.5, 0.0045),
    TaskCandidate("digits-medium", "8e33", "int8", 0.94, None, 1.5, 0.0015),
    TaskCandidate("digits-small", "072a", "int8", 0.787, None, 0.75, 0.0008),
)


def served(
    request_id: str, sent_ms: float, model: str, variant: str, *, accuracy: float, compute_ms: float
) -> RequestRecord:
    """A task request served by ``model`` ``variant``: one stage of ``compute_ms``, energy
    1 mJ per ms of compute; its plan weighed the three members."""
    hop = Hop("phone-1", 0.5, 0.0, compute_ms, energy_j=compute_ms / 1000)
    record = ok_record(request_id, sent_ms, [hop], 0.5, predicted_energy_j=compute_ms / 1000)
    return replace(
        record, task="digits", model=model, variant=variant, accuracy=accuracy, candidates=WEIGHED
    )


def task_run() -> list[RequestRecord]:
    """Six requests on the large member, then (the battery falling) four on the small
    one, whose plans ask min_accuracy 0.95 of the medium one two times out of four; a
    model request and a failed task request that no member served. The medium member
    serves nothing."""
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
    for i in (0, 1):  # the medium member missed the accuracy asked in these plans
        missed = replace(WEIGHED[1], excluded="min_accuracy")
        records[6 + i] = replace(records[6 + i], candidates=(WEIGHED[0], missed, WEIGHED[2]))
    records.append(ok_record("m0", BASE_MS + 200, [Hop("pi-1", 1, 0, 2)], 1))
    records.append(
        replace(failed_record("f0", BASE_MS + 300, BASE_MS + 301, "plan_refused"), task="digits")
    )
    return records


def test_every_member_weighed_with_what_it_served() -> None:
    large, medium, small = member_kpis(task_run())
    assert (large.model, large.variant, large.requests) == ("digits-large", "float32", 6)
    assert (small.model, small.variant, small.requests) == ("digits-small", "int8", 4)
    assert (medium.model, medium.variant, medium.requests) == ("digits-medium", "int8", 0)
    assert large.share == pytest.approx(0.6) and small.share == pytest.approx(0.4)
    assert medium.share == 0.0 and medium.latency_p50_ms is None
    assert (large.accuracy, medium.accuracy, small.accuracy) == (0.973, 0.94, 0.787)
    assert large.latency_p50_ms == pytest.approx(5.0)  # 0.5 + 4 + 0.5
    assert small.latency_p50_ms == pytest.approx(2.0)
    assert large.energy_per_inference_j == pytest.approx(0.004)
    assert small.energy_per_inference_j == pytest.approx(0.001)
    # the planner's figures, for every member, over the ten plans
    assert (large.predicted_latency_ms, medium.predicted_latency_ms) == (4.5, 1.5)
    assert medium.predicted_energy_j == pytest.approx(0.0015)
    assert [m.offered for m in (large, medium, small)] == [10, 10, 10]
    assert medium.excluded == "min_accuracy 2/10" and large.excluded == ""


def test_a_member_served_by_an_older_coordinator_has_its_plans_figures() -> None:
    records = [replace(r, candidates=()) for r in task_run()]
    large, small = member_kpis(records)
    assert (large.offered, large.predicted_latency_ms, small.offered) == (0, None, 0)
    assert large.predicted_energy_j == pytest.approx(0.004)  # from the served plans


def test_without_accuracy_members_rank_by_agreement() -> None:
    weighed = tuple(
        replace(c, accuracy=None, agreement=a) for c, a in zip(WEIGHED, (1, 0.9, 0.8), strict=True)
    )
    records = [replace(r, accuracy=None, candidates=weighed) for r in task_run()[:10]]
    kpis = member_kpis(records)
    assert [m.model for m in kpis] == ["digits-large", "digits-medium", "digits-small"]
    assert all(m.accuracy is None for m in kpis) and kpis[1].agreement == 0.9
    table = format_report(ReportInputs(tuple(records)).kpis()).split("\n\n")[-1]
    assert "unknown (agrees 0.900)" in table


def test_the_report_has_a_table_of_every_member() -> None:
    text = format_report(ReportInputs(tuple(task_run())).kpis(), source="results.db")
    table = text.split("\n\n")[-1].splitlines()
    assert table[0].split() == [
        "task",
        "member",
        "variant",
        "accuracy",
        "predicted",
        "ms",
        "predicted",
        "mJ",
        "requests",
        "share",
        "%",
        "p50",
        "ms",
        "p95",
        "ms",
        "energy",
        "mJ/inference",
        "missed",
    ]
    assert table[2].split() == [
        "digits",
        "digits-large",
        "float32",
        "0.973",
        "4.50",
        "4.500",
        "6",
        "60",
        "5.00",
        "5.00",
        "4.000",
        "-",
    ]
    medium = ["digits", "digits-medium", "int8", "0.940", "1.50", "1.500", "0", "0", "-", "-", "-"]
    assert table[3].split() == [*medium, "min_accuracy", "2/10"]
    assert table[4].split()[:7] == ["digits", "digits-small", "int8", "0.787", "0.75", "0.800", "4"]


def test_a_report_without_task_requests_has_no_member_table() -> None:
    records = [r for r in task_run() if not r.task]
    text = format_report(ReportInputs(tuple(records)).kpis())
    assert not any(line.startswith("task  ") for line in text.splitlines())


@pytest.mark.slow  # seconds of work: the full tier runs it (make test)
@needs("matplotlib", "client")
def test_the_tradeoff_plot_draws_every_member_weighed(tmp_path: Path) -> None:
    from matplotlib.image import imread

    records = task_run()
    every = plots.plot_task_tradeoff(member_kpis(records), records, tmp_path / "every.png")
    assert_drawn(every)
    # without the medium member (it served nothing) the plot is another picture
    records = [
        replace(r, candidates=tuple(c for c in r.candidates if c.model != "digits-medium"))
        for r in task_run()
    ]
    without = plots.plot_task_tradeoff(member_kpis(records), records, tmp_path / "two.png")
    assert not np.array_equal(imread(every), imread(without))
    # never evaluated: drawn against the agreement with the reference member
    weighed = tuple(
        replace(c, accuracy=None, agreement=1.0 - i / 10) for i, c in enumerate(WEIGHED)
    )
    unknown = [replace(r, accuracy=None, candidates=weighed) for r in task_run()]
    assert_drawn(plots.plot_task_tradeoff(member_kpis(unknown), unknown, tmp_path / "agree.png"))
