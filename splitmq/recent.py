"""The median of the last few measurements: what a figure the planner predicts from is
taken as, where a measurement now and then is far off (a busy host, a cold cache).

A smoothed mean follows its last few samples (with a weight of 0.2, the last five): a
few slow ones move it by as much as they are off. The median of a window ignores up to
half the window's samples, and a lasting change still shows once half the window has
seen it.
"""

from __future__ import annotations

import statistics
from collections import deque


class RecentMedian:
    """The last ``window`` samples and their median.

    ``add`` and ``ms`` may run on different threads: the samples are read through
    ``deque.copy``, which no append interrupts.
    """

    __slots__ = ("_samples",)

    def __init__(self, window: int):
        self._samples: deque[float] = deque(maxlen=window)

    def add(self, sample: float) -> None:
        self._samples.append(sample)

    def reset(self, first: float) -> None:
        """Start over from one figure (a benchmark, before anything was measured)."""
        self._samples.clear()
        self._samples.append(first)

    @property
    def ms(self) -> float | None:
        """The median of the samples kept, None before the first."""
        samples = self._samples.copy()
        return statistics.median(samples) if samples else None
