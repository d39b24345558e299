"""The TensorFlow front end: Keras / SavedModel / application name -> ``.tflite`` variants.

The only module of :mod:`splitmq.converter` that imports TensorFlow, and only inside
functions; :func:`splitmq.converter.convert` calls it in a child process
(:mod:`splitmq.converter.worker`), which also keeps TensorFlow's log output quiet.
Keras models are exported to a SavedModel with a batch-1 input signature and converted
from there (Keras 3 and the TFLite converter agree best on that path).

Variants:

* ``float32`` -- plain conversion;
* ``float16`` -- float16 weights, float32 compute (``DEQUANTIZE`` ops unpack weights);
* ``int8`` -- full-integer quantization: every operator int8
  (``TFLITE_BUILTINS_INT8``), calibrated on the calibration set; the model's inputs and
  outputs stay float32 (a ``QUANTIZE`` first and a ``DEQUANTIZE`` last), so every
  variant is called the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from splitmq.converter.errors import ConversionError, ModelReadError

__all__ = [
    "VARIANTS",
    "LoadedSource",
    "SourceKind",
    "convert_variant",
    "keras_application_names",
    "load_source",
]

log = logging.getLogger(__name__)

VARIANTS = ("float32", "float16", "int8")
SourceKind = Literal["keras-application", "keras-file", "saved-model", "tflite"]
# Seed used to initialise an application built with ``weights=None``.
APPLICATION_SEED = 0


@dataclass(frozen=True)
class LoadedSource:
    """A model ready to convert.

    Attributes:
        kind: what the source was.
        reference: the path or the application name, as given.
        saved_model_dir: SavedModel to convert (``None`` for a ``.tflite`` source).
        tflite: the model itself for a ``.tflite`` source.
        layer_names: Keras layer names in model order (empty when unknown).
        input_range: value range of synthetic calibration data for this model.
    """

    kind: SourceKind
    reference: str
    saved_model_dir: Path | None
    tflite: bytes | None = field(default=None, repr=False)
    layer_names: tuple[str, ...] = ()
    input_range: tuple[float, float] = (0.0, 1.0)


def keras_application_names() -> list[str]:
    """Names of the architectures in ``keras.applications`` (``MobileNetV3Large``...)."""
    import keras

    return sorted(
        name
        for name in dir(keras.applications)
        if name[:1].isupper() and callable(getattr(keras.applications, name))
    )


def load_source(
    source: str | Path,
    *,
    work_dir: Path,
    weights: str | Path | None = None,
    input_size: int | None = None,
) -> LoadedSource:
    """Recognise ``source`` and prepare it for conversion (TensorFlow is imported here).

    Raises:
        ModelReadError: a missing or unreadable file, or an unsupported format.
    """
    path = Path(source)
    text = str(source)
    if path.is_dir():
        if not (path / "saved_model.pb").exists():
            raise ModelReadError(
                f"{path} is a directory without saved_model.pb, so not a SavedModel; pass "
                "a SavedModel directory, a .keras/.h5 file, a .tflite file or a "
                "keras.applications name",
                path=path,
            )
        return LoadedSource("saved-model", text, _fix_batch(path, work_dir))
    suffix = path.suffix.lower()
    if suffix == ".tflite":
        try:
            data = path.read_bytes()
        except OSError as error:
            raise ModelReadError(f"cannot read {path}: {error}", path=path) from error
        return LoadedSource("tflite", text, None, tflite=data)
    if suffix in {".keras", ".h5", ".hdf5"}:
        if not path.is_file():
            raise ModelReadError(f"no such file: {path}; check the path", path=path)
        model = _load_keras_file(path)
        return _export_keras(model, "keras-file", text, work_dir, (0.0, 1.0))
    if path.exists() or suffix:
        raise ModelReadError(
            f"unsupported model format {suffix or '(no suffix)'!r} for {path}: pass a "
            ".keras/.h5 file, a SavedModel directory, a .tflite file or a "
            "keras.applications name such as MobileNetV3Large",
            path=path,
        )
    names = keras_application_names()
    # Accept any spelling that differs in case or underscores: mobilenet_v3_large.
    folded = {name.lower(): name for name in names}
    text = folded.get(text.replace("_", "").replace("-", "").lower(), text)
    if text not in names:
        raise ModelReadError(
            f"{text!r} is neither a file nor a keras.applications architecture; known "
            f"architectures: {', '.join(names)}"
        )
    model = build_application(text, input_size=input_size, weights=weights)
    return _export_keras(model, "keras-application", text, work_dir, (0.0, 255.0))


def build_application(name: str, *, input_size: int | None, weights: str | Path | None) -> Any:
    """``keras.applications.<name>`` with ``weights=None`` and a fixed seed (no download)."""
    import keras

    # A fresh session resets layer-name numbering, which ends up in tensor names.
    keras.backend.clear_session()
    keras.utils.set_random_seed(APPLICATION_SEED)
    size = input_size or 224
    log.info("building %s at %dx%d (weights=None, seed %d)", name, size, size, APPLICATION_SEED)
    model = getattr(keras.applications, name)(input_shape=(size, size, 3), weights=None)
    if weights is not None:
        try:
            model.load_weights(str(weights))
        except (OSError, ValueError) as error:
            raise ModelReadError(
                f"cannot load weights {weights} into {name} at {size}x{size}: {error}; "
                "the weights must come from the same architecture and input size",
                path=Path(weights),
            ) from error
    return model


def _load_keras_file(path: Path) -> Any:
    import keras

    # A fresh session resets name numbering (``functional_1``), which ends up in tensor
    # names: the same file converts to the same bytes however many models came before.
    keras.backend.clear_session()
    try:
        return keras.models.load_model(str(path), compile=False)
    except (OSError, ValueError, TypeError, KeyError) as error:
        raise ModelReadError(
            f"cannot load the Keras model {path}: {error}; save it with model.save()",
            path=path,
        ) from error


def _export_keras(
    model: Any, kind: SourceKind, reference: str, work_dir: Path, input_range: tuple[float, float]
) -> LoadedSource:
    import keras

    specs = [
        keras.InputSpec(shape=(1, *tuple(t.shape[1:])), dtype=t.dtype, name=_input_name(t))
        for t in model.inputs
    ]
    export_dir = work_dir / "saved_model"
    log.info("exporting the Keras model to a SavedModel")
    model.export(str(export_dir), format="tf_saved_model", input_signature=[specs], verbose=False)
    layer_names = tuple(layer.name for layer in model.layers)
    return LoadedSource(kind, reference, export_dir, None, layer_names, input_range)


def _fix_batch(saved_model: Path, work_dir: Path) -> Path:
    """The SavedModel with a batch of 1 where its serving signature leaves it open.

    A dynamic batch makes TFLite graphs whose tensors inside (reshapes of dense layers,
    say) have placeholder shapes, and a cut through those would promise a shape the
    tensor does not have at run time. Other dynamic dimensions cannot be guessed.
    """
    import tensorflow as tf

    module = tf.saved_model.load(str(saved_model))
    signatures = getattr(module, "signatures", {})
    if "serving_default" not in signatures:
        raise ModelReadError(
            f"{saved_model} has no 'serving_default' signature: export it with one "
            "(tf.saved_model.save(..., signatures=...) or keras Model.export)",
            path=saved_model,
        )
    serving = signatures["serving_default"]
    _, inputs = serving.structured_input_signature
    fixed = {}
    for name, spec in inputs.items():
        dims = list(spec.shape)
        if dims and dims[0] is None:
            dims[0] = 1
        if any(d is None for d in dims):
            raise ModelReadError(
                f"input {name!r} of {saved_model} has a dynamic dimension {spec.shape}: "
                "export the model with a fixed input shape (the batch may stay open)",
                path=saved_model,
            )
        fixed[name] = tf.TensorSpec(dims, spec.dtype, name=name)
    if all(list(inputs[n].shape) == list(fixed[n].shape) for n in inputs):
        return saved_model
    log.info("fixing the SavedModel's batch dimension to 1")
    concrete = tf.function(serving).get_concrete_function(**fixed)
    out = work_dir / "saved_model_batch1"
    tf.saved_model.save(module, str(out), signatures={"serving_default": concrete})
    return out


def _input_name(tensor: Any) -> str:
    name = str(getattr(tensor, "name", "input"))
    return name.split(":", maxsplit=1)[0]


def convert_variant(
    source: LoadedSource,
    variant: str,
    *,
    calibration: Callable[[], Iterator[Mapping[str, np.ndarray]]] | None = None,
) -> bytes:
    """Convert a loaded source to one variant (``float32``, ``float16`` or ``int8``).

    ``calibration`` yields one sample at a time as ``{signature input key: array}``
    with a leading batch dimension of 1; ``int8`` needs it.
    """
    if source.tflite is not None:
        return source.tflite
    if variant not in VARIANTS:
        raise ConversionError(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(source.saved_model_dir))
    if variant == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif variant == "int8":
        if calibration is None:
            raise ConversionError("int8 conversion needs calibration data")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = calibration
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    try:
        return bytes(converter.convert())
    except (RuntimeError, ValueError, tf.errors.OpError) as error:
        raise ConversionError(f"TFLite conversion to {variant} failed: {error}") from error


def calibration_generator(
    samples: Mapping[str, np.ndarray], keys: Sequence[str]
) -> Callable[[], Iterator[Mapping[str, np.ndarray]]]:
    """A representative-dataset callable over batched arrays, logging progress."""
    count = len(next(iter(samples.values())))

    def generate() -> Iterator[Mapping[str, np.ndarray]]:
        for i in range(count):
            if i % max(1, count // 4) == 0:
                log.info("calibrating: sample %d/%d", i + 1, count)
            yield {key: samples[key][i : i + 1] for key in keys}

    return generate
