"""The client's own work per request: both parts, each smoothed."""

from __future__ import annotations

import pytest

from splitmq.client.own_work import WEIGHT, OwnWork


def test_nothing_until_both_parts_are_measured_then_their_smoothed_sum() -> None:
    own = OwnWork()
    assert own.ms is None
    own.sent(1.0)
    assert own.ms is None, "the answer's part is not measured yet"
    own.answered(0.5)
    assert own.ms == pytest.approx(1.5)
    own.sent(11.0)  # one slow send moves the figure by WEIGHT of the difference
    assert own.ms == pytest.approx(1.0 + WEIGHT * 10.0 + 0.5)
    own.answered(-3.0)  # a clock step backwards is no negative work
    assert own.ms == pytest.approx(1.0 + WEIGHT * 10.0 + 0.5 * (1 - WEIGHT))
