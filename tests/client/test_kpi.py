"""KPIs from hand-built records: every figure checked against the worked-out fixture."""

from __future__ import annotations

import json
from dataclasses import astuple, replace

import numpy as np
import pytest

from splitmq.client.kpi import PartKpi, Summary, compute_kpis, stage_times, telemetry_in_span
from splitmq.client.records import RequestRecord, TelemetrySample
from splitmq.client.report_cli import format_report
from splitmq.wire import StagePrediction
from tests.client.records_fixtures import (
    BASE_MS,
    Hop,
    failed_record,
    ok_record,
    sample_records,
    sample_telemetry,
)

REPORT = compute_kpis(sample_records(), telemetry_in_span(sample_telemetry(), sample_records()))


def test_counts_failures_and_retries() -> None:
    assert (REPORT.requests, REPORT.ok, REPORT.failed) == (7, 5, 2)
    assert REPORT.failures == {"deadline": 1, "overloaded": 1}
    assert (REPORT.retried_requests, REPORT.extra_attempts, REPORT.recovered) == (2, 2, 1)
    assert REPORT.runs == ("demo",)


def test_latency_of_successful_requests_and_throughput() -> None:
    # count, mean, p50, p95, p99, min, max
    assert astuple(REPORT.latency_ms) == pytest.approx((5, 128, 120, 188, 197.6, 80, 200))
    assert (REPORT.first_sent_ms, REPORT.last_finished_ms) == (BASE_MS, BASE_MS + 900)
    assert REPORT.span_s == pytest.approx(0.9)
    assert REPORT.throughput_rps == pytest.approx(5 / 0.9)


# stage, part, count, p50, p95
STAGE_TABLE = [
    (0, "transfer_ms", 5, 10.0, 10.0),  # ok-3's from its retry, not from its first send
    (0, "queueing_ms", 5, 2.0, 2.0),
    (0, "compute_ms", 5, 30.0, 30.0),
    (1, "transfer_ms", 5, 8.0, 8.0),
    (1, "queueing_ms", 5, 1.0, 1.0),
    (1, "compute_ms", 5, 50.0, 124.0),
]


@pytest.mark.parametrize(("stage", "part", "count", "p50", "p95"), STAGE_TABLE)
def test_per_stage_times(stage: int, part: str, count: int, p50: float, p95: float) -> None:
    summary = getattr(REPORT.stages[stage], part)
    assert REPORT.stages[stage].stage == stage
    assert (summary.count, summary.p50, summary.p95) == (count, p50, pytest.approx(p95))


def test_final_hop_and_who_ran_each_stage() -> None:
    assert REPORT.final_hop_ms == Summary(5, 9.0, 9.0, 9.0, 9.0, 9.0, 9.0)
    assert REPORT.stages[0].agents == {"rpi-1": 5}
    assert REPORT.stages[1].agents == {"laptop-1": 1, "phone-1": 4}


# stages, share, requests, energy total and per inference, battery start/end, telemetry J
AGENT_TABLE = {
    "laptop-1": (1, 0.1, 1, 1.0, 0.2, None, None, None),
    "phone-1": (4, 0.4, 4, 1.0, 0.2, 50.0, 50.0, None),
    "rpi-1": (5, 0.5, 5, 2.5, 0.5, 79.5, 78.5, 4.0),
}


@pytest.mark.parametrize("agent_id", AGENT_TABLE)
def test_per_agent_share_energy_and_battery(agent_id: str) -> None:
    agent = {a.agent_id: a for a in REPORT.agents}[agent_id]
    # Every figure is a sum or quotient of exactly representable values: exact floats.
    assert (
        agent.stages_served,
        agent.share,
        agent.requests_served,
        agent.energy_total_j,
        agent.energy_per_inference_j,
        agent.battery_start_pct,
        agent.battery_end_pct,
        agent.telemetry_energy_j,
    ) == AGENT_TABLE[agent_id]
    assert [a.agent_id for a in REPORT.agents] == sorted(AGENT_TABLE)
    assert REPORT.energy_per_inference_j == 0.9


def test_bytes_on_the_wire() -> None:
    wire = REPORT.wire_bytes
    assert wire.client_per_request == pytest.approx(24200 / 7)
    assert (wire.client_sent_total, wire.client_received_total) == (24000, 200)
    assert wire.stages_per_request == 5040
    assert (wire.stages_in_mean, wire.stages_out_mean) == (4000, 1040)
    assert (wire.stages_in_total, wire.stages_out_total) == (20000, 5200)


def test_predicted_against_measured() -> None:
    prediction = REPORT.prediction
    assert (prediction.latency_count, prediction.energy_count) == (5, 3)
    assert prediction.latency_ratio_median == pytest.approx(1.2)
    assert prediction.energy_ratio_median == pytest.approx(1.5)


