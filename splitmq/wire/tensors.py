"""Tensors on the wire: RFC 8746 typed arrays inside a tag 40 multi-dimensional array.

A tensor travels as a CBOR map::

    {"name": "block_3/add:0",
     "data": 40([[1, 28, 28, 24], 72(h'...')]),   # shape, then a typed array
     "scale": 0.0235, "zero_point": -128}          # int8 / uint8 quantization, optional

``data`` is plain RFC 8746: row-major, little endian, so a decoder with no splitmq code
rebuilds the array from the tags alone. bool has no typed-array tag; it travels as
uint8 (tag 64) with ``"dtype": "bool"`` beside it.

Decoding is zero-copy where numpy allows: the array is a read-only view of the byte
string the CBOR decoder produced.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import cbor2
import numpy as np
import numpy.typing as npt

from splitmq.errors import DecodeError, EncodeError
from splitmq.wire.cbor import Buffer, Tag
from splitmq.wire.limits import Limits

MULTI_DIM_ARRAY_TAG = 40

# RFC 8746 section 2.1: typed-array tag -> numpy dtype (little endian variants only,
# plus the single-byte ones, which have no byte order).
TYPED_ARRAY_DTYPES: dict[int, np.dtype[Any]] = {
    64: np.dtype("u1"),
    69: np.dtype("<u2"),
    70: np.dtype("<u4"),
    71: np.dtype("<u8"),
    72: np.dtype("i1"),
    77: np.dtype("<i2"),
    78: np.dtype("<i4"),
    79: np.dtype("<i8"),
    84: np.dtype("<f2"),
    85: np.dtype("<f4"),
    86: np.dtype("<f8"),
}
_TAG_OF_KIND: dict[tuple[str, int], int] = {
    (dtype.kind, dtype.itemsize): tag for tag, dtype in TYPED_ARRAY_DTYPES.items()
}
_BOOL_TAG = 64


@dataclass(frozen=True, eq=False)
class Tensor:
    """A named tensor, with its quantization when it is int8 or uint8.

    Attributes:
        name: the tensor's name in the original TFLite graph.
        array: the values; after decoding, a read-only view of the received bytes.
        scale: quantization scale (real = scale * (q - zero_point)), or None.
        zero_point: quantization zero point, or None.
    """

    name: str
    array: npt.NDArray[Any]
    scale: float | None = None
    zero_point: int | None = None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Tensor):
            return NotImplemented
        return (
            self.name == other.name
            and self.array.dtype == other.array.dtype
            and self.array.shape == other.array.shape
            and bool(
                np.array_equal(self.array, other.array, equal_nan=self.array.dtype.kind in "fc")
            )
            and self.scale == other.scale
            and self.zero_point == other.zero_point
        )

    __hash__ = None  # type: ignore[assignment]

    def __reduce__(self) -> tuple[type[Tensor], tuple[Any, ...]]:
        """Pickled as its constructor's arguments: compiled, a frozen dataclass has no
        ``__dict__`` for pickle to fill, and setting its fields one by one is refused
        (a result pickled by one process, e.g. a worker pool, and read by another)."""
        return (Tensor, (self.name, self.array, self.scale, self.zero_point))

    @property
    def nbytes(self) -> int:
        return int(self.array.nbytes)


def _typed_array_tag(dtype: np.dtype[Any]) -> int:
    if dtype.kind == "b":
        return _BOOL_TAG
    tag = _TAG_OF_KIND.get((dtype.kind, dtype.itemsize))
    if tag is None:
        raise EncodeError(f"tensors of dtype {dtype} cannot travel as an RFC 8746 typed array")
    return tag


def tensor_to_wire(tensor: Tensor) -> dict[str, Any]:
    """The CBOR-ready map for ``tensor`` (its bytes are referenced, not copied)."""
    array = np.asarray(tensor.array)
    tag = _typed_array_tag(array.dtype)
    wire_dtype = np.dtype("u1") if array.dtype.kind == "b" else TYPED_ARRAY_DTYPES[tag]
    if array.dtype != wire_dtype or sys.byteorder != "little":
        array = array.astype(wire_dtype)
    if not array.flags.c_contiguous:
        array = np.ascontiguousarray(array)
    flat: Any = array.reshape(-1)  # a view: the array is C-contiguous
    out: dict[str, Any] = {
        "name": tensor.name,
        "data": Tag(MULTI_DIM_ARRAY_TAG, [list(array.shape), Tag(tag, Buffer(flat))]),
    }
    if tensor.array.dtype.kind == "b":
        out["dtype"] = "bool"
    if tensor.scale is not None:
        out["scale"] = float(tensor.scale)
    if tensor.zero_point is not None:
        out["zero_point"] = int(tensor.zero_point)
    return out


def array_from_wire(value: Any, limits: Limits, field: str) -> npt.NDArray[Any]:
    """Rebuild an array from ``40([shape], typed-array(bytes))``, checking every part."""
    if not isinstance(value, cbor2.CBORTag) or value.tag != MULTI_DIM_ARRAY_TAG:
        raise DecodeError("expected an RFC 8746 multi-dimensional array (tag 40)", field=field)
    content = value.value
    if not isinstance(content, list | tuple) or len(content) != 2:
        raise DecodeError("tag 40 must hold [shape, typed array]", field=field)
    shape_raw, typed = content
    shape = _checked_shape(shape_raw, limits, field)
    if not isinstance(typed, cbor2.CBORTag) or typed.tag not in TYPED_ARRAY_DTYPES:
        got = f"tag {typed.tag}" if isinstance(typed, cbor2.CBORTag) else type(typed).__name__
        raise DecodeError(f"expected a little-endian RFC 8746 typed array, got {got}", field=field)
    data = typed.value
    if not isinstance(data, bytes | memoryview):
        raise DecodeError("typed array content must be a byte string", field=field)
    data_bytes = memoryview(data).nbytes
    dtype = TYPED_ARRAY_DTYPES[typed.tag]
    count = span = 1
    for dim in shape:
        count *= dim
        span *= max(dim, 1)  # numpy refuses an empty shape whose other sides overflow
    if span > limits.max_tensor_elements:
        raise DecodeError(
            f"tensor of shape {list(shape)} spans {span} elements, above the limit of "
            f"{limits.max_tensor_elements}",
            field=field,
        )
    if count * dtype.itemsize != data_bytes:
        raise DecodeError(
            f"shape {list(shape)} of {dtype.name} needs {count * dtype.itemsize} bytes, "
            f"the typed array has {data_bytes}",
            field=field,
        )
    array = np.frombuffer(data, dtype=dtype).reshape(shape)
    if sys.byteorder != "little" and dtype.itemsize > 1:
        array = array.astype(dtype.newbyteorder("="))
    return array


def _checked_shape(value: Any, limits: Limits, field: str) -> tuple[int, ...]:
    if not isinstance(value, list | tuple):
        raise DecodeError("tensor shape must be an array of integers", field=field)
    if len(value) > limits.max_rank:
        raise DecodeError(
            f"tensor rank {len(value)} is above the limit of {limits.max_rank}", field=field
        )
    for dim in value:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 0:
            raise DecodeError(
                f"tensor shape {list(value)!r} must hold non-negative integers", field=field
            )
        if dim > limits.max_tensor_elements:
            raise DecodeError(f"tensor dimension {dim} is absurdly large", field=field)
    return tuple(value)


def tensor_from_wire(value: Any, limits: Limits, field: str) -> Tensor:
    """Rebuild a :class:`Tensor` from its CBOR map."""
    if not isinstance(value, dict):
        raise DecodeError("a tensor must be a map", field=field)
    name = value.get("name")
    if not isinstance(name, str):
        raise DecodeError("a tensor needs a text 'name'", field=field)
    array = array_from_wire(value.get("data"), limits, f"{field}.data")
    dtype_name = value.get("dtype")
    if dtype_name is not None:
        if dtype_name != "bool" or array.dtype != np.dtype("u1"):
            raise DecodeError(
                f"'dtype' {dtype_name!r} is only allowed as 'bool' on uint8 data", field=field
            )
        if array.size and int(array.max()) > 1:
            raise DecodeError("bool tensor holds values other than 0 and 1", field=field)
        array = array.view(np.bool_)
    scale = value.get("scale")
    zero_point = value.get("zero_point")
    if scale is not None and (isinstance(scale, bool) or not isinstance(scale, float | int)):
        raise DecodeError("tensor 'scale' must be a number", field=field)
    if zero_point is not None and (isinstance(zero_point, bool) or not isinstance(zero_point, int)):
        raise DecodeError("tensor 'zero_point' must be an integer", field=field)
    return Tensor(
        name=name,
        array=array,
        scale=None if scale is None else float(scale),
        zero_point=zero_point,
    )
