"""The TFLite runtime: LiteRT, else tflite-runtime, else TensorFlow Lite, imported lazily.

Nothing is imported at module import. :func:`find_runtime` imports the first runtime
present in the order ``ai_edge_litert`` -> ``tflite_runtime`` -> ``tensorflow.lite``
(TensorFlow only as a last resort, or when asked by name). A :class:`LoadedShard` is
one interpreter with its tensors allocated; it is invoked only on a stage worker
thread (never on paho's), under its own lock, since a worker may run a neighbouring
stage of the same agent in-process.
"""

from __future__ import annotations

import importlib
import threading
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from splitmq.errors import ConfigError, SplitMQError
from splitmq.wire import Tensor, TensorSpec


class RuntimeKind(StrEnum):
    AUTO = "auto"
    LITERT = "litert"
    TFLITE_RUNTIME = "tflite-runtime"
    TENSORFLOW = "tensorflow"


_MODULES: dict[RuntimeKind, tuple[str, str]] = {
    # kind -> (interpreter module, package whose version we report)
    RuntimeKind.LITERT: ("ai_edge_litert.interpreter", "ai_edge_litert"),
    RuntimeKind.TFLITE_RUNTIME: ("tflite_runtime.interpreter", "tflite_runtime"),
    RuntimeKind.TENSORFLOW: ("tensorflow.lite", "tensorflow"),
}
_AUTO_ORDER = (RuntimeKind.LITERT, RuntimeKind.TFLITE_RUNTIME, RuntimeKind.TENSORFLOW)


class RuntimeUnavailable(ConfigError):
    """No TFLite runtime (or not the one asked for) can be imported here."""


class ShardLoadError(SplitMQError):
    """A shard's bytes cannot be loaded into the runtime (corrupt, or an unknown operator)."""


@dataclass(frozen=True)
class Runtime:
    """An importable TFLite runtime.

    Attributes:
        kind: which one.
        version: its package version.
        module: the module holding ``Interpreter`` (and ``OpResolverType`` when it has it).
    """

    kind: RuntimeKind
    version: str
    module: Any

    def load(self, model: bytes, *, threads: int = 1, xnnpack: bool = True) -> LoadedShard:
        """An interpreter for ``model`` with its tensors allocated.

        ``xnnpack=False`` runs the builtin kernels only, which makes chained shards give
        the same bits as the unsplit model (see ``splitmq.converter.runner``).
        """
        interpreter_cls = self.module.Interpreter
        kwargs: dict[str, Any] = {"model_content": bytes(model), "num_threads": int(threads)}
        resolver = getattr(self.module, "OpResolverType", None)
        if resolver is None and self.kind is RuntimeKind.TENSORFLOW:
            resolver = getattr(self.module.experimental, "OpResolverType", None)
        if resolver is not None:
            kwargs["experimental_op_resolver_type"] = (
                resolver.AUTO if xnnpack else resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES
            )
        try:
            interpreter = interpreter_cls(**kwargs)
            interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as error:
            raise ShardLoadError(f"{self.kind} cannot load the shard: {error}") from None
        return LoadedShard(interpreter, kwargs["model_content"], threads=int(threads))


def find_runtime(kind: RuntimeKind | str = RuntimeKind.AUTO) -> Runtime:
    """The runtime asked for, or with ``auto`` the best one installed."""
    kind = RuntimeKind(kind)
    order = _AUTO_ORDER if kind is RuntimeKind.AUTO else (kind,)
    failures = []
    for candidate in order:
        module_name, package = _MODULES[candidate]
        try:
            if candidate is RuntimeKind.TENSORFLOW:  # tf.lite is an attribute, not a module
                module = importlib.import_module(package).lite
            else:
                module = importlib.import_module(module_name)
        except (ImportError, AttributeError) as error:
            failures.append(f"{candidate}: {error}")
            continue
        version = str(getattr(importlib.import_module(package), "__version__", "unknown"))
        return Runtime(candidate, version, module)
    raise RuntimeUnavailable(
        "no TFLite runtime found ("
        + "; ".join(failures)
        + "): install one with `pip install ai-edge-litert` (or tflite-runtime)"
    )