@pytest.mark.parametrize(
    ("values", "p50", "p95", "p99"),
    [
        ([1.0, 2.0, 3.0, 4.0], 2.5, 3.85, 3.97),  # linear: position (n - 1) * p
        ([7.0], 7.0, 7.0, 7.0),
        (list(range(101)), 50.0, 95.0, 99.0),
    ],
)
def test_percentiles_are_numpy_linear(values: list[float], p50, p95, p99) -> None:
    summary = Summary.of(values)
    assert (summary.p50, summary.p95, summary.p99) == pytest.approx((p50, p95, p99))
    assert summary.p95 == pytest.approx(float(np.percentile(values, 95, method="linear")))


def test_empty_input_gives_zero_counts_and_no_figures() -> None:
    report = compute_kpis([])
    assert (report.requests, report.ok, report.failed, report.failures) == (0, 0, 0, {})
    assert report.latency_ms == Summary()
    assert report.throughput_rps is None and report.span_s is None
    assert report.stages == () and report.agents == ()
    assert report.energy_per_inference_j is None
    assert report.wire_bytes.client_per_request is None
    assert report.prediction.latency_ratio_median is None
    json.dumps(report.to_dict())


def test_a_run_where_everything_failed() -> None:
    records = [
        failed_record("f-0", BASE_MS, BASE_MS + 200, "overloaded", attempts=3),
        failed_record("f-1", BASE_MS + 100, BASE_MS + 400, "shape_mismatch"),
    ]
    report = compute_kpis(records, sample_telemetry())
    assert (report.ok, report.failed) == (0, 2)
    assert report.failures == {"overloaded": 1, "shape_mismatch": 1}
    assert (report.retried_requests, report.extra_attempts, report.recovered) == (1, 2, 0)
    assert report.throughput_rps == 0.0
    assert report.latency_ms.count == 0 and report.latency_ms.p50 is None
    assert report.stages == () and report.final_hop_ms == Summary()
    assert report.energy_per_inference_j is None
    assert report.wire_bytes.client_per_request == 3000
    assert report.wire_bytes.stages_per_request is None
    # Agents still show their battery; no stage was served, so no share.
    assert [(a.agent_id, a.stages_served, a.share) for a in report.agents] == [
        ("phone-1", 0, None),
        ("rpi-1", 0, None),
    ]


def test_a_failure_without_a_code_counts_as_unknown() -> None:
    record = failed_record("f", BASE_MS, BASE_MS + 5, "x")
    assert compute_kpis([replace(record, error_code=None)]).failures == {"unknown": 1}


def test_zero_span_gives_no_throughput() -> None:
    record = ok_record("r", BASE_MS, [], 0)
    assert record.latency_ms == 0
    assert compute_kpis([record]).throughput_rps is None


def test_clock_offset_shows_as_negative_transfer_not_hidden() -> None:
    # The second device's clock runs 15 ms behind: its receipt is before the first's finish.
    record = ok_record("r", BASE_MS, [Hop("a", 5, 0, 10), Hop("b", -15, 1, 10)], 3)
    times = stage_times(record)
    assert [t.transfer_ms for t in times] == [5.0, -15.0]
    assert compute_kpis([record]).stages[1].transfer_ms.p50 == -15.0


def test_restarted_agent_gives_no_telemetry_energy() -> None:
    samples = [
        TelemetrySample("a", 1, 90.0, False, energy_j=50.0),
        TelemetrySample("a", 2, 89.0, False, energy_j=1.0),
    ]
    (agent,) = compute_kpis([], samples).agents
    assert agent.telemetry_energy_j is None
    assert (agent.battery_start_pct, agent.battery_end_pct, agent.telemetry_samples) == (
        90.0,
        89.0,
        2,
    )


def test_telemetry_in_span_keeps_the_run_inclusive() -> None:
    kept = telemetry_in_span(sample_telemetry(), sample_records())
    assert [(s.agent_id, s.ts_ms - int(BASE_MS)) for s in kept] == [
        ("rpi-1", 0),
        ("rpi-1", 500),
        ("rpi-1", 900),
        ("phone-1", 100),
    ]
    assert telemetry_in_span(sample_telemetry(), []) == sample_telemetry()


def test_report_is_plain_json() -> None:
    data = json.loads(json.dumps(REPORT.to_dict()))
    assert data["latency_ms"]["p50"] == 120.0
    assert data["stages"][1]["agents"] == {"laptop-1": 1, "phone-1": 4}
    assert data["failures"] == {"deadline": 1, "overloaded": 1}


