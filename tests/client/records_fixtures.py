"""Hand-built request records with known traces, for the results, KPI and report tests.

:func:`sample_records` is one run whose every KPI is worked out in the comments, so
tests can check figures exactly. Times are whole milliseconds after :data:`BASE_MS`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from splitmq.client.records import AttemptRecord, RequestRecord, TelemetrySample
from splitmq.wire import TraceEntry

BASE_MS = 1_700_000_000_000.0
RUN = "demo"


@dataclass(frozen=True)
class Hop:
    """One stage as a test describes it: who ran it and how long each part took (ms)."""

    agent_id: str
    transfer_ms: float
    queueing_ms: float
    compute_ms: float
    bytes_in: int = 0
    bytes_out: int = 0
    energy_j: float = 0.0


def ok_record(
    request_id: str,
    sent_ms: float,
    hops: Sequence[Hop],
    final_hop_ms: float,
    *,
    retry_after_ms: float | None = None,
    run: str = RUN,
    bytes_sent: int = 3000,
    bytes_received: int = 40,
    predicted_latency_ms: float | None = None,
    predicted_energy_j: float | None = None,
) -> RequestRecord:
    """A successful request whose trace has exactly the given hop times.

    With ``retry_after_ms`` the first attempt was refused (``overloaded``) and the
    second, sent that long after the first, answered.
    """
    attempts = [AttemptRecord(0, tuple(h.agent_id for h in hops), sent_ms, "result")]
    answered_at, attempt = sent_ms, 0
    if retry_after_ms is not None:
        attempts[0] = AttemptRecord(0, attempts[0].route, sent_ms, "overloaded", "queue full")
        answered_at, attempt = sent_ms + retry_after_ms, 1
        attempts.append(AttemptRecord(1, attempts[0].route, answered_at, "result"))
    trace = []
    clock = answered_at
    for stage, hop in enumerate(hops):
        received = clock + hop.transfer_ms
        started = received + hop.queueing_ms
        clock = started + hop.compute_ms
        trace.append(
            TraceEntry(
                stage=stage,
                agent_id=hop.agent_id,
                received_ms=received,
                started_ms=started,
                finished_ms=clock,
                bytes_in=hop.bytes_in,
                attempt=attempt,
                bytes_out=hop.bytes_out,
                energy_j=hop.energy_j,
            )
        )
    return RequestRecord(
        request_id=request_id,
        model="digits",
        sent_ms=sent_ms,
        finished_ms=clock + final_hop_ms,
        ok=True,
        attempts=tuple(attempts),
        version="1",
        variant="int8",
        deployment="digits-1",
        epoch=3,
        bytes_sent=bytes_sent,
        bytes_received=bytes_received,
        predicted_latency_ms=predicted_latency_ms,
        predicted_energy_j=predicted_energy_j,
        trace=tuple(trace),
        top=((7, 0.75), (1, 0.125)),
        run=run,
    )


def failed_record(
    request_id: str,
    sent_ms: float,
    finished_ms: float,
    code: str,
    *,
    attempts: int = 1,
    run: str = RUN,
    bytes_sent: int = 3000,
) -> RequestRecord:
    """A request that failed with ``code`` after ``attempts`` attempts, 10 ms apart."""
    return RequestRecord(
        request_id=request_id,
        model="digits",
        sent_ms=sent_ms,
        finished_ms=finished_ms,
        ok=False,
        attempts=tuple(
            AttemptRecord(i, ("rpi-1", "phone-1"), sent_ms + 10 * i, code, f"{code} at try {i}")
            for i in range(attempts)
        ),
        deployment="digits-1",
        error_code=code,
        error_message=f"gave up: {code}",
        bytes_sent=bytes_sent,
        run=run,
    )


def stage0(transfer_ms: float = 10, queueing_ms: float = 2) -> Hop:
    return Hop("rpi-1", transfer_ms, queueing_ms, 30, 3000, 1000, 0.5)


def stage1(agent_id: str, compute_ms: float, energy_j: float) -> Hop:
    return Hop(agent_id, 8, 1, compute_ms, 1000, 40, energy_j)


def sample_records() -> list[RequestRecord]:
    """Five successes and two failures in run ``demo``; the figures they must give:

    - stage 0 on rpi-1: transfer 10, queueing 2, compute 30 (0.5 J, 3000 B in, 1000 out);
      stage 1: transfer 8, queueing 1, compute 20/40/60/50/140 (phone-1 x4 at 0.25 J,
      laptop-1 x1 at 1.0 J; 1000 B in, 40 out); final hop 9. So a latency is 60 +
      stage 1's compute (+ 30 for ok-3, retried 30 ms after its first send):
      80, 100, 120, 140, 200: mean 128, p50 120, p95 188, p99 197.6.
    - stage 1 compute sorted 20 40 50 60 140: p50 50, p95 124, p99 136.8.
    - failures: overloaded (2 attempts), deadline (1). Retried: ok-3 and fail-0 (2
      extra attempts, 1 recovered).
    - span: first send at 0, last finish at 900 (fail-1): 0.9 s, 5 / 0.9 req/s.
    - energy: rpi-1 2.5 J, phone-1 1.0, laptop-1 1.0: per inference 0.5, 0.2, 0.2, 0.9 all.
    - bytes: client 3040 per success, 6000 + 3000 for the failures (24200 over 7);
      stages 5040 per success.
    - predicted latency 100 everywhere: ratios 0.8 1.0 1.2 1.4 2.0, median 1.2;
      predicted energy 0.5 for ok-0, ok-1, ok-4 (measured 0.75, 0.75, 1.5): median 1.5.
    """
    phone = [20.0, 40.0, 60.0, 50.0]
    records = [
        ok_record(
            f"ok-{i}",
            BASE_MS + 100 * i,
            [stage0(), stage1("phone-1", compute, 0.25)],
            9,
            retry_after_ms=30 if i == 3 else None,
            predicted_latency_ms=100,
            predicted_energy_j=0.5 if i < 2 else None,
        )
        for i, compute in enumerate(phone)
    ]
    records.append(
        ok_record(
            "ok-4",
            BASE_MS + 400,
            [stage0(), stage1("laptop-1", 140, 1.0)],
            9,
            predicted_latency_ms=100,
            predicted_energy_j=0.5,
        )
    )
    records.append(
        failed_record(
            "fail-0", BASE_MS + 500, BASE_MS + 550, "overloaded", attempts=2, bytes_sent=6000
        )
    )
    records.append(failed_record("fail-1", BASE_MS + 600, BASE_MS + 900, "deadline"))
    return records


def sample_telemetry() -> list[TelemetrySample]:
    """rpi-1 every 500 ms from 1 s before the run (79.5 % to 78.5 % and 4 J in the run),
    phone-1 once (plugged)."""
    rpi = [
        TelemetrySample("rpi-1", int(BASE_MS) + t, pct, False, True, 12.5, energy, 1 << 30)
        for t, pct, energy in ((-1000, 80.0, 10.0), (0, 79.5, 12.0), (500, 79.0, 14.0))
    ]
    rpi.append(TelemetrySample("rpi-1", int(BASE_MS) + 900, 78.5, False, True, 40.0, 16.0, 1 << 29))
    return [*rpi, TelemetrySample("phone-1", int(BASE_MS) + 100, 50.0, True, False, 3.0, 1.0, 1)]
