"""The join's table on its own, on a clock the test sets: the wait before a branch is
reported missing grows with the usual spread between branches, a missing branch is
reported once, what waits is dropped at the deadline and its bytes released."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from splitmq.agent import join
from splitmq.agent.join import Joins
from splitmq.wire import Activation, ErrorCode, ErrorMessage, StageEdge, Tensor

SOURCES = (StageEdge(1, ("a",)), StageEdge(2, ("b",)))


class Clock:
    def __init__(self) -> None:
        self.ms = 1_000_000.0

    def __call__(self) -> float:
        return self.ms


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(join, "now_ms", clock)
    return clock


def branch(request_id: bytes, source: int, deadline_ms: int = 0) -> Activation:
    return Activation(
        request_id=request_id,
        attempt=0,
        deployment="d",
        stage=3,
        route=((), ("x",), ("y",), ("z",)),
        callback="splitmq/v1/clients/c/result",
        deadline_ms=deadline_ms,
        tensors=(Tensor("a" if source == 1 else "b", np.zeros(4, np.float32)),),
        source=source,
    )


def table(reports: list[ErrorMessage]) -> Joins:
    stopping = threading.Event()
    stopping.set()  # no expiry thread: the test calls the expiry itself
    joins = Joins(
        "j",
        wait_ms=100.0,
        max_bytes=10_000,
        report=lambda _a, e: reports.append(e),
        stopping=stopping,
    )
    return joins


def test_the_wait_grows_with_the_usual_spread_between_branches(clock: Clock) -> None:
    joins = table([])
    first = bytes(16)
    assert joins.offer(SOURCES, branch(first, 1), 100) is None
    clock.ms += 500  # the second branch is usually 500 ms behind
    merged = joins.offer(SOURCES, branch(first, 2), 100)
    assert merged is not None and [t.name for t in merged.tensors] == ["a", "b"]
    second = bytes(15) + b"\x01"
    assert joins.offer(SOURCES, branch(second, 1), 100) is None
    key = ("d", 3, second, 0)
    assert joins._expire(key, clock.ms + 1_000) == []  # 3 x 500 ms not over yet
    found = joins._expire(key, clock.ms + 1_600)
    assert [(a.stage, e.code, e.stage) for a, e in found] == [(3, ErrorCode.BRANCH_MISSING, 2)]
    assert joins._expire(key, clock.ms + 1_700) == []  # reported once


def test_what_waits_is_dropped_at_the_deadline_and_its_bytes_released(clock: Clock) -> None:
    joins = table([])
    request_id = bytes(16)
    deadline = int(clock.ms + 50)
    assert joins.offer(SOURCES, branch(request_id, 1, deadline), 300) is None
    assert joins.held_bytes == 300 and joins.pending() == 1
    found = joins._expire(("d", 3, request_id, 0), clock.ms + 60)
    assert [e.code for _, e in found] == [ErrorCode.BRANCH_MISSING]  # before it drops
    assert joins.held_bytes == 0 and joins.pending() == 0
    assert joins.offer(SOURCES, branch(request_id, 2, deadline), 300) is None  # late
    assert joins.stats.late == 1
