"""The client's own work per request: both parts, each the median of the last requests."""

from __future__ import annotations

import pytest

from splitmq.client.own_work import WINDOW, OwnWork


def test_nothing_until_both_parts_are_measured_then_their_sum() -> None:
    own = OwnWork()
    assert own.ms is None
    own.sent(1.0)
    assert own.ms is None, "the answer's part is not measured yet"
    own.answered(0.5)
    assert own.ms == pytest.approx(1.5)
    own.sent(1.0)
    own.sent(11.0)  # one slow send among three does not move the figure
    assert own.ms == pytest.approx(1.5)
    own.answered(-3.0)  # a clock step backwards is no negative work: 0 and 0.5
    assert own.ms == pytest.approx(1.0 + 0.25)


def test_each_part_is_the_median_of_the_last_window() -> None:
    own = OwnWork()
    for _ in range(WINDOW):
        own.sent(5.0)
        own.answered(1.0)
    for _ in range(WINDOW):  # a lasting change replaces the window
        own.sent(2.0)
    assert own.ms == pytest.approx(3.0)