def planned(
    request_id: str,
    sent_ms: float,
    hops: list[Hop],
    final_hop_ms: float,
    *,
    predicted: list[tuple[float, float, float]],
    predicted_hop_ms: float,
) -> RequestRecord:
    """A request served on its plan's route, the plan's parts ``(transfer, queueing,
    compute)`` per stage given."""
    record = ok_record(request_id, sent_ms, hops, final_hop_ms)
    parts = tuple(
        StagePrediction(stage, hop.agent_id, *figures)
        for stage, (hop, figures) in enumerate(zip(hops, predicted, strict=True))
    )
    total = sum(sum(figures) for figures in predicted) + predicted_hop_ms
    return replace(
        record,
        predicted_stages=parts,
        predicted_final_hop_ms=predicted_hop_ms,
        predicted_latency_ms=total,
    )


def busy_fleet() -> list[RequestRecord]:
    """The cost model right, requests queueing: stage 0 waits 40 then 80 ms (predicted
    0: the plan was made on an idle fleet), the rest as predicted, give or take 10%."""
    predicted = [(1.0, 0.0, 10.0), (5.0, 0.0, 20.0)]
    return [
        planned(
            f"busy-{i}",
            BASE_MS + 100 * i,
            [Hop("pi", 1.0, wait, 11.0), Hop("phone", 5.0, 0.0, 18.0)],
            2.0,
            predicted=predicted,
            predicted_hop_ms=2.0,
        )
        for i, wait in enumerate([40.0, 80.0])
    ]


def test_the_prediction_is_set_against_what_it_predicts_and_queueing_apart() -> None:
    fallback = replace(busy_fleet()[0], request_id="fallback")
    fallback = replace(
        fallback, trace=(replace(fallback.trace[0], agent_id="laptop"), fallback.trace[1])
    )
    prediction = compute_kpis([*busy_fleet(), fallback]).prediction
    # The fallback ran stage 0 where nothing was predicted: it is left out of the parts.
    parts = {p.part: p for p in prediction.parts}
    assert list(parts) == [
        "stage 0 transfer",
        "stage 0 queueing",
        "stage 0 compute",
        "stage 1 transfer",
        "stage 1 queueing",
        "stage 1 compute",
        "to client",
    ]
    assert parts["stage 0 compute"] == PartKpi("stage 0 compute", 2, 10.0, 11.0, 1.1)
    assert parts["stage 1 compute"] == PartKpi("stage 1 compute", 2, 20.0, 18.0, 0.9)
    assert parts["stage 0 queueing"] == PartKpi("stage 0 queueing", 2, 0.0, 60.0, None)
    # Transfer + compute per request: predicted 1 + 10 + 5 + 20 + 2 = 38, measured 37.
    assert astuple(prediction.cost_model)[:4] == ("transfer + compute", 2, 38.0, 37.0)
    assert prediction.cost_model.ratio_median == pytest.approx(37 / 38)
    assert prediction.queueing == PartKpi("queueing", 2, 0.0, 60.0, None)
    # End to end (all three requests): (37 + 40) / 38, (37 + 80) / 38 and the fallback's.
    assert prediction.latency_ratio_median == pytest.approx(77 / 38)


def test_the_report_tells_a_busy_fleet_from_a_wrong_cost_model() -> None:
    busy = format_report(compute_kpis(busy_fleet()), "results.db", "demo")
    assert (
        "cost model: transfer + compute took 37.0 ms against 38.0 ms predicted (0.97x): it holds"
    ) in busy, busy
    assert (
        "queueing: requests waited 60.0 ms (median; 0.0 ms predicted from the queue depths "
        "at planning), 62% of the time: a busy fleet (requests in flight queue behind each "
        "other), not a wrong cost model"
    ) in busy
    slow = [
        planned(
            f"slow-{i}",
            BASE_MS + 100 * i,
            [Hop("pi", 1.0, 0.5, 30.0), Hop("phone", 5.0, 0.0, 20.0)],
            2.0,
            predicted=[(1.0, 0.0, 10.0), (5.0, 0.0, 20.0)],
            predicted_hop_ms=2.0,
        )
        for i in range(3)
    ]
    wrong = format_report(compute_kpis(slow), "results.db", "demo")
    assert (
        "cost model: transfer + compute took 58.0 ms against 38.0 ms predicted (1.53x); the "
        "most off: stage 0 compute (30.0 ms against 10.0 ms): the cost model is off"
    ) in wrong, wrong
    assert "queueing: requests waited 0.5 ms (median; 0.0 ms predicted): the fleet kept up" in wrong


def test_a_few_ms_off_on_a_fast_path_is_no_wrong_cost_model() -> None:
    quick = [
        planned(
            f"quick-{i}",
            BASE_MS + 100 * i,
            [Hop("pi", 0.8, 0.0, 0.1), Hop("phone", 0.1, 0.0, 0.1)],
            1.5,
            predicted=[(0.5, 0.0, 0.02), (0.0, 0.0, 0.01)],
            predicted_hop_ms=0.5,
        )
        for i in range(3)
    ]
    text = format_report(compute_kpis(quick), "results.db", "demo")
    assert "took 2.6 ms against 1.0 ms predicted (2.52x): it holds" in text, text
