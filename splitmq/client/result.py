"""What a request that succeeds ends in: an :class:`InferenceResult`.

A request that fails ends in an :class:`~splitmq.client.errors.InferenceError` instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from splitmq.client.inputs import Array, top_classes
from splitmq.client.records import RequestRecord
from splitmq.wire import Plan, TraceEntry


@dataclass(frozen=True)
class InferenceResult:
    """A request's answer.

    Attributes:
        outputs: the model's outputs by tensor name, in the model's output order.
        trace: one entry per stage: the agent that ran it, when, bytes, energy.
        record: the request as recorded (attempts, timing, bytes).
        plan: the plan the request was on when it was answered; for a request naming a
            task, ``plan.model`` and ``plan.variant`` are the member and variant that
            served it (also :attr:`served_by`) and ``plan.accuracy`` its accuracy.
        quantization: ``(scale, zero_point)`` of the quantized outputs, by name.
        index: the input's position in :meth:`Client.stream`, else None.
    """

    outputs: dict[str, Array]
    trace: tuple[TraceEntry, ...]
    record: RequestRecord
    plan: Plan
    quantization: dict[str, tuple[float, int]] = field(default_factory=dict)
    index: int | None = None

    @property
    def latency_ms(self) -> float:
        return self.record.latency_ms

    @property
    def served_by(self) -> tuple[str, str]:
        """``(model, variant)`` that answered: for a task, the member the coordinator chose."""
        return self.plan.model, self.plan.variant

    def top(self, k: int = 5, output: str | None = None) -> tuple[tuple[int, float], ...]:
        """The ``k`` best ``(class, score)`` of an output (the first by default)."""
        name = output or next(iter(self.outputs))
        scale, zero_point = self.quantization.get(name, (None, None))
        return top_classes(self.outputs[name], k, scale, zero_point)
