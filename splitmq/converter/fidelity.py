"""Fidelity of the variants against float32 on the calibration set. No TensorFlow."""

from __future__ import annotations

import importlib.metadata
import logging
import platform
from collections.abc import Mapping, Sequence

import numpy as np

from splitmq.converter.runner import make_interpreter, run_model
from splitmq.wire.manifest import Fidelity

__all__ = ["measure_fidelity", "predict"]

log = logging.getLogger(__name__)


def predict(
    model: bytes, samples: Mapping[str, np.ndarray], output_names: Sequence[str]
) -> list[np.ndarray]:
    """Run ``model`` on every sample (inputs keyed by tensor name, batched on axis 0).

    Returns one array per output in ``output_names`` order, batched on axis 0.
    """
    interpreter = make_interpreter(model)
    count = len(next(iter(samples.values())))
    results: list[list[np.ndarray]] = [[] for _ in output_names]
    for i in range(count):
        outputs = run_model(interpreter, {k: v[i : i + 1] for k, v in samples.items()})
        for slot, name in enumerate(output_names):
            results[slot].append(outputs[name][0])
    return [np.stack(r) for r in results]


def measure_fidelity(
    models: Mapping[str, bytes],
    samples: Mapping[str, np.ndarray],
    output_names: Sequence[str],
    *,
    reference: str = "float32",
    labels: np.ndarray | None = None,
) -> dict[str, Fidelity]:
    """Top-1 agreement with ``reference`` (and accuracy on ``labels``) for every model."""
    predictions = {}
    for name, model in models.items():
        log.info("measuring fidelity of %s on %d samples", name, len(next(iter(samples.values()))))
        predictions[name] = predict(model, samples, output_names)
    base = predictions.get(reference) or next(iter(predictions.values()))
    result = {}
    for name, outputs in predictions.items():
        agree = np.ones(len(outputs[0]), dtype=bool)
        max_diff = 0.0
        for mine, theirs in zip(outputs, base, strict=True):
            flat_mine = mine.reshape(len(mine), -1).astype(np.float64)
            flat_theirs = theirs.reshape(len(theirs), -1).astype(np.float64)
            agree &= flat_mine.argmax(axis=1) == flat_theirs.argmax(axis=1)
            max_diff = max(max_diff, float(np.max(np.abs(flat_mine - flat_theirs))))
        accuracy = None
        if labels is not None:
            first = outputs[0].reshape(len(outputs[0]), -1)
            accuracy = float(np.mean(first.argmax(axis=1) == labels.reshape(-1)))
        result[name] = Fidelity(
            samples=len(agree),
            top1_agreement=float(np.mean(agree)),
            accuracy=accuracy,
            max_abs_diff=max_diff,
            measured_on=measured_here(),
        )
    return result


def measured_here() -> str:
    """This machine's architecture, the runtime and the kernels :func:`predict` uses, as
    an agent's status names them (``x86_64 litert 2.3.0 builtin``)."""
    return f"{platform.machine()} litert {importlib.metadata.version('ai-edge-litert')} builtin"
