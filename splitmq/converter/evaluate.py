"""``splitmq evaluate``: measure every variant of a model (or of a task's members) on data.

The data is an ``.npz`` file: ``x`` holds the inputs, one sample per row (a model with
several inputs: one array per input tensor name instead), and ``y``, when present, the
integer labels. Each variant runs on LiteRT, the runtime the agents use (one thread,
builtin kernels: exactly what the chained shards compute), never TensorFlow.

With labels each variant gets its accuracy. Without, accuracy stays unknown and the
manifest says so; a task member's variants then get their *agreement* with the task's
reference member (the most accurate one measured, else the one with the most FLOPs)
on the same data, so members can still be ranked. The result is written into each
entry's ``manifest.json`` as ``evaluation``; the entry's version does not change (it
names the models' bytes, which are the same).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from splitmq.converter.errors import CalibrationError, ModelReadError
from splitmq.converter.fidelity import predict
from splitmq.converter.manifest import MANIFEST_FILE
from splitmq.converter.pool import PoolEntry, open_entry
from splitmq.converter.task import best_accuracy, runtime_name, task_members
from splitmq.wire.manifest import Evaluation, Manifest, VariantScore

__all__ = ["EvaluationData", "evaluate", "evaluate_entries", "load_data"]

log = logging.getLogger("splitmq.converter")


@dataclass(frozen=True)
class EvaluationData:
    """Inputs (batched on axis 0, by input name or ``x``), labels if any, and what it was."""

    inputs: Mapping[str, np.ndarray]
    labels: np.ndarray | None
    description: str

    @property
    def samples(self) -> int:
        return len(next(iter(self.inputs.values())))

    @property
    def sha256(self) -> str:
        hasher = hashlib.sha256()
        for key in sorted(self.inputs):
            hasher.update(np.ascontiguousarray(self.inputs[key]).tobytes())
        if self.labels is not None:
            hasher.update(np.ascontiguousarray(self.labels).tobytes())
        return hasher.hexdigest()


def load_data(path: str | Path) -> EvaluationData:
    """Read an ``.npz`` of ``x`` (or one array per input name) and optional ``y``.

    Raises:
        CalibrationError: not readable, no inputs, or labels that do not fit.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {str(k): np.asarray(archive[k]) for k in archive.files}
    except (OSError, ValueError, AttributeError) as error:
        raise CalibrationError(
            f"cannot read evaluation data {path}: {error}; pass an .npz with the inputs as "
            "x (one sample per row) and the integer labels as y",
            expected=".npz with x and y",
            got=str(path),
        ) from error
    labels = arrays.pop("y", None)
    if not arrays:
        raise CalibrationError(
            f"{path} holds no inputs: save them as x (np.savez(path, x=..., y=...))",
            expected="x",
            got=", ".join(sorted(arrays)) or "nothing",
        )
    return EvaluationData(arrays, labels, path.name)


def evaluate(
    pool_dir: str | Path,
    name: str | None,
    data: str | Path | EvaluationData,
    *,
    task: str | None = None,
    version: str | None = None,
) -> list[PoolEntry]:
    """Evaluate the model ``name`` (or, with ``task``, every member of the task) on
    ``data``; write and return the entries with their new ``evaluation``.

    Raises:
        ModelReadError: no such model, or no member of the task, in the pool.
        CalibrationError: the data does not fit the model's inputs, or its labels.
    """
    loaded = data if isinstance(data, EvaluationData) else load_data(data)
    if task is not None:
        entries = task_members(pool_dir, task)
        if not entries:
            raise ModelReadError(
                f"no member of task {task!r} in the pool {pool_dir}: convert models into it "
                f"with `splitmq convert MODEL --name NAME --task {task} --pool {pool_dir}`",
                path=Path(pool_dir),
            )
        return evaluate_entries(entries, loaded)
    if name is None:
        raise ModelReadError("name a model, or a task with --task", path=Path(pool_dir))
    entry = open_entry(pool_dir, name, version)
    members = task_members(pool_dir, entry.manifest.task) if entry.manifest.task else []
    peers = [e for e in members if e.name != entry.name]
    return evaluate_entries([entry], loaded, peers=peers)


