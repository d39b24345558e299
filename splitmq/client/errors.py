"""The client's errors: every request that does not end in a result ends in one of these.

::

    SplitMQError
    ├── InputError                an input that cannot be loaded or fitted to the model
    └── InferenceError            a request failed; ``record`` holds every attempt
        ├── PlanRefusedError      the coordinator found no plan within the constraints
        └── DeadlineError         the deadline cannot be met (or passed)

``InferenceError.code`` says why, in one word: an :class:`~splitmq.wire.ErrorCode` an
agent sent (``shape_mismatch``...) or one of the client's own reasons below.
"""

from __future__ import annotations

from splitmq.client.records import RequestRecord
from splitmq.errors import SplitMQError

ATTEMPTS_SPENT = "attempts_spent"
"""Every attempt allowed failed (``ClientConfig.max_attempts``)."""
DEADLINE = "deadline"
"""The deadline passed, or what remains of it is below the plan's predicted latency."""
NO_PLAN = "no_plan"
"""No coordinator answered the plan request in time, or the deployment is unknown."""
PLAN_REFUSED = "plan_refused"
"""The coordinator refused: no route meets the constraints."""
BAD_INPUT = "bad_input"
"""The input does not fit the model's input tensors (checked before sending)."""
SEND_FAILED = "send_failed"
"""The input cannot be published (larger than the broker accepts)."""
CLOSED = "closed"
"""The client was closed while the request was in flight."""


class InputError(SplitMQError):
    """An input that cannot be read, or fitted to a tensor the model reads.

    Attributes:
        source: the file or input name it came from, when known.
    """

    def __init__(self, message: str, *, source: str | None = None):
        self.source = source
        super().__init__(f"{source}: {message}" if source else message)


class InferenceError(SplitMQError):
    """A request that finally failed, with the reason of every attempt.

    Attributes:
        record: the request as the client saw it: ``record.attempts`` lists each
            attempt's route, outcome and message; ``record.error_code`` is ``code``.
        code: why it failed (an agent's error code, or one of this module's constants).
        reason: the last reason, in words.
        index: the position of the input in :meth:`Client.stream`, else None.
    """

    def __init__(self, record: RequestRecord, code: str, reason: str):
        self.record = record
        self.code = code
        self.reason = reason
        self.index: int | None = None
        super().__init__(describe(record, code, reason))


class PlanRefusedError(InferenceError):
    """No plan meets the request's constraints.

    Attributes:
        constraint: the constraint that failed (``max_latency_ms``, ``min_fidelity``,
            ``energy_j``, ``model``, ``battery``).
        refusal: the coordinator's explanation, with what to do.
    """

    def __init__(self, record: RequestRecord, constraint: str, refusal: str):
        self.constraint = constraint
        self.refusal = refusal
        super().__init__(
            record,
            PLAN_REFUSED,
            f"the coordinator refused a plan ({constraint}): {refusal}",
        )


class DeadlineError(InferenceError):
    """The request's deadline passed, or cannot be met by the plan's predicted latency."""

    def __init__(self, record: RequestRecord, reason: str):
        super().__init__(record, DEADLINE, reason)


def describe(record: RequestRecord, code: str, reason: str) -> str:
    """One message: the request, the final reason, then one line per attempt."""
    attempts = len(record.attempts)
    head = (
        f"request {record.request_id} to {record.model} failed ({code}) after "
        f"{attempts} attempt{'s' if attempts != 1 else ''}: {reason}"
    )
    lines = [head]
    for attempt in record.attempts:
        via = " > ".join(attempt.route) or "-"
        detail = f": {attempt.message}" if attempt.message else ""
        lines.append(f"  attempt {attempt.attempt} via {via}: {attempt.outcome}{detail}")
    return "\n".join(lines)
