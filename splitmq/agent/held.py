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

from splitmq.recent import RecentMedian

WINDOW = 15
"""Requests whose time the median is taken over: a change of speed shows after eight."""


def held_time() -> RecentMedian:
    """A stage's held time, empty."""
    return RecentMedian(WINDOW)
