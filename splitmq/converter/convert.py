"""``convert()``: a model in, a model pool entry out.

The steps (each logged to the ``splitmq.converter`` logger, which the CLI shows on
stderr): load the source; convert to float32 (the reference); read or synthesise the
calibration set; convert the other variants; measure fidelity; analyse every variant;
derive the version from the content; write the entry. TensorFlow runs only in the
front end's child process (:mod:`splitmq.converter.isolated`), and only when the
source is not already a ``.tflite``; a variant whose conversion crashes it is left out
and reported after the others are written.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

import splitmq
from splitmq.converter.analysis import align_cut_points, describe_variant
from splitmq.converter.errors import (
    CalibrationError,
    ConversionError,
    ConverterCrashError,
    describe_exit,
)
from splitmq.converter.fidelity import measure_fidelity
from splitmq.converter.graph import Graph
from splitmq.converter.pool import PoolEntry, check_name, content_version, variant_file, write_entry
from splitmq.converter.task import check_task
from splitmq.wire.manifest import Calibration, Manifest

if TYPE_CHECKING:
    from splitmq.converter.isolated import FrontEndProcess

__all__ = ["DEFAULT_VARIANTS", "CalibrationInput", "convert"]

log = logging.getLogger("splitmq.converter")

DEFAULT_VARIANTS = ("float32", "float16", "int8")
SYNTHETIC_SAMPLES = 16
SYNTHETIC_SEED = 0
CalibrationInput = str | Path | np.ndarray | Mapping[str, np.ndarray]
T = TypeVar("T")


def convert(
    source: str | Path,
    *,
    name: str,
    pool_dir: str | Path,
    variants: Sequence[str] = DEFAULT_VARIANTS,
    calibration: CalibrationInput | None = None,
    labels: str | Path | np.ndarray | None = None,
    weights: str | Path | None = None,
    input_size: int | None = None,
    task: str | None = None,
    verbose: bool = False,
    front_end: FrontEndProcess | None = None,
) -> PoolEntry:
    """Convert ``source`` into the pool entry ``pool_dir/name/VERSION``.

    TensorFlow runs in a child process (one for the whole conversion; TensorFlow is
    imported there, not here), so a crash inside its converter costs only the variant
    being converted.

    Args:
        source: a ``.keras``/``.h5`` file, a SavedModel directory, a ``.tflite`` file or
            a ``keras.applications`` name (built with ``weights=None``, seed 0).
        name: the model's name in the pool.
        pool_dir: the pool's root directory.
        variants: any of ``float32``, ``float16``, ``int8``. A ``.tflite`` source is one
            variant already: give exactly one name for it (default ``float32``).
        calibration: ``.npy`` (one input: ``(N, *input_shape[1:])``), ``.npz`` (one
            array per input, keyed by input name), or the arrays themselves. Without
            it a synthetic uniform set of 16 samples is used and labelled so.
        labels: integer class labels, one per calibration sample (``.npy`` or array).
        weights: weights file for a ``keras.applications`` name.
        input_size: side of the square input for a ``keras.applications`` name (224).
        task: the task the model is a member of (``digits``): members share inputs and
            the meaning of their outputs, and a request may name the task instead of a
            model. With ``labels`` each variant's fidelity has its accuracy.
        verbose: show TensorFlow's own log output (C++, absl, warnings) on stderr;
            by default it goes to a file that is deleted with the work directory.
        front_end: a running :class:`~splitmq.converter.isolated.FrontEndProcess` to
            reuse (several conversions, one TensorFlow import); its own ``verbose``
            applies. By default one is started for this conversion and ended after it.

    Raises:
        ModelReadError, CalibrationError, ConversionError: with what to do next.
        ConverterCrashError: TensorFlow's converter died on some variants; the others
            were written first (``error.path``, ``error.converted``).
    """
    if front_end is None:
        from splitmq.converter.isolated import FrontEndProcess

        with FrontEndProcess(verbose=verbose) as started:
            return convert(
                source,
                name=name,
                pool_dir=pool_dir,
                variants=variants,
                calibration=calibration,
                labels=labels,
                weights=weights,
                input_size=input_size,
                task=task,
                front_end=started,
            )
    return _convert(
        front_end,
        source,
        name=name,
        pool_dir=pool_dir,
        variants=variants,
        calibration=calibration,
        labels=labels,
        weights=weights,
        input_size=input_size,
        task=task,
    )


def _convert(
    front_end: FrontEndProcess,
    source: str | Path,
    *,
    name: str,
    pool_dir: str | Path,
    variants: Sequence[str] = DEFAULT_VARIANTS,
    calibration: CalibrationInput | None = None,
    labels: str | Path | np.ndarray | None = None,
    weights: str | Path | None = None,
    input_size: int | None = None,
    task: str | None = None,
) -> PoolEntry:
    check_name(name)
    if task is not None:
        check_task(task)
    from splitmq.converter.frontend import VARIANTS, convert_variant, load_source

    is_tflite = Path(source).suffix.lower() == ".tflite"
    chosen = list(dict.fromkeys(variants))
    unknown = [v for v in chosen if v not in VARIANTS]
    if unknown or not chosen:
        raise ConversionError(
            f"unknown variants {unknown or chosen}; choose from {', '.join(VARIANTS)}"
        )
    if is_tflite:
        if tuple(variants) == DEFAULT_VARIANTS:
            chosen = ["float32"]
        if len(chosen) != 1:
            raise ConversionError(
                "a .tflite file is a single variant already: pass one variant name to label "
                "it (--variants int8), or convert the Keras model or SavedModel to get several"
            )

    started = time.monotonic()
    log.info("loading %s", source)
    if is_tflite:
        # A .tflite is read, not converted: no TensorFlow, no child process.
        loaded = load_source(source, work_dir=front_end.work_dir)
    else:
        loaded = _guard(
            lambda: front_end.load(source, weights=weights, input_size=input_size),
            "loading the model",
            f"loading {source}",
        )
    models: dict[str, bytes] = {}
    reference_name = chosen[0] if is_tflite else "float32"
    log.info("converting to %s", reference_name)
    if is_tflite:
        models[reference_name] = convert_variant(loaded, reference_name)
    else:
        models[reference_name] = _guard(
            lambda: front_end.convert(loaded, reference_name),
            reference_name,
            "converting the float32 variant, the reference the others are measured against",
        )
    reference_graph = Graph.load(models[reference_name])
    keys, tensor_names = _signature_inputs(reference_graph)
    samples, calibration_info = _calibration_set(
        calibration, reference_graph, keys, loaded.input_range
    )
    label_array = _labels(labels, calibration_info.samples)
    crashes: dict[str, int] = {}
    for variant in chosen:
        if variant in models:
            continue
        log.info("converting to %s", variant)
        try:
            models[variant] = front_end.convert(
                loaded, variant, calibration=samples if variant == "int8" else None, keys=keys
            )
        except ConverterCrashError as crash:
            returncode = crash.crashes[variant]
            crashes[variant] = returncode
            log.error(
                "TensorFlow's converter crashed converting %s (%s); carrying on with the "
                "other variants",
                variant,
                describe_exit(returncode),
            )

    by_tensor = {tensor_names[k]: samples[k] for k in keys}
    output_names = _signature_outputs(reference_graph)
    fidelity = measure_fidelity(
        models, by_tensor, output_names, reference=reference_name, labels=label_array
    )
    described = {
        variant: describe_variant(
            variant,
            variant_file(variant),
            models[variant],
            layer_names=loaded.layer_names,
            fidelity=fidelity[variant],
            graph=reference_graph if variant == reference_name else None,
        )
        for variant in models
    }
    stored = {v: models[v] for v in chosen if v in models}
    version = content_version({v: described[v].sha256 for v in stored}, calibration_info.sha256)
    reference = described[reference_name]
    others = {k: v for k, v in described.items() if k != reference_name and k in stored}
    manifest = Manifest(
        name=name,
        version=version,
        source_kind=loaded.kind,
        source=loaded.reference,
        inputs=reference.inputs,
        outputs=reference.outputs,
        reference_variant=reference_name,
        calibration=calibration_info,
        labels=label_array is not None,
        variants={v: described[v] for v in stored},
        cut_points=align_cut_points(reference, others),
        created_with=_created_with(None if is_tflite else front_end.tensorflow_version),
        task=task,
    )
    entry = write_entry(pool_dir, manifest, stored)
    log.info("wrote %s (%s) in %.1f s", entry.path, ", ".join(stored), time.monotonic() - started)
    if crashes:
        raise _crash_report(crashes, tuple(stored), entry.path)
    return entry


def _guard(step: Callable[[], T], what: str, doing: str) -> T:
    """Run a step that nothing else can go on without; a crash in it writes nothing."""
    try:
        return step()
    except ConverterCrashError as crash:
        returncode = next(iter(crash.crashes.values()))
        raise ConverterCrashError(
            f"TensorFlow crashed while {doing} ({describe_exit(returncode)}): nothing was "
            "written. Run again with --verbose (verbose=True) to see TensorFlow's own output",
            crashes={what: returncode},
        ) from crash


def _crash_report(crashes: dict[str, int], converted: tuple[str, ...], path: Path) -> Exception:
    died = "; ".join(
        f"the {variant} variant ({describe_exit(code)})" for variant, code in crashes.items()
    )
    return ConverterCrashError(
        f"TensorFlow's converter crashed converting {died}, a crash inside TensorFlow "
        f"rather than an error it reports. The variants that converted "
        f"({', '.join(converted)}) were written to {path}. Convert with --variants "
        f"{','.join(converted)} to leave out the crashing one"
        + ("s" if len(crashes) > 1 else "")
        + ", or run with --verbose to see TensorFlow's own output",
        crashes=crashes,
        converted=converted,
        path=path,
    )


def _created_with(tensorflow_version: str | None) -> str:
    text = f"splitmq {splitmq.__version__}"
    if tensorflow_version is not None:
        text += f", tensorflow {tensorflow_version}"
    return text


def _signature_inputs(graph: Graph) -> tuple[list[str], dict[str, str]]:
    """Input keys (signature names, else tensor names) and their tensor names."""
    signatures = graph.model.signatureDefs or []
    if signatures and signatures[0].inputs:
        pairs = [
            (_text(m.name), graph.tensor_name(int(m.tensorIndex))) for m in signatures[0].inputs
        ]
    else:
        pairs = [(graph.tensor_name(t), graph.tensor_name(t)) for t in graph.model_inputs]
    return [k for k, _ in pairs], dict(pairs)


def _signature_outputs(graph: Graph) -> list[str]:
    signatures = graph.model.signatureDefs or []
    if signatures and signatures[0].outputs:
        return [graph.tensor_name(int(m.tensorIndex)) for m in signatures[0].outputs]
    return [graph.tensor_name(t) for t in graph.model_outputs]


def _text(value: bytes | str | None) -> str:
    return value.decode() if isinstance(value, bytes) else (value or "")


def _input_specs(graph: Graph, keys: list[str]) -> dict[str, tuple[tuple[int, ...], str]]:
    _, names = _signature_inputs(graph)
    specs = {graph.tensor_name(t): graph.tensor_spec(t) for t in graph.model_inputs}
    return {k: (specs[names[k]].shape, specs[names[k]].dtype) for k in keys}


def _calibration_set(
    calibration: CalibrationInput | None,
    graph: Graph,
    keys: list[str],
    value_range: tuple[float, float],
) -> tuple[dict[str, np.ndarray], Calibration]:
    specs = _input_specs(graph, keys)
    if calibration is None:
        rng = np.random.default_rng(SYNTHETIC_SEED)
        low, high = value_range
        samples = {
            k: rng.uniform(low, high, (SYNTHETIC_SAMPLES, *shape[1:])).astype(dtype)
            for k, (shape, dtype) in specs.items()
        }
        description = (
            f"synthetic: {SYNTHETIC_SAMPLES} samples uniform in [{low:g}, {high:g}), seed "
            f"{SYNTHETIC_SEED}; int8 scales and fidelity are only indicative, pass "
            "--calibration with real inputs"
        )
        log.warning("no calibration data given: using a synthetic set (%s)", description)
        return samples, Calibration("synthetic", SYNTHETIC_SAMPLES, _digest(samples), description)

    description = "arrays given by the caller"
    loaded: Any = calibration
    if isinstance(calibration, str | Path):
        path = Path(calibration)
        description = path.name
        try:
            loaded = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as error:
            raise CalibrationError(
                f"cannot read calibration data {path}: {error}; pass a .npy array "
                "(N, *input_shape[1:]) or an .npz with one array per input name",
                expected=".npy or .npz",
                got=str(path),
            ) from error
    if isinstance(loaded, np.ndarray):
        if len(keys) != 1:
            raise CalibrationError(
                f"this model has {len(keys)} inputs ({', '.join(keys)}): pass an .npz with "
                "one array per input name",
                expected=", ".join(keys),
                got="one array",
            )
        arrays = {keys[0]: loaded}
    else:
        arrays = {str(k): np.asarray(loaded[k]) for k in loaded}
        missing = [k for k in keys if k not in arrays]
        if missing:
            raise CalibrationError(
                f"calibration data lacks inputs {missing}; it has {sorted(arrays)}, the "
                f"model reads {keys}",
                expected=", ".join(keys),
                got=", ".join(sorted(arrays)),
            )
    samples = {}
    count: int | None = None
    for key, (shape, dtype) in specs.items():
        array = arrays[key]
        expected = f"(N, {', '.join(str(d) for d in shape[1:])})"
        if array.ndim != len(shape) or tuple(array.shape[1:]) != tuple(shape[1:]):
            raise CalibrationError(
                f"calibration data for input {key!r} has shape {array.shape}, the model needs "
                f"{expected} {dtype}: one sample per row, each shaped like the input without "
                "its batch dimension",
                expected=f"{expected} {dtype}",
                got=f"{array.shape} {array.dtype}",
            )
        if not np.issubdtype(array.dtype, np.number):
            raise CalibrationError(
                f"calibration data for {key!r} is {array.dtype}, not numbers",
                expected=dtype,
                got=str(array.dtype),
            )
        if count is not None and len(array) != count:
            raise CalibrationError(
                "calibration arrays have different numbers of samples",
                expected=str(count),
                got=str(len(array)),
            )
        count = len(array)
        samples[key] = np.ascontiguousarray(array.astype(dtype))
    if not count:
        raise CalibrationError("calibration data holds no sample", expected="N >= 1", got="0")
    return samples, Calibration("file", count, _digest(samples), description)


def _labels(labels: str | Path | np.ndarray | None, count: int) -> np.ndarray | None:
    if labels is None:
        return None
    try:
        array = np.load(labels, allow_pickle=False) if isinstance(labels, str | Path) else labels
    except (OSError, ValueError) as error:
        raise CalibrationError(
            f"cannot read labels {labels}: {error}; pass a .npy of integer class indices",
            expected="integer .npy",
            got=str(labels),
        ) from error
    array = np.asarray(array)
    if array.ndim != 1 or len(array) != count or not np.issubdtype(array.dtype, np.integer):
        raise CalibrationError(
            f"labels must be {count} integer class indices (one per calibration sample), "
            f"got shape {array.shape} {array.dtype}",
            expected=f"({count},) integer",
            got=f"{array.shape} {array.dtype}",
        )
    return array


def _digest(samples: Mapping[str, np.ndarray]) -> str:
    hasher = hashlib.sha256()
    for key in sorted(samples):
        array = samples[key]
        hasher.update(f"{key}:{array.dtype}:{array.shape}\n".encode())
        hasher.update(np.ascontiguousarray(array).tobytes())
    return hasher.hexdigest()
