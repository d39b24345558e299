"""The per-request pick among a stage's replicas (splitmq.client.spread), as a table and
as a simulated stream: replicas serve requests one at a time, the client keeps a window
in flight, and the spread must reach the replicas' summed capacity."""

from __future__ import annotations

import heapq

import pytest

from splitmq.client.routes import Knowledge
from splitmq.client.spread import Spread
from splitmq.wire import Battery, Telemetry, TraceEntry


def entry(stage: int, agent_id: str, received_ms: float, started_ms: float, finished_ms: float):
    return TraceEntry(stage, agent_id, received_ms, started_ms, finished_ms)


def test_nothing_known_takes_turns_in_the_plans_order() -> None:
    spread = Spread()
    picks = []
    for _ in range(4):
        route = spread.pick("d", (("a", "a2", "a3"),))
        spread.sent("d", route)
        picks.append(route[0][0])
    assert picks == ["a", "a2", "a3", "a"]


def test_the_service_time_leaves_out_the_queue_and_counts_the_way_in_and_out() -> None:
    spread = Spread()
    # sent at 0: a receives at 1, waits to 11, runs to 21; b receives at 22 ... client at 40
    trace = (entry(0, "a", 1, 11, 21), entry(1, "b", 22, 22, 30))
    spread.observe("d", trace, 0.0, 40.0)
    assert spread.service_ms("d", 0, "a") == 1 + 10 + 1
    assert spread.service_ms("d", 1, "b") == 1 + 8 + 10
    skewed = (entry(0, "c", -5, -5, 3),)  # a device whose clock runs behind
    spread.observe("d", skewed, 0.0, 2.0)
    assert spread.service_ms("d", 0, "c") == 8  # transfers clamped at 0


@pytest.mark.parametrize(
    ("service", "in_flight", "best"),
    [
        ({"a": 10.0, "a2": 10.0}, {"a": 1}, "a2"),  # equal: the shorter queue
        ({"a": 10.0, "a2": 30.0}, {}, "a"),  # one at a time: the plan's choice...
        ({"a": 30.0, "a2": 10.0}, {}, "a"),  # ...even when slower (it may save energy)
        ({"a": 10.0, "a2": 30.0}, {"a": 2}, "a2"),  # 3 x 10 = 1 x 30: fewer in flight
        ({"a": 10.0, "a2": 30.0}, {"a": 3}, "a2"),  # 4 x 10 > 30
        ({"a": 10.0, "a2": 30.0}, {"a": 1}, "a"),  # 2 x 10 < 30
        ({"a": 10.0}, {"a": 1}, "a2"),  # never measured: as fast as the fastest
        ({"a": 10.0, "a2": 31.0}, {"a": 2}, "a2"),  # 31 within 15% of 3 x 10: fewer in flight
        ({"a": 10.0, "a2": 35.0}, {"a": 2}, "a"),  # 35 > 1.15 x 30
        ({"a": 10.0, "a2": 21.0}, {"a": 1}, "a2"),  # 21 within 15% of 2 x 10
        ({"a": 10.0, "a2": 11.0}, {"a": 1, "a2": 1}, "a"),  # equal in flight: less delay
    ],
)
def test_the_least_expected_delay_goes_first(
    service: dict[str, float], in_flight: dict[str, int], best: str
) -> None:
    spread = Spread()
    for agent_id, ms in service.items():
        spread.observe("d", (entry(0, agent_id, 0, 0, ms),), 0.0, ms)
    for agent_id, count in in_flight.items():
        for _ in range(count):
            spread.sent("d", ((agent_id,),))
    assert spread.pick("d", (("a", "a2"), ("b",)))[0][0] == best
    assert spread.pick("d", (("a", "a2"), ("b",)))[1] == ("b",)


