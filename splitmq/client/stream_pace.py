"""The period between a stream's results, which the client paces its acknowledgements by.

In a stream (several requests in flight) a result comes every period, and the client
writes its next request soon after each. The broker's PUBACK of that request then comes
alone, and the client's network thread was woken for it on its own, about once a
request. Told the period (:meth:`splitmq.transport.Transport.pace_acks`), the connection
lets that acknowledgement wait to be read with the next result, and holds a result's
PUBACK until the next request carries it, as an agent does with its stage-time. A client
asking one request at a time has no period: it keeps the configured deadlines.
"""

from __future__ import annotations

from splitmq.recent import RecentMedian

WINDOW = 15
"""Gaps between results the period is the median of (a result that waited for a core
does not move it)."""
EVERY = 4
"""Gaps between two readings of the median: the period is a stream's, not a request's."""
CHANGE = 0.25
"""How far the period moves, as a share of the one told, before it is told again."""


class StreamPace:
    """The stream's period from its results' arrival; only touched under the client's
    lock."""

    def __init__(self) -> None:
        self._gaps = RecentMedian(WINDOW)
        self._last_s: float | None = None
        self._since_reading = 0
        self._gapped = False  # a gap was added since the last stream ended
        self._told_s = 0.0

    def result(self, arrived_s: float, in_flight: int) -> float | None:
        """A result arrived at ``arrived_s`` (monotonic seconds), with ``in_flight`` other
        requests still out. The period to pace by when it should be told, else None.

        A gap counts only when the result before it came with others still out: the next
        result was already on its way, so the gap is the stream's, not the caller's
        pause between two requests. Two results in a row with nothing else out are one
        request at a time: the period told is then 0 (the configured deadlines), and the
        next stream is measured afresh. A stream whose window empties for a moment (its
        caller slower than its stages) keeps its period."""
        last, self._last_s = self._last_s, arrived_s if in_flight else None
        if last is None:
            if in_flight:
                return None  # a stream's first result, or its first since a lull
            if self._gapped:
                self._gaps, self._since_reading, self._gapped = RecentMedian(WINDOW), 0, False
            if not self._told_s:
                return None  # already told
            self._told_s = 0.0
            return 0.0
        self._gaps.add(max(0.0, arrived_s - last))
        self._gapped = True
        self._since_reading += 1
        if self._since_reading < EVERY:
            return None
        self._since_reading = 0
        period = self._gaps.ms or 0.0
        if abs(period - self._told_s) <= CHANGE * self._told_s:
            return None  # 0 told and 0 measured is no change either
        self._told_s = period
        return period
