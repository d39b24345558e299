"""Inputs: reading images and ``.npy`` files, and fitting them to the tensors a model reads.

Two kinds of input, told apart by their type (:func:`fit_tensor`):

- an **array** (a numpy array: from a ``.npy`` file, or given to the Python API) holds
  the values the model reads. Its shape must be the input's, except that a missing
  batch axis is added when that is the only difference (``(8, 8, 1)`` for
  ``(1, 8, 8, 1)``); anything else is refused, naming the shape the model expects. It
  is never resized, transposed or converted;
- an **image** (:class:`ImageInput`: what :func:`load_image` reads from a file, or
  pixels a caller wraps) is a picture: for a rank-4 ``NHWC`` input it is resized,
  bilinear, with Pillow, and its channels converted: RGB(A) to grey by luminance,
  grey to RGB by repetition, RGBA to RGB by dropping alpha.

Either way values are cast to the input's dtype, never rescaled. Into a quantized input
(int8/uint8 with scale and zero point) floats are quantized, ``q = round(x / scale) +
zero_point``, clipped to the dtype's range; integers of the input's own dtype pass as
they are. Floats never go silently into an integer input that is not quantized.

Image *files* are read as ``float32`` in a value range (``[0, 1]`` by default, the
digits example's; ``(0, 255)`` or ``(-1, 1)`` suit other models).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from splitmq.client.errors import InputError
from splitmq.wire import Tensor, TensorSpec

Array = npt.NDArray[Any]


@dataclass(frozen=True)
class ImageInput:
    """A picture, to be resized and converted to the model's input (see the module
    docstring); a plain array is taken as the model's values instead.

    Attributes:
        pixels: ``(H, W, C)`` (or ``(H, W)``, grey) values, already in the range the
            model reads (:func:`load_image` scales a file's 0-255 to ``value_range``).
        source: where it came from (a file name), for error messages.
    """

    pixels: Array
    source: str = ""

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.pixels.shape)


Value = Array | ImageInput
"""One input tensor's value: an array (the model's values) or an image (a picture)."""
Inputs = Value | Sequence[Value] | Mapping[str, Value]
"""What the client accepts: one value, values in input order, or values by input name."""

IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".pgm", ".ppm"}
)
ARRAY_SUFFIX = ".npy"
_LUMINANCE = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _value(given: object) -> Value:
    return given if isinstance(given, ImageInput) else np.asarray(given)


def named_inputs(inputs: Inputs, specs: Sequence[TensorSpec]) -> dict[str, Value]:
    """``inputs`` by tensor name, checked against the names ``specs`` hold."""
    names = [spec.name for spec in specs]
    if isinstance(inputs, np.ndarray) and len(names) == 1:  # the common case, first
        return {names[0]: _value(inputs)}
    if isinstance(inputs, Mapping):
        missing = [n for n in names if n not in inputs]
        unknown = [str(n) for n in inputs if n not in names]
        if missing or unknown:
            raise InputError(
                f"the model reads inputs {names}; missing {missing}, unknown {unknown}"
            )
        return {name: _value(inputs[name]) for name in names}
    if isinstance(inputs, list | tuple) and all(
        isinstance(a, np.ndarray | ImageInput) for a in inputs
    ):
        if len(inputs) != len(names):
            raise InputError(f"the model reads {len(names)} inputs {names}, got {len(inputs)}")
        return {name: _value(value) for name, value in zip(names, inputs, strict=True)}
    if len(names) != 1:
        raise InputError(
            f"the model reads {len(names)} inputs {names}: give a list or a dict by name"
        )
    return {names[0]: _value(inputs)}


def fit_inputs(
    inputs: Inputs, specs: Sequence[TensorSpec], *, resize: bool = True
) -> tuple[Tensor, ...]:
    """The tensors to send for ``inputs``, fitted to ``specs`` in their order."""
    arrays = named_inputs(inputs, specs)
    return tuple(fit_tensor(arrays[spec.name], spec, resize=resize) for spec in specs)


def fit_tensor(value: Value, spec: TensorSpec, *, resize: bool = True) -> Tensor:
    """``value`` as a tensor ``spec`` accepts (see the module docstring).

    ``resize=False`` takes an image's pixels as they are, like an array's.
    """
    if isinstance(value, ImageInput):
        values = _image_values(value, spec, resize=resize)
    else:
        values = _array_values(np.asarray(value), spec)
    return Tensor(spec.name, _cast(values, spec), spec.scale, spec.zero_point)


def _array_values(values: Array, spec: TensorSpec) -> Array:
    """An array as it is, or with the batch axis it lacks; otherwise a clear refusal."""
    _check_kind(values, spec)
    shape = tuple(spec.shape)
    if _fits(values.shape, shape):
        return values
    if shape and shape[0] in (1, -1) and _fits((1, *values.shape), shape):
        return values[None]
    raise InputError(
        f"an array of shape {_shape(values.shape)} does not fit the model's input, which "
        f"expects shape {_shape(shape)}: arrays are the values the model reads and are "
        "never resized; reshape it (only a missing batch axis is added), or give an "
        "image file to have it resized",
        source=spec.name,
    )


def _image_values(image: ImageInput, spec: TensorSpec, *, resize: bool) -> Array:
    """A picture as an ``NHWC`` batch of the input's size and channels."""
    values = np.asarray(image.pixels)
    _check_kind(values, spec)
    shape = tuple(spec.shape)
    if values.ndim == 2:
        values = values[:, :, None]
    if values.ndim != 3:
        raise InputError(
            f"an image's pixels are (height, width, channels), not {_shape(values.shape)}",
            source=image.source or spec.name,
        )
    values = values[None]
    if len(shape) != 4:
        raise InputError(
            f"an image cannot feed this input, which expects shape {_shape(shape)} (not "
            "an NHWC image): give an array of that shape",
            source=image.source or spec.name,
        )
    if resize and not _fits(values.shape, shape):
        values = _fit_image(values, shape)
    if not _fits(values.shape, shape):
        raise InputError(
            f"an image of {_shape(values.shape[1:])} (height, width, channels) does not "
            f"fit the model's input, which expects shape {_shape(shape)}",
            source=image.source or spec.name,
        )
    return values