def test_only_replicas_a_first_attempt_may_use_are_picked() -> None:
    spread = Spread()
    for _ in range(5):
        spread.sent("d", (("a",),))
    route = (("a", "a2", "a3"),)
    assert spread.pick("d", route)[0][0] == "a2"
    assert spread.pick("d", route, Knowledge(failed=((0, "a2"),)))[0] == ("a3", "a", "a2")
    assert spread.pick("d", route, Knowledge(suspects=((0, "a3"),)), dead={"a2"})[0][0] == "a"


def test_an_ended_attempt_is_no_longer_counted() -> None:
    spread = Spread()
    counted = spread.sent("d", (("a",), ("b",)))
    assert spread.in_flight("d", 0, "a") == 1 and spread.in_flight("d", 1, "b") == 1
    spread.ended(counted)
    spread.ended(counted)  # twice is harmless
    assert spread.in_flight("d", 0, "a") == 0 and spread.in_flight("d", 1, "b") == 0


def test_telemetry_gives_a_first_estimate_until_traces_measure() -> None:
    spread = Spread()
    battery = Battery(pct=100.0, plugged=True, simulated=True)
    reported = Telemetry(
        agent_id="a2",
        ts_ms=0,
        period_s=1.0,
        cpu_pct=0.0,
        mem_free_bytes=0,
        battery=battery,
        compute_ms={"d/0": 30.0, "bad": 1.0},
    )
    spread.telemetry(reported)
    assert spread.service_ms("d", 0, "a2") == 30.0
    spread.observe("d", (entry(0, "a2", 0, 0, 5),), 0.0, 5.0)
    assert spread.service_ms("d", 0, "a2") == 5.0


def simulate(stage_ms: dict[str, float], window: int, requests: int) -> tuple[float, float]:
    """A stream of ``requests`` with ``window`` in flight over replicas that serve one
    request at a time in ``stage_ms``: its throughput (requests per ms), and the p95 of
    the time requests queued, in stage-times of the replica that served them."""
    spread = Spread()
    free_at = dict.fromkeys(stage_ms, 0.0)
    finishing: list[tuple[float, int, TraceEntry, float]] = []  # finish, number, trace, sent
    counted: dict[int, tuple[tuple[str, int, str], ...]] = {}
    queued: list[float] = []
    now, sent = 0.0, 0
    for done in range(requests):
        while sent < min(requests, done + window):  # keep the window full
            route = spread.pick("d", (tuple(stage_ms),))
            counted[sent] = spread.sent("d", route)
            agent_id = route[0][0]
            start = max(now, free_at[agent_id])
            free_at[agent_id] = start + stage_ms[agent_id]
            queued.append((start - now) / stage_ms[agent_id])
            trace = entry(0, agent_id, now, start, free_at[agent_id])
            heapq.heappush(finishing, (free_at[agent_id], sent, trace, now))
            sent += 1
        now, number, trace, sent_ms = heapq.heappop(finishing)
        spread.ended(counted.pop(number))
        spread.observe("d", (trace,), sent_ms, now)
    queued.sort()
    return requests / now, queued[int(0.95 * len(queued))]


@pytest.mark.parametrize(
    ("stage_ms", "window"),
    [
        ({"a": 10.0}, 2),
        ({"a": 10.0, "a2": 10.0}, 4),
        ({"a": 10.0, "a2": 10.0, "a3": 10.0}, 6),
        ({"a": 10.0, "a2": 30.0}, 3),
        ({"a": 30.0, "a2": 10.0}, 3),  # the plan prefers the slower one
        ({"a": 10.0, "a2": 31.0}, 3),  # a hair slower than three queued at the faster
        ({"a": 10.0, "a2": 29.0}, 3),
        ({"a": 10.0, "a2": 21.0}, 2),
    ],
)
def test_a_stream_reaches_the_replicas_summed_capacity(
    stage_ms: dict[str, float], window: int
) -> None:
    throughput, queued_p95 = simulate(stage_ms, window, 600)
    capacity = sum(1.0 / ms for ms in stage_ms.values())
    assert throughput >= 0.95 * capacity, (throughput, capacity)
    assert queued_p95 < 2.0