def _spec(detail: dict[str, Any]) -> TensorSpec:
    scale, zero_point = detail.get("quantization", (0.0, 0))
    quantized = np.dtype(detail["dtype"]).kind in "iu" and scale != 0.0
    return TensorSpec(
        name=str(detail["name"]),
        shape=tuple(int(d) for d in detail["shape"]),
        dtype=np.dtype(detail["dtype"]).name,
        scale=float(scale) if quantized else None,
        zero_point=int(zero_point) if quantized else None,
    )


class Shard(Protocol):
    """What a hosted stage runs: a :class:`LoadedShard`, or a stand-in with its
    ``run`` (tests put one in to gate or spy on a stage)."""

    threads: int

    def run(self, arrays: dict[str, npt.NDArray[Any]]) -> tuple[tuple[Tensor, ...], float]: ...

    def benchmark(self, runs: int) -> float: ...


class LoadedShard:
    """One shard in an interpreter: its boundary tensors, a checked ``run``, a benchmark."""

    def __init__(self, interpreter: Any, model: bytes, *, threads: int = 1):
        self.threads = threads
        """The interpreter's threads (1: it computes on the caller's thread alone)."""
        self._interpreter = interpreter
        self._model = model  # the interpreter reads from it: keep it alive
        self._lock = threading.Lock()
        inputs = interpreter.get_input_details()
        outputs = interpreter.get_output_details()
        self.inputs: tuple[TensorSpec, ...] = tuple(_spec(d) for d in inputs)
        self.outputs: tuple[TensorSpec, ...] = tuple(_spec(d) for d in outputs)
        self._input_index = {str(d["name"]): int(d["index"]) for d in inputs}
        self._output_index = [int(d["index"]) for d in outputs]

    @property
    def size_bytes(self) -> int:
        return len(self._model)

    def run(self, arrays: dict[str, npt.NDArray[Any]]) -> tuple[tuple[Tensor, ...], float]:
        """Run once on arrays by input name (already checked); outputs and invoke seconds."""
        with self._lock:
            for name, index in self._input_index.items():
                self._set_input(index, arrays[name])
            start = time.perf_counter()
            self._interpreter.invoke()
            invoke_s = time.perf_counter() - start
            tensors = tuple(
                Tensor(spec.name, self._interpreter.get_tensor(index), spec.scale, spec.zero_point)
                for spec, index in zip(self.outputs, self._output_index, strict=True)
            )
        return tensors, invoke_s

    def _set_input(self, index: int, array: npt.NDArray[Any]) -> None:
        """Copy ``array`` into input tensor ``index``, once.

        ``set_tensor`` copies an array that is read-only or unaligned (a view of the
        bytes received, as decoded) into a new array first, then into the tensor: two
        copies of the activation per hop. Such an array of the tensor's shape and dtype
        is written into the tensor's buffer directly; the view of the buffer is dropped
        before the invoke (the interpreter refuses to run while one is held).
        """
        flags = array.flags
        if not (flags.writeable and flags.aligned and flags.c_contiguous):
            view = self._interpreter.tensor(index)()
            if view.shape == array.shape and view.dtype == array.dtype:
                view[...] = array
                del view
                return
            del view
        self._interpreter.set_tensor(index, array)  # it also says what does not fit

    def benchmark(self, runs: int) -> float:
        """Median invoke time in seconds over ``runs`` runs on zeros (after one warm-up)."""
        zeros = {s.name: np.zeros(s.shape, dtype=s.dtype) for s in self.inputs}
        self.run(zeros)
        times = sorted(self.run(zeros)[1] for _ in range(max(1, runs)))
        return times[len(times) // 2]


CALIBRATION_MODEL = "calibration.tflite"
CALIBRATION_FLOPS = 23_170_304
"""FLOPs of the bundled calibration model (a small convolutional net on a 48x48 image),
as the converter's graph analysis counts them."""


def calibrate(runtime: Runtime, *, threads: int, xnnpack: bool, runs: int = 5) -> float:
    """The runtime's speed on a small convolutional net shipped with the agent, in GFLOP/s.

    The coordinator's prior for an agent that has not run any of our shards yet: it
    comes from the same runtime, kernels and thread count as the shards will use.
    """
    from importlib import resources

    data = resources.files("splitmq.agent").joinpath(CALIBRATION_MODEL).read_bytes()
    shard = runtime.load(data, threads=threads, xnnpack=xnnpack)
    seconds = shard.benchmark(runs)
    return CALIBRATION_FLOPS / max(seconds, 1e-9) / 1e9
