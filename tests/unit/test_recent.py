"""The median of the last few measurements (``splitmq.recent``)."""

from __future__ import annotations

from splitmq.recent import RecentMedian


def test_nothing_before_the_first_sample() -> None:
    assert RecentMedian(5).ms is None


def test_median_of_odd_and_even_counts() -> None:
    recent = RecentMedian(5)
    recent.add(3.0)
    assert recent.ms == 3.0
    recent.add(1.0)
    assert recent.ms == 2.0
    recent.add(10.0)
    assert recent.ms == 3.0


def test_only_the_window_counts_and_reset_starts_over() -> None:
    recent = RecentMedian(3)
    for value in (100.0, 100.0, 1.0, 2.0, 3.0):
        recent.add(value)
    assert recent.ms == 2.0
    recent.reset(7.0)
    assert recent.ms == 7.0
