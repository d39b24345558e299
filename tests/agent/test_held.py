"""The time a request holds a stage, as telemetry reports it (``splitmq.agent.held``)."""

from __future__ import annotations

import threading

from splitmq.agent.held import WINDOW, held_time


def test_nothing_held_yet_reports_nothing() -> None:
    assert held_time().ms is None


def test_the_benchmark_at_load_stands_until_requests_run() -> None:
    held = held_time()
    held.reset(4.0)
    assert held.ms == 4.0
    held.add(2.0)
    assert held.ms == 3.0  # the median of two is their mean
    held.add(2.0)
    assert held.ms == 2.0


def test_a_few_slow_requests_do_not_move_the_figure() -> None:
    """The reason for a median: the last requests' outliers (a smoothed mean with a
    weight of 0.2 read 2.88 ms here, 44% above what the stage typically takes)."""
    held = held_time()
    for _ in range(WINDOW - 2):
        held.add(2.0)
    held.add(5.0)
    held.add(4.0)
    assert held.ms == 2.0


def test_a_lasting_change_of_speed_shows_within_half_the_window() -> None:
    held = held_time()
    for _ in range(WINDOW):
        held.add(2.0)
    slower = 0
    while held.ms == 2.0:
        held.add(6.0)
        slower += 1
    assert slower == WINDOW // 2 + 1
    assert held.ms == 6.0


def test_only_the_last_window_counts() -> None:
    held = held_time()
    held.reset(100.0)
    for value in range(WINDOW):
        held.add(float(value))
    assert held.ms == float(WINDOW // 2)


def test_read_while_a_worker_adds() -> None:
    held = held_time()
    held.reset(1.0)
    stop = threading.Event()

    def add() -> None:
        while not stop.is_set():
            held.add(1.0)

    worker = threading.Thread(target=add)
    worker.start()
    try:
        readings = [held.ms for _ in range(20_000)]
    finally:
        stop.set()
        worker.join(10.0)
    assert set(readings) == {1.0}