def evaluate_entries(
    entries: Sequence[PoolEntry], data: EvaluationData, *, peers: Sequence[PoolEntry] = ()
) -> list[PoolEntry]:
    """Evaluate ``entries`` on ``data`` and write each one's manifest. Without labels,
    agreement is measured against the reference member among ``entries`` and ``peers``
    (the task's other members), when the entries belong to a task."""
    predictions = {e.name: _predict_all(e, data) for e in entries}
    reference = None
    reference_classes = None
    if data.labels is None and entries[0].manifest.task is not None:
        reference = _reference_member([*entries, *peers])
        variant = _reference_variant(reference)
        if reference.name in predictions:
            reference_classes = predictions[reference.name][variant]
        else:
            reference_classes = _classes(reference, variant, data)
        reference_label = f"{reference.name}/{reference.version} {variant}"
    written = []
    for entry in entries:
        scores = {}
        for variant, classes in predictions[entry.name].items():
            accuracy = None if data.labels is None else float(np.mean(classes == data.labels))
            agreement = (
                None if reference_classes is None else float(np.mean(classes == reference_classes))
            )
            scores[variant] = VariantScore(accuracy=accuracy, agreement=agreement)
        evaluation = Evaluation(
            data=data.description,
            sha256=data.sha256,
            samples=data.samples,
            labelled=data.labels is not None,
            runtime=runtime_name(),
            reference=None if reference is None else reference_label,
            variants=scores,
        )
        written.append(_write(entry, replace(entry.manifest, evaluation=evaluation)))
    return written


def _predict_all(entry: PoolEntry, data: EvaluationData) -> dict[str, np.ndarray]:
    return {v: _classes(entry, v, data) for v in entry.manifest.variants}


def _classes(entry: PoolEntry, variant: str, data: EvaluationData) -> np.ndarray:
    """The arg-max of the first output for every sample, running ``variant`` on LiteRT."""
    manifest = entry.manifest
    samples = _inputs(manifest, data)
    log.info("evaluating %s %s on %d samples", entry.name, variant, data.samples)
    model = entry.variant_path(variant).read_bytes()
    outputs = predict(model, samples, [manifest.outputs[0].name])
    first = outputs[0].reshape(len(outputs[0]), -1)
    return np.asarray(first.argmax(axis=1))


def _inputs(manifest: Manifest, data: EvaluationData) -> dict[str, np.ndarray]:
    specs = manifest.inputs
    if len(specs) == 1 and "x" in data.inputs:
        arrays = {specs[0].name: data.inputs["x"]}
    else:
        missing = [s.name for s in specs if s.name not in data.inputs]
        if missing:
            raise CalibrationError(
                f"the evaluation data lacks inputs {missing} of {manifest.name}: a one-input "
                "model reads x, a model with several one array per input tensor name",
                expected=", ".join(s.name for s in specs),
                got=", ".join(sorted(data.inputs)),
            )
        arrays = {s.name: data.inputs[s.name] for s in specs}
    count = data.samples
    result = {}
    for spec in specs:
        array = arrays[spec.name]
        if tuple(array.shape[1:]) != tuple(spec.shape[1:]) or len(array) != count:
            raise CalibrationError(
                f"evaluation input for {spec.name!r} has shape {array.shape}; {manifest.name} "
                f"reads (N, {', '.join(map(str, spec.shape[1:]))}) {spec.dtype}",
                expected=f"(N, {', '.join(map(str, spec.shape[1:]))})",
                got=str(array.shape),
            )
        result[spec.name] = np.ascontiguousarray(array.astype(spec.dtype))
    if data.labels is not None:
        labels = data.labels
        if labels.shape != (count,) or not np.issubdtype(labels.dtype, np.integer):
            raise CalibrationError(
                f"labels y must be {count} integer classes, one per sample; got "
                f"{labels.shape} {labels.dtype}",
                expected=f"({count},) integer",
                got=f"{labels.shape} {labels.dtype}",
            )
    return result


def _reference_member(members: Sequence[PoolEntry]) -> PoolEntry:
    """The most accurate member measured; with none measured, the one with most FLOPs."""
    measured = [(best_accuracy(m)[0], m) for m in members]
    known = [(a, m) for a, m in measured if a is not None]
    if known:
        return max(known, key=lambda pair: (pair[0], pair[1].name))[1]
    return max(members, key=lambda m: (_flops(m), m.name))


def _reference_variant(entry: PoolEntry) -> str:
    accuracy, variant = best_accuracy(entry)
    return variant if accuracy is not None else entry.manifest.reference_variant


def _flops(entry: PoolEntry) -> int:
    return entry.manifest.variants[entry.manifest.reference_variant].total_flops


def _write(entry: PoolEntry, manifest: Manifest) -> PoolEntry:
    path = entry.path / MANIFEST_FILE
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(manifest.dumps())
    temporary.replace(path)
    return replace(entry, manifest=manifest)