def _check_kind(values: Array, spec: TensorSpec) -> None:
    if values.dtype.kind not in "biuf":
        raise InputError(f"an array of {values.dtype} cannot feed a tensor", source=spec.name)


def _shape(shape: Sequence[int]) -> str:
    """``(1, 8, 8, 1)``; a dimension of any size (-1) shows as ``N``."""
    dims = ["N" if d < 0 else str(d) for d in shape]
    return f"({dims[0]},)" if len(dims) == 1 else f"({', '.join(dims)})"


def _fits(got: tuple[int, ...], wanted: tuple[int, ...]) -> bool:
    return len(got) == len(wanted) and all(w in (-1, g) for w, g in zip(wanted, got, strict=True))


def _fit_image(values: Array, shape: tuple[int, ...]) -> Array:
    """An ``NHWC`` batch with the channels and height/width of ``shape``."""
    channels, wanted = values.shape[3], shape[3]
    floats = values.astype(np.float32)
    if wanted == 1 and channels in (3, 4):
        floats = (floats[..., :3] @ _LUMINANCE)[..., None]
    elif wanted == 3 and channels == 1:
        floats = np.repeat(floats, 3, axis=3)
    elif wanted == 3 and channels == 4:
        floats = floats[..., :3]
    height, width = shape[1], shape[2]
    if height > 0 and width > 0 and floats.shape[1:3] != (height, width):
        floats = _resize(floats, height, width)
    return floats if values.dtype.kind == "f" else floats.round().astype(values.dtype)


def _resize(batch: Array, height: int, width: int) -> Array:
    image_module = _pillow()
    out = np.empty((batch.shape[0], height, width, batch.shape[3]), np.float32)
    for n in range(batch.shape[0]):
        for c in range(batch.shape[3]):
            channel = image_module.fromarray(np.ascontiguousarray(batch[n, :, :, c]), mode="F")
            resized = channel.resize((width, height), image_module.Resampling.BILINEAR)
            out[n, :, :, c] = np.asarray(resized, dtype=np.float32)
    return out


def _cast(values: Array, spec: TensorSpec) -> Array:
    dtype = _dtype(spec.dtype)
    if values.dtype == dtype:
        return values
    if dtype.kind in "fb":
        return values.astype(dtype)
    if spec.scale is not None and values.dtype.kind == "f":
        return quantize(values, spec.scale, spec.zero_point or 0, dtype)
    if values.dtype.kind in "iub":
        info = np.iinfo(dtype)
        if values.size and (values.min() < info.min or values.max() > info.max):
            raise InputError(
                f"values in [{values.min()}, {values.max()}] do not fit {dtype.name}",
                source=spec.name,
            )
        return values.astype(dtype)
    raise InputError(
        f"{values.dtype} values cannot feed the {dtype.name} input without a quantization "
        "scale: convert them first",
        source=spec.name,
    )


@functools.lru_cache(maxsize=64)
def _dtype(name: str) -> np.dtype[Any]:
    """``np.dtype(name)``, parsed once per name (each request fits its input to one)."""
    return np.dtype(name)


def quantize(values: Array, scale: float, zero_point: int, dtype: np.dtype[Any]) -> Array:
    """Real values to ``dtype``: ``round(x / scale) + zero_point``, clipped to its range."""
    info = np.iinfo(dtype)
    q = np.round(np.asarray(values, np.float64) / scale) + zero_point
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize(values: Array, scale: float | None, zero_point: int | None) -> Array:
    """Quantized values back to real ones (``scale * (q - zero_point)``); floats as they are."""
    if scale is None:
        return np.asarray(values, np.float32)
    return (np.asarray(values, np.float32) - (zero_point or 0)) * np.float32(scale)


