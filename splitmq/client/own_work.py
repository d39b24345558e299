"""The client's own work per request, as the planner should count it: from the call to
the input's send, and from the result's arrival to the answer. The client measures it
on its requests and says it in its plan requests (``PlanRequest.client_ms``)."""

from __future__ import annotations

WEIGHT = 0.1
"""Weight of the newest sample in each smoothed part."""


class OwnWork:
    """The two parts, smoothed; only touched under the client's lock."""

    def __init__(self) -> None:
        self._send_ms: float | None = None
        self._answer_ms: float | None = None

    def sent(self, ms: float) -> None:
        """A request's input left ``ms`` after its call (it had its plan at once)."""
        self._send_ms = _smoothed(self._send_ms, ms)

    def answered(self, ms: float) -> None:
        """A result was read and its request answered ``ms`` after it arrived."""
        self._answer_ms = _smoothed(self._answer_ms, ms)

    @property
    def ms(self) -> float | None:
        """Both parts; None until each was measured once."""
        if self._send_ms is None or self._answer_ms is None:
            return None
        return self._send_ms + self._answer_ms


def _smoothed(previous: float | None, sample: float) -> float:
    sample = max(0.0, sample)
    return sample if previous is None else previous + WEIGHT * (sample - previous)
