"""The time a request holds a stage, as an agent reports it (telemetry's ``compute_ms``).

The planner adds it per stage to a route's latency and multiplies it by a stage's queue
depth, and a client takes it as a replica's first service time. So it must be the
stage's typical time, not its last few requests': it is the median of the last
:data:`WINDOW` requests (the shard's benchmark at load until one has run). A smoothed
mean with a weight of 0.2 per sample, as before, followed the last five requests: a
few slow ones (the host busy with something else for a moment) put every stage of a
plan 15-20% above the requests' median, and the planner's prediction with it.
"""

from __future__ import annotations

from collections import deque

WINDOW = 15
"""Requests whose time the median is taken over: a change of speed shows after eight."""


class HeldTime:
    """The last :data:`WINDOW` times a request held a stage (ms) and their median.

    ``add`` runs on the stage's worker and ``ms`` on the telemetry thread: the samples
    are read through ``deque.copy``, which no append interrupts.
    """

    __slots__ = ("_samples",)

    def __init__(self) -> None:
        self._samples: deque[float] = deque(maxlen=WINDOW)

    def add(self, sample_ms: float) -> None:
        self._samples.append(sample_ms)

    def reset(self, first_ms: float) -> None:
        """Start over from one figure (the shard's benchmark when it is loaded)."""
        self._samples.clear()
        self._samples.append(first_ms)

    @property
    def ms(self) -> float | None:
        """The median of the samples kept, None before the first."""
        ordered = sorted(self._samples.copy())
        count = len(ordered)
        if not count:
            return None
        middle = count // 2
        return ordered[middle] if count % 2 else (ordered[middle - 1] + ordered[middle]) / 2
