"""Running a ``.tflite`` model or a chain of shards with LiteRT, by tensor name. No TensorFlow.

Reproducibility: every interpreter here runs with one thread and, by default, the
builtin kernels without the default (XNNPACK) delegate. The builtin kernels compute
each operator on its own, so the unsplit model and its chained shards give the same
bits. XNNPACK rewrites the graph it is handed (it may, for instance, fold a
dequantize of float16 weights or pack a convolution's weights differently once the
operator sits at a shard's edge); pass ``xnnpack=True`` for speed when bit-exactness
against the unsplit model is not needed -- and then run the unsplit model the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from splitmq.converter.cutter import Shard
from splitmq.errors import ConversionError

__all__ = ["make_interpreter", "run_chain", "run_model", "run_stage_graph"]


def make_interpreter(
    model: bytes | str | Path, *, num_threads: int = 1, xnnpack: bool = False
) -> Any:
    """A LiteRT interpreter with tensors allocated."""
    from ai_edge_litert import interpreter as litert

    content = Path(model).read_bytes() if isinstance(model, str | Path) else bytes(model)
    resolver = (
        litert.OpResolverType.AUTO
        if xnnpack
        else litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    )
    interpreter = litert.Interpreter(
        model_content=content,
        num_threads=num_threads,
        experimental_op_resolver_type=resolver,
    )
    interpreter.allocate_tensors()
    return interpreter


def run_model(
    model: bytes | str | Path | Any,
    inputs: Mapping[str, np.ndarray] | Sequence[np.ndarray],
    *,
    xnnpack: bool = False,
) -> dict[str, np.ndarray]:
    """Run a model once; inputs by tensor name (or in input order); outputs by name.

    ``model`` may also be an interpreter from :func:`make_interpreter`, to reuse it.
    """
    interpreter: Any = (
        make_interpreter(model, xnnpack=xnnpack) if isinstance(model, bytes | str | Path) else model
    )
    details = interpreter.get_input_details()
    if isinstance(inputs, Mapping):
        missing = [d["name"] for d in details if d["name"] not in inputs]
        if missing:
            raise ConversionError(
                f"missing input tensors {missing}; the model reads {[d['name'] for d in details]}"
            )
        arrays = [inputs[d["name"]] for d in details]
    else:
        if len(inputs) != len(details):
            raise ConversionError(
                f"the model has {len(details)} inputs, {len(inputs)} arrays were given"
            )
        arrays = list(inputs)
    for detail, given in zip(details, arrays, strict=True):
        array = np.asarray(given)
        if array.dtype != detail["dtype"] or tuple(array.shape) != tuple(detail["shape"]):
            raise ConversionError(
                f"input {detail['name']!r} needs shape {tuple(detail['shape'])} "
                f"{np.dtype(detail['dtype']).name}, got {array.shape} {array.dtype}"
            )
        interpreter.set_tensor(detail["index"], array)
    interpreter.invoke()
    return {
        d["name"]: np.array(interpreter.get_tensor(d["index"]))
        for d in interpreter.get_output_details()
    }


def run_chain(
    shards: Sequence[Shard | bytes],
    inputs: Mapping[str, np.ndarray],
    *,
    xnnpack: bool = False,
) -> dict[str, np.ndarray]:
    """Run shards in order, passing tensors by name; returns every tensor produced.

    The model's outputs are among the returned tensors, under their original names.
    """
    tensors: dict[str, np.ndarray] = dict(inputs)
    for shard in shards:
        data = shard.data if isinstance(shard, Shard) else shard
        interpreter = make_interpreter(data, xnnpack=xnnpack)
        names = [d["name"] for d in interpreter.get_input_details()]
        tensors.update(run_model(interpreter, {name: tensors[name] for name in names}))
    return tensors


def run_stage_graph(
    shards: Sequence[Shard],
    inputs: Mapping[str, np.ndarray],
    *,
    xnnpack: bool = False,
) -> dict[str, np.ndarray]:
    """Run a stage graph (see :func:`splitmq.converter.cutter.cut_stages`) the way
    agents would: a shard runs once every tensor it reads has arrived, fed only its
    named inputs, in waves -- every shard ready in a wave could run at the same time
    (the branches of a fan-out). Returns every tensor produced, by name.

    Raises:
        ConversionError: a shard whose inputs nobody produces.
    """
    tensors: dict[str, np.ndarray] = dict(inputs)
    pending = list(shards)
    while pending:
        ready = [s for s in pending if all(t.name in tensors for t in s.inputs)]
        if not ready:
            stuck = {s.stage: [t.name for t in s.inputs if t.name not in tensors] for s in pending}
            raise ConversionError(f"stages wait for tensors no stage produces: {stuck}")
        wave: dict[str, np.ndarray] = {}
        for shard in ready:
            interpreter = make_interpreter(shard.data, xnnpack=xnnpack)
            wave.update(run_model(interpreter, {t.name: tensors[t.name] for t in shard.inputs}))
        tensors.update(wave)
        done = {id(s) for s in ready}
        pending = [s for s in pending if id(s) not in done]
    return tensors
