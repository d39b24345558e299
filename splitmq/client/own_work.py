"""The client's own work per request, as the planner should count it: from the call to
the input's send, and from the result's arrival to the answer. The client measures it
on its requests and says it in its plan requests (``PlanRequest.client_ms``)."""

from __future__ import annotations

from splitmq.recent import RecentMedian

WINDOW = 15
"""Requests each part is the median of (:mod:`splitmq.recent`: a few slow ones, such as
a request whose thread waited for a core, do not move it)."""


class OwnWork:
    """The two parts, each the median of the last requests; only touched under the
    client's lock."""

    def __init__(self) -> None:
        self._send = RecentMedian(WINDOW)
        self._answer = RecentMedian(WINDOW)

    def sent(self, ms: float) -> None:
        """A request's input left ``ms`` after its call (it had its plan at once)."""
        self._send.add(max(0.0, ms))

    def answered(self, ms: float) -> None:
        """A result was read and its request answered ``ms`` after it arrived."""
        self._answer.add(max(0.0, ms))

    @property
    def ms(self) -> float | None:
        """Both parts; None until each was measured once."""
        send, answer = self._send.ms, self._answer.ms
        if send is None or answer is None:
            return None
        return send + answer
