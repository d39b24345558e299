"""The stream's period, which the client paces its acknowledgements by: told once it is
measured, again only when it moves, and 0 once the stream ends."""

from __future__ import annotations

import pytest

from splitmq.client.stream_pace import CHANGE, EVERY, WINDOW, StreamPace


def arrivals(pace: StreamPace, times_ms: list[float], in_flight: int) -> list[float | None]:
    """What the pace says at each arrival, in ms (None: nothing to tell)."""
    told = [pace.result(at / 1000.0, in_flight) for at in times_ms]
    return [None if period is None else round(period * 1000.0, 3) for period in told]


def test_one_request_at_a_time_has_no_period_to_tell() -> None:
    pace = StreamPace()
    assert arrivals(pace, [0.0, 30.0, 60.0, 90.0, 120.0, 150.0], in_flight=0) == [None] * 6


def test_a_stream_is_told_its_period_once_measured_and_again_only_when_it_moves() -> None:
    pace = StreamPace()
    steady = [10.0 * i for i in range(EVERY + 1)]  # EVERY gaps of 10 ms
    assert arrivals(pace, steady, in_flight=3) == [None] * EVERY + [10.0]
    jitter = [steady[-1] + 10.0 * (1 + CHANGE / 2) * i for i in range(1, 2 * WINDOW)]
    assert set(arrivals(pace, jitter, in_flight=3)) == {None}, "inside the change: untold"
    slower = [jitter[-1] + 20.0 * i for i in range(1, 2 * WINDOW)]
    told = [period for period in arrivals(pace, slower, in_flight=3) if period is not None]
    assert told[-1] == pytest.approx(20.0), "a lasting change is told"


def test_one_request_at_a_time_after_a_stream_tells_zero_and_the_next_is_measured_afresh() -> None:
    pace = StreamPace()
    assert arrivals(pace, [8.0 * i for i in range(2 * WINDOW)], in_flight=2)[EVERY] == 8.0
    end = 8.0 * 2 * WINDOW
    assert arrivals(pace, [end], in_flight=0) == [None], "a stream's last result: kept"
    assert arrivals(pace, [end + 500.0], in_flight=0) == [0.0], "two alone in a row"
    assert arrivals(pace, [end + 1000.0], in_flight=0) == [None], "already told"
    quicker = [2000.0 + 3.0 * i for i in range(EVERY + 1)]
    assert arrivals(pace, quicker, in_flight=2) == [None] * EVERY + [3.0], (
        "the last stream's gaps are not in the new median"
    )


def test_a_window_that_empties_for_a_moment_keeps_the_period() -> None:
    """A caller slower than the stages: now and then every result is in before it asks
    again. The stream goes on; its period is not dropped and told again."""
    pace = StreamPace()
    told: list[float | None] = []
    for burst in range(6):
        start = 100.0 * burst
        told += arrivals(pace, [start + 10.0 * i for i in range(3)], in_flight=1)
        told += arrivals(pace, [start + 30.0], in_flight=0)
    assert [period for period in told if period is not None] == [10.0]


def test_a_pause_between_requests_is_not_a_gap() -> None:
    """A result that came with nothing else out starts no gap: the next one was asked
    for after it, whenever the caller chose."""
    pace = StreamPace()
    told: list[float | None] = []
    for start in (0.0, 500.0, 1000.0, 1500.0, 2000.0, 2500.0):
        told += arrivals(pace, [start], in_flight=1)  # one of two results
        told += arrivals(pace, [start + 4.0], in_flight=0)  # the other: nothing left
    assert told == [None] * 7 + [4.0] + [None] * 4, (
        "the fourth gap is read: only the 4 ms between two results out together count"
    )


def test_a_clock_step_backwards_is_a_gap_of_zero() -> None:
    pace = StreamPace()
    told = arrivals(pace, [100.0, 90.0, 80.0, 70.0, 60.0], in_flight=1)
    assert told == [None] * 5, "a period of 0 is no change from the configured deadlines"
