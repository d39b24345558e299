"""Is a split answer the unsplit model's answer? By the rule that fits, said out loud.

Chained shards give the same bits as the unsplit model only when they run the same
way: the same runtime (and version), the same kernel set (LiteRT's builtin kernels or
XNNPACK) and the same CPU architecture. ARM64 and x86 kernels differ in the last bits
(an emulated Raspberry Pi's answers to the digits model were within 1.2e-7 of x86's,
none identical), and so does LiteRT.js's wasm build. So:

- **bit-identical** when every stage ran with the reference run's runtime, kernels and
  architecture (as each agent's status says them);
- otherwise **within the tolerance** stated for the variant (:data:`TOLERANCES`):
  float32 and float16 by an absolute and a relative bound, int8 by at most one
  quantization step; the arg-max (top-1 class) must be equal in every case.

An agent whose status does not say its architecture and kernels (an older agent) is
held to the tolerance: nothing says its bits should be the reference's.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np

from splitmq.wire import AgentStatus


@dataclass(frozen=True)
class ComputeKind:
    """What decides the bits a shard produces: architecture, runtime and kernel set."""

    machine: str
    runtime: str
    runtime_version: str
    kernels: str

    @classmethod
    def of(cls, status: AgentStatus | None) -> ComputeKind | None:
        """An agent's, from its status; None when the status does not say it."""
        if status is None or not status.machine or not status.kernels:
            return None
        return cls(status.machine, status.runtime, status.runtime_version, status.kernels)

    def __str__(self) -> str:
        return f"{self.machine} {self.runtime} {self.runtime_version} {self.kernels}"


def reference_kind(*, xnnpack: bool = False) -> ComputeKind:
    """The unsplit model run here by ``splitmq.converter.runner`` (LiteRT, builtin
    kernels unless ``xnnpack``), named as an agent here would name it in its status."""
    from splitmq.agent.runtime import RuntimeKind, find_runtime

    runtime = find_runtime(RuntimeKind.LITERT)
    return ComputeKind(
        platform.machine(),
        str(runtime.kind),
        runtime.version,
        "xnnpack" if xnnpack else "builtin",
    )


class Rule(StrEnum):
    IDENTICAL = "bit-identical"
    TOLERANCE = "within tolerance"


@dataclass(frozen=True)
class Tolerance:
    """How far an answer computed another way may be from the reference.

    Attributes:
        atol: absolute bound on every value (float outputs).
        rtol: relative bound, times the reference value's magnitude (float outputs).
        steps: at most this many quantization steps apart (integer outputs).
    """

    atol: float = 0.0
    rtol: float = 0.0
    steps: int = 0

    def __str__(self) -> str:
        return f"|d| <= {self.atol:.0e} + {self.rtol:.0e}*|ref|, int <= {self.steps} step"


FLOAT_BOUNDS = {"atol": 1e-6, "rtol": 1e-5}
TOLERANCES: dict[str, Tolerance] = {
    "float32": Tolerance(**FLOAT_BOUNDS, steps=1),
    "float16": Tolerance(**FLOAT_BOUNDS, steps=1),
    "int8": Tolerance(**FLOAT_BOUNDS, steps=1),
}
"""Per variant: float outputs within ``1e-6 + 1e-5 * |reference|``, integer outputs (a
full-integer int8 variant's) at most one quantization step apart. float16 variants
store their weights as float16 and compute in float32, so they get float32's bounds.
Measured across architectures (docs/agent.md): at most 1.3e-7 for the digits model with
a stage on an emulated Raspberry Pi 4, 3.0e-7 with a stage in LiteRT.js's wasm build."""


def rule_for(kinds: Iterable[ComputeKind | None], reference: ComputeKind) -> tuple[Rule, str]:
    """The rule for an answer whose stages ran as ``kinds``, and why."""
    others = sorted(
        {str(k) if k else "unknown (not in its status)" for k in kinds} - {str(reference)}
    )
    if not others:
        return Rule.IDENTICAL, f"every stage ran as the reference ({reference})"
    return Rule.TOLERANCE, f"stages ran as {', '.join(others)}; the reference as {reference}"


@dataclass(frozen=True)
class Comparison:
    """One answer against the reference.

    Attributes:
        rule: the rule applied.
        equal: the answer meets it.
        max_abs_diff: the largest absolute difference over every output (in quantization
            steps for integer outputs).
        argmax_equal: every output's arg-max is the reference's.
    """

    rule: Rule
    equal: bool
    max_abs_diff: float
    argmax_equal: bool


