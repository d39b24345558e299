"""The model pool manifest: frozen dataclasses and their versioned JSON form.

The converter writes it, the coordinator reads it (to plan and cut), so it lives here,
below both: neither imports the other for it. The format is documented field by field
in ``docs/converter.md``. Readers accept any manifest with ``schema ==
"splitmq/model-manifest"`` and a ``schema_version`` they know; unknown fields are
ignored so that older readers can read newer manifests. Reading one from disk is
:func:`splitmq.converter.load_manifest`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from splitmq.errors import ModelReadError
from splitmq.wire.messages import TensorSpec

__all__ = [
    "SCHEMA",
    "SCHEMA_VERSION",
    "AlignedCutPoint",
    "Branch",
    "Calibration",
    "CutPoint",
    "Evaluation",
    "Fidelity",
    "Manifest",
    "Operator",
    "ParallelSection",
    "Variant",
    "VariantScore",
]

SCHEMA = "splitmq/model-manifest"
SCHEMA_VERSION = 1
CalibrationSource = Literal["file", "synthetic", "none"]


@dataclass(frozen=True)
class Operator:
    """One operator in execution order (see ``splitmq.converter.graph.OperatorInfo``)."""

    index: int
    type: str
    constant: bool
    flops: int
    param_bytes: int
    subgraphs: tuple[int, ...] = ()

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "index": self.index,
            "type": self.type,
            "constant": self.constant,
            "flops": self.flops,
            "param_bytes": self.param_bytes,
        }
        if self.subgraphs:
            data["subgraphs"] = list(self.subgraphs)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Operator:
        return cls(
            int(data["index"]),
            str(data["type"]),
            bool(data["constant"]),
            int(data["flops"]),
            int(data["param_bytes"]),
            tuple(int(s) for s in data.get("subgraphs", ())),
        )


@dataclass(frozen=True)
class CutPoint:
    """A candidate cut point of one variant.

    Attributes:
        position: cut between operator ``position - 1`` and ``position``.
        frontier: the tensors that cross it.
        frontier_bytes: their total size.
        cumulative_flops: FLOPs of operators ``[0, position)``.
        after_layer: the Keras layer it falls after, when known.
    """

    position: int
    frontier: tuple[TensorSpec, ...]
    frontier_bytes: int
    cumulative_flops: int
    after_layer: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "after_layer": self.after_layer,
            "cumulative_flops": self.cumulative_flops,
            "frontier_bytes": self.frontier_bytes,
            "frontier": [t.to_json() for t in self.frontier],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CutPoint:
        return cls(
            position=int(data["position"]),
            frontier=tuple(TensorSpec.from_json(t) for t in data["frontier"]),
            frontier_bytes=int(data["frontier_bytes"]),
            cumulative_flops=int(data["cumulative_flops"]),
            after_layer=data.get("after_layer"),
        )


@dataclass(frozen=True)
class Fidelity:
    """How a variant compares with the float32 reference on the calibration set.

    Attributes:
        samples: samples compared.
        top1_agreement: share of samples whose arg-max (of every output) equals float32's.
        accuracy: share of samples whose first output's arg-max equals the label, when
            labels were given.
        max_abs_diff: largest absolute difference from float32 over all outputs.
        measured_on: where these figures were measured: architecture, runtime and
            version, kernels (``x86_64 litert 2.3.0 builtin``); another architecture's
            kernels give other last bits. None in manifests that predate it.
    """

    samples: int
    top1_agreement: float
    accuracy: float | None
    max_abs_diff: float
    measured_on: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "samples": self.samples,
            "top1_agreement": self.top1_agreement,
            "accuracy": self.accuracy,
            "max_abs_diff": self.max_abs_diff,
        }
        if self.measured_on is not None:
            out["measured_on"] = self.measured_on
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Fidelity:
        accuracy = data.get("accuracy")
        measured_on = data.get("measured_on")
        return cls(
            int(data["samples"]),
            float(data["top1_agreement"]),
            None if accuracy is None else float(accuracy),
            float(data["max_abs_diff"]),
            None if measured_on is None else str(measured_on),
        )


@dataclass(frozen=True)
class Branch:
    """One branch of a parallel section (see ``splitmq.converter.branches``).

    Attributes:
        operators: its live operators, in execution order: cut them as one stage.
        flops, param_bytes: sums over its operators.
        input_bytes: the section's frontier tensors it reads (what it is sent).
        output_bytes: the tensors it produces that others read (what it sends).
    """

    operators: tuple[int, ...]
    flops: int
    param_bytes: int
    input_bytes: int
    output_bytes: int

    def to_json(self) -> dict[str, Any]:
        return {
            "flops": self.flops,
            "param_bytes": self.param_bytes,
            "input_bytes": self.input_bytes,
            "output_bytes": self.output_bytes,
            "operators": list(self.operators),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Branch:
        return cls(
            operators=tuple(int(i) for i in data["operators"]),
            flops=int(data["flops"]),
            param_bytes=int(data["param_bytes"]),
            input_bytes=int(data["input_bytes"]),
            output_bytes=int(data["output_bytes"]),
        )


@dataclass(frozen=True)
class ParallelSection:
    """Operators ``[start, end)`` that fall into two or more independent branches once
    the tensors crossing ``start`` are given; ``start`` is 0 or a cut point, ``end`` a
    cut point or the number of operators (then the model's outputs are the join)."""

    start: int
    end: int
    branches: tuple[Branch, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "start": self.start,
            "end": self.end,
            "branches": [b.to_json() for b in self.branches],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ParallelSection:
        return cls(
            start=int(data["start"]),
            end=int(data["end"]),
            branches=tuple(Branch.from_json(b) for b in data["branches"]),
        )


@dataclass(frozen=True)
class Variant:
    """One ``.tflite`` of the pool entry.

    Attributes:
        name: ``float32``, ``float16`` or ``int8``.
        file: file name inside the entry directory.
        size_bytes, sha256: of that file.
        inputs, outputs: the model's tensors, in the order of its input/output lists.
        operators: every operator in execution order.
        cut_points: every candidate cut point with its frontier.
        cuttable: ``False`` when the cutter refuses this graph (see ``uncuttable_reason``).
        fidelity: against float32 on the calibration set (float32 itself: 1.0).
        parallel_sections: the ranges whose operators fall into independent branches
            (optional on disk: absent in manifests written before, and when empty).
    """

    name: str
    file: str
    size_bytes: int
    sha256: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    operators: tuple[Operator, ...]
    cut_points: tuple[CutPoint, ...]
    cuttable: bool
    uncuttable_reason: str | None
    fidelity: Fidelity | None
    parallel_sections: tuple[ParallelSection, ...] = ()

    @property
    def total_flops(self) -> int:
        return sum(op.flops for op in self.operators)

    def cut_point(self, position: int) -> CutPoint | None:
        for point in self.cut_points:
            if point.position == position:
                return point
        return None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "name": self.name,
            "file": self.file,
            "size_bytes": self.size_bytes,
            "sha256": self.sha256,
            "inputs": [t.to_json() for t in self.inputs],
            "outputs": [t.to_json() for t in self.outputs],
            "cuttable": self.cuttable,
            "uncuttable_reason": self.uncuttable_reason,
            "fidelity": None if self.fidelity is None else self.fidelity.to_json(),
            "operators": [op.to_json() for op in self.operators],
            "cut_points": [c.to_json() for c in self.cut_points],
        }
        if self.parallel_sections:
            data["parallel_sections"] = [s.to_json() for s in self.parallel_sections]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Variant:
        fidelity = data.get("fidelity")
        return cls(
            name=str(data["name"]),
            file=str(data["file"]),
            size_bytes=int(data["size_bytes"]),
            sha256=str(data["sha256"]),
            inputs=tuple(TensorSpec.from_json(t) for t in data["inputs"]),
            outputs=tuple(TensorSpec.from_json(t) for t in data["outputs"]),
            operators=tuple(Operator.from_json(op) for op in data["operators"]),
            cut_points=tuple(CutPoint.from_json(c) for c in data["cut_points"]),
            cuttable=bool(data["cuttable"]),
            uncuttable_reason=data.get("uncuttable_reason"),
            fidelity=None if fidelity is None else Fidelity.from_json(fidelity),
            parallel_sections=tuple(
                ParallelSection.from_json(s) for s in data.get("parallel_sections", ())
            ),
        )


@dataclass(frozen=True)
class AlignedCutPoint:
    """A cut point of the reference variant and where it falls in the others.

    Attributes:
        position: in the reference variant.
        after_layer: Keras layer it falls after, when known.
        cumulative_flops: reference FLOPs before it.
        positions: per variant, the equivalent cut point (``None`` if there is none).
        frontier_bytes: per variant, the frontier's size there (``None`` likewise).
    """

    position: int
    after_layer: str | None
    cumulative_flops: int
    positions: dict[str, int | None]
    frontier_bytes: dict[str, int | None]

    def to_json(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "after_layer": self.after_layer,
            "cumulative_flops": self.cumulative_flops,
            "positions": dict(self.positions),
            "frontier_bytes": dict(self.frontier_bytes),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AlignedCutPoint:
        return cls(
            position=int(data["position"]),
            after_layer=data.get("after_layer"),
            cumulative_flops=int(data["cumulative_flops"]),
            positions={k: None if v is None else int(v) for k, v in data["positions"].items()},
            frontier_bytes={
                k: None if v is None else int(v) for k, v in data["frontier_bytes"].items()
            },
        )


@dataclass(frozen=True)
class Calibration:
    """Where the calibration set came from.

    Attributes:
        source: ``file`` (given by the user), ``synthetic`` (uniform random numbers:
            int8 scales and fidelity figures are then only indicative) or ``none``.
        samples: number of samples.
        sha256: digest of the samples' bytes.
        description: in words (file name, or the synthetic distribution).
    """

    source: CalibrationSource
    samples: int
    sha256: str
    description: str

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "samples": self.samples,
            "sha256": self.sha256,
            "description": self.description,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Calibration:
        source = str(data["source"])
        if source not in ("file", "synthetic", "none"):
            source = "none"
        return cls(source, int(data["samples"]), str(data["sha256"]), str(data["description"]))  # type: ignore[arg-type]


@dataclass(frozen=True)
class VariantScore:
    """How one variant did on the evaluation data.

    Attributes:
        accuracy: share of samples whose first output's arg-max is the label (``None``:
            the data had no labels).
        agreement: share of samples whose arg-max equals the task's reference member's
            (``Evaluation.reference``), when there was one.
    """

    accuracy: float | None
    agreement: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {"accuracy": self.accuracy, "agreement": self.agreement}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> VariantScore:
        accuracy, agreement = data.get("accuracy"), data.get("agreement")
        return cls(
            None if accuracy is None else float(accuracy),
            None if agreement is None else float(agreement),
        )


@dataclass(frozen=True)
class Evaluation:
    """Every variant run on evaluation data (``splitmq evaluate``, or ``--labels``).

    Attributes:
        data: what the data was, in words (file name, or the calibration set).
        sha256: digest of the inputs' bytes.
        samples: number of samples.
        labelled: whether it had labels (then every variant has an accuracy).
        runtime: the runtime that ran the variants (``ai-edge-litert 1.4.0``).
        reference: the task member the agreement is measured against
            (``digits-large/0123abcd float32``), or ``None``.
        variants: by variant name.
    """

    data: str
    sha256: str
    samples: int
    labelled: bool
    runtime: str
    reference: str | None
    variants: dict[str, VariantScore]

    def to_json(self) -> dict[str, Any]:
        return {
            "data": self.data,
            "sha256": self.sha256,
            "samples": self.samples,
            "labelled": self.labelled,
            "runtime": self.runtime,
            "reference": self.reference,
            "variants": {k: v.to_json() for k, v in self.variants.items()},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Evaluation:
        reference = data.get("reference")
        return cls(
            data=str(data["data"]),
            sha256=str(data["sha256"]),
            samples=int(data["samples"]),
            labelled=bool(data["labelled"]),
            runtime=str(data.get("runtime", "")),
            reference=None if reference is None else str(reference),
            variants={k: VariantScore.from_json(v) for k, v in data["variants"].items()},
        )


@dataclass(frozen=True)
class Manifest:
    """Everything known about one model pool entry ``POOL/NAME/VERSION/``.

    Attributes:
        name, version: the entry; ``version`` is derived from the content.
        source_kind, source: what was converted (``keras-application`` ``MobileNetV3Large``).
        inputs, outputs: of the reference variant.
        reference_variant: the variant fidelity is measured against (``float32``).
        calibration: the calibration set.
        labels: whether labels were given (then fidelity has accuracy).
        variants: by name.
        cut_points: the reference variant's cut points aligned across variants.
        created_with: ``splitmq <version>, tensorflow <version>``.
        task: the task this model is a member of (members share inputs and the meaning
            of their outputs), or ``None`` (optional on disk: absent when ``None``).
        evaluation: every variant's accuracy on labelled data (or agreement with the
            task's reference member on unlabelled data), or ``None`` (absent likewise).
    """

    name: str
    version: str
    source_kind: str
    source: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    reference_variant: str
    calibration: Calibration
    labels: bool
    variants: dict[str, Variant]
    cut_points: tuple[AlignedCutPoint, ...]
    created_with: str
    schema_version: int = SCHEMA_VERSION
    task: str | None = None
    evaluation: Evaluation | None = None

    def accuracy(self, variant: str) -> float | None:
        """``variant``'s measured accuracy: on the evaluation data, else on the labelled
        calibration set; ``None`` when unknown (no labels were ever given)."""
        if self.evaluation is not None and self.evaluation.labelled:
            score = self.evaluation.variants.get(variant)
            if score is not None and score.accuracy is not None:
                return score.accuracy
        found = self.variants.get(variant)
        if found is not None and found.fidelity is not None:
            return found.fidelity.accuracy
        return None

    def agreement(self, variant: str) -> float | None:
        """``variant``'s agreement with the task's reference member (unlabelled data)."""
        if self.evaluation is None:
            return None
        score = self.evaluation.variants.get(variant)
        return None if score is None else score.agreement

    def to_json(self) -> dict[str, Any]:
        data = self._core_json()
        if self.task is not None:
            data["task"] = self.task
        if self.evaluation is not None:
            data["evaluation"] = self.evaluation.to_json()
        return data

    def _core_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "schema_version": self.schema_version,
            "name": self.name,
            "version": self.version,
            "source_kind": self.source_kind,
            "source": self.source,
            "created_with": self.created_with,
            "inputs": [t.to_json() for t in self.inputs],
            "outputs": [t.to_json() for t in self.outputs],
            "reference_variant": self.reference_variant,
            "calibration": self.calibration.to_json(),
            "labels": self.labels,
            "cut_points": [c.to_json() for c in self.cut_points],
            "variants": {name: v.to_json() for name, v in self.variants.items()},
        }

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=1, sort_keys=False) + "\n"

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Manifest:
        if data.get("schema") != SCHEMA:
            raise ModelReadError(f"not a splitmq model manifest (schema {data.get('schema')!r})")
        version = data.get("schema_version")
        if not isinstance(version, int) or version > SCHEMA_VERSION or version < 1:
            raise ModelReadError(
                f"manifest schema_version {version!r} is not supported by this splitmq "
                f"(it reads up to {SCHEMA_VERSION}); upgrade splitmq"
            )
        return cls(
            name=str(data["name"]),
            version=str(data["version"]),
            source_kind=str(data["source_kind"]),
            source=str(data["source"]),
            inputs=tuple(TensorSpec.from_json(t) for t in data["inputs"]),
            outputs=tuple(TensorSpec.from_json(t) for t in data["outputs"]),
            reference_variant=str(data["reference_variant"]),
            calibration=Calibration.from_json(data["calibration"]),
            labels=bool(data["labels"]),
            variants={k: Variant.from_json(v) for k, v in data["variants"].items()},
            cut_points=tuple(AlignedCutPoint.from_json(c) for c in data["cut_points"]),
            created_with=str(data.get("created_with", "")),
            schema_version=version,
            task=None if data.get("task") is None else str(data["task"]),
            evaluation=(
                None if data.get("evaluation") is None else Evaluation.from_json(data["evaluation"])
            ),
        )