def read_outputs(
    tensors: Sequence[Tensor], order: Sequence[str] = ()
) -> tuple[dict[str, Array], dict[str, tuple[float, int]]]:
    """Output arrays by name (those in ``order`` first, in it), and the quantized ones'
    ``(scale, zero_point)``."""
    by_name = {t.name: t for t in tensors}
    names = [n for n in order if n in by_name] + [n for n in by_name if n not in order]
    quantization = {
        n: (float(t.scale), int(t.zero_point or 0))
        for n, t in by_name.items()
        if t.scale is not None
    }
    return {n: by_name[n].array for n in names}, quantization


def top_classes(
    values: Array, k: int = 5, scale: float | None = None, zero_point: int | None = None
) -> tuple[tuple[int, float], ...]:
    """The ``k`` best ``(class, score)`` of a ``(1, classes)`` output, best first; equal
    scores by class, a NaN after every number (as a stable sort of the negated scores).

    Only the scores at least the ``k``-th best's are sorted: a partition finds it in
    one pass, where sorting all of a thousand classes took most of a result's handling.
    """
    if k <= 0:
        return ()
    scores = dequantize(values, scale, zero_point).reshape(-1)
    negated = -scores  # ndarray methods below: np.partition and the like wrap them in Python
    if k < negated.size:
        partitioned = negated.copy()
        partitioned.partition(k - 1)
        kth = partitioned[k - 1]
        if not math.isnan(kth):  # fewer than k NaNs: all after the k best
            candidates = (negated <= kth).nonzero()[0]  # in class order: ties stay so
            best = candidates[negated[candidates].argsort(kind="stable")[:k]]
            return tuple(zip(best.tolist(), scores[best].tolist(), strict=True))
    best = negated.argsort(kind="stable")[:k]
    return tuple(zip(best.tolist(), scores[best].tolist(), strict=True))  # two calls, not 2k


# -- files -------------------------------------------------------------------------------


def _pillow() -> Any:
    try:
        from PIL import Image
    except ImportError:
        raise InputError(
            "reading and resizing images needs Pillow: pip install 'splitmq[client]'"
        ) from None
    return Image


def load_image(path: str | Path, value_range: tuple[float, float] = (0.0, 1.0)) -> ImageInput:
    """An image file: ``(H, W, C)`` float32 pixels scaled to ``value_range`` (grey: C = 1)."""
    image_module = _pillow()
    try:
        with image_module.open(path) as image:
            mode = "L" if image.mode in ("1", "L", "I", "I;16", "F", "LA") else "RGB"
            pixels = np.asarray(image.convert(mode), dtype=np.float32)
    except (OSError, ValueError) as error:
        raise InputError(f"cannot read the image: {error}", source=str(path)) from None
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    low, high = value_range
    scaled = (low + pixels * ((high - low) / 255.0)).astype(np.float32)
    return ImageInput(scaled, Path(path).name)


def load_array(path: str | Path) -> Array:
    """A ``.npy`` file (no pickles)."""
    try:
        return np.asarray(np.load(path, allow_pickle=False))
    except (OSError, ValueError) as error:
        raise InputError(f"cannot read the array: {error}", source=str(path)) from None


def expand_paths(paths: Iterable[str | Path]) -> list[Path]:
    """Files as given; a directory stands for its images and ``.npy`` files, sorted."""
    files: list[Path] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            files.extend(
                sorted(
                    p
                    for p in path.iterdir()
                    if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES | {ARRAY_SUFFIX}
                )
            )
        elif path.is_file():
            files.append(path)
        else:
            raise InputError("no such file or directory", source=str(path))
    return files


def load_inputs(
    paths: Iterable[str | Path],
    *,
    value_range: tuple[float, float] = (0.0, 1.0),
    batch: bool = False,
) -> list[tuple[str, Value]]:
    """``(label, value)`` per input, from image files, ``.npy`` files and directories.

    Image files give :class:`ImageInput` (resized to the model's input), ``.npy`` files
    arrays (taken as they are). With ``batch`` a ``.npy`` file holds several inputs
    along its first axis (``digits[0]``, ``digits[1]``...); otherwise one input per file.
    """
    loaded: list[tuple[str, Value]] = []
    for path in expand_paths(paths):
        suffix = path.suffix.lower()
        if suffix == ARRAY_SUFFIX:
            array = load_array(path)
            if batch and array.ndim >= 1:
                loaded.extend((f"{path.name}[{i}]", array[i]) for i in range(array.shape[0]))
            else:
                loaded.append((path.name, array))
        elif suffix in IMAGE_SUFFIXES:
            loaded.append((path.name, load_image(path, value_range)))
        else:
            raise InputError(
                f"unknown input type {suffix or '(none)'}: give images "
                f"({', '.join(sorted(IMAGE_SUFFIXES))}) or .npy files",
                source=str(path),
            )
    return loaded