def compare(
    outputs: Mapping[str, np.ndarray],
    expected: Mapping[str, np.ndarray],
    rule: Rule,
    variant: str = "float32",
) -> Comparison:
    """``outputs`` against the reference's ``expected`` by ``rule``."""
    tolerance = TOLERANCES.get(variant, TOLERANCES["float32"])
    equal, argmax_equal, worst = True, True, 0.0
    for name, reference in expected.items():
        answer = np.asarray(outputs[name])
        if answer.shape != reference.shape:
            return Comparison(rule, False, float("inf"), False)
        integer = reference.dtype.kind in "iu"
        wide = np.float64 if not integer else np.int64
        diff = np.abs(answer.astype(wide) - reference.astype(wide))
        worst = max(worst, float(diff.max(initial=0)))
        same_class = bool(np.array_equal(answer.argmax(-1), reference.argmax(-1)))
        argmax_equal &= same_class
        if rule is Rule.IDENTICAL:
            equal &= bool(np.array_equal(answer, reference))
        elif integer:
            equal &= same_class and bool((diff <= tolerance.steps).all())
        else:
            bound = tolerance.atol + tolerance.rtol * np.abs(reference.astype(np.float64))
            equal &= same_class and bool((diff <= bound).all())
    return Comparison(rule, equal, worst, argmax_equal)


@dataclass
class Tally:
    """Comparisons over a run, for its report: how many met their rule, by which rule,
    and the largest difference seen."""

    variant: str = "float32"
    counts: dict[Rule, list[int]] = field(default_factory=dict)
    """rule → [answers, of them equal]"""
    worst: float = 0.0
    reasons: set[str] = field(default_factory=set)

    def add(self, comparison: Comparison, reason: str = "") -> None:
        seen = self.counts.setdefault(comparison.rule, [0, 0])
        seen[0] += 1
        seen[1] += comparison.equal
        self.worst = max(self.worst, comparison.max_abs_diff)
        if reason and comparison.rule is Rule.TOLERANCE:
            self.reasons.add(reason)

    @property
    def total(self) -> int:
        return sum(n for n, _ in self.counts.values())

    @property
    def equal(self) -> int:
        return sum(ok for _, ok in self.counts.values())

    def lines(self) -> list[str]:
        """A line per rule applied, then the largest difference."""
        out = []
        for rule, (total, ok) in sorted(self.counts.items()):
            how = (
                "bit-identical to the unsplit model"
                if rule is Rule.IDENTICAL
                else f"within the {self.variant} tolerance "
                f"({TOLERANCES.get(self.variant, TOLERANCES['float32'])}, "
                "arg-max equal)"
            )
            out.append(f"{ok}/{total} {how}")
        out.extend(f"  tolerance because {reason}" for reason in sorted(self.reasons))
        out.append(f"largest difference from the unsplit model: {self.worst:.3g}")
        return out


def check(
    outputs: Mapping[str, np.ndarray],
    expected: Mapping[str, np.ndarray],
    *,
    stage_agents: Iterable[str],
    status_of: Callable[[str], AgentStatus | None],
    reference: ComputeKind,
    variant: str = "float32",
) -> tuple[Comparison, str]:
    """An answer against the reference by the rule its stages' agents call for (their
    statuses: ``Client.agent_status``); the comparison and why that rule."""
    rule, reason = rule_for((ComputeKind.of(status_of(a)) for a in stage_agents), reference)
    return compare(outputs, expected, rule, variant), reason


class ReferenceRun:
    """The unsplit model run here (LiteRT, builtin kernels, one thread), to hold a run's
    answers against: ``splitmq infer --reference model.tflite``.

    Only array inputs of a one-input model are compared (an image is resized by the
    client first: :attr:`skipped` counts what was not compared).
    """

    def __init__(self, model: bytes):
        from splitmq.agent.runtime import RuntimeKind, find_runtime

        self._shard = find_runtime(RuntimeKind.LITERT).load(model, threads=1, xnnpack=False)
        self.kind = reference_kind()
        self.tally = Tally()
        self.skipped = 0

    def add(
        self,
        outputs: Mapping[str, np.ndarray],
        value: object,
        *,
        variant: str,
        stage_agents: Iterable[str],
        status_of: Callable[[str], AgentStatus | None],
    ) -> Comparison | None:
        """Compare one answer to ``value``; None when it cannot be compared."""
        if not isinstance(value, np.ndarray) or len(self._shard.inputs) != 1:
            self.skipped += 1
            return None
        (spec,) = self._shard.inputs
        tensors, _ = self._shard.run({spec.name: value.reshape(spec.shape).astype(spec.dtype)})
        self.tally.variant = variant
        comparison, reason = check(
            outputs,
            {t.name: t.array for t in tensors},
            stage_agents=stage_agents,
            status_of=status_of,
            reference=self.kind,
            variant=variant,
        )
        self.tally.add(comparison, reason)
        return comparison

    def lines(self) -> list[str]:
        skipped = [f"{self.skipped} not compared (not an array input)"] if self.skipped else []
        return [f"against the unsplit model here ({self.kind}):", *self.tally.lines(), *skipped]
