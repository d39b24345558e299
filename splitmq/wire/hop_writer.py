"""Writing a stage's outgoing message (the next hop's activation, or the result) from
what a stream repeats: the bytes of each output tensor's map up to its data, remembered
by its name, dtype, shape and quantization, and the data itself as a part of its own.

:func:`splitmq.wire.encode_parts` walks the message's schema and turns each tensor into
a map of CBOR tags around a marker, which it then finds again in the encoded bytes: run
cold, as a stage runs it after an invoke, that is tens of microseconds per hop. Here the
fields before and after the tensors are encoded by cbor2 in one call each, and each
tensor costs a dictionary lookup. The bytes are those ``encode_parts`` gives, byte for
byte (tests check it); a tensor that would need converting first (another byte order,
not contiguous) is left to :func:`splitmq.wire.tensors.tensor_to_wire`.
"""

from __future__ import annotations

import sys
from typing import Any

import cbor2
import numpy as np

from splitmq.errors import EncodeError
from splitmq.wire.cbor import LARGE_PART, _head, dumps_parts
from splitmq.wire.tensors import (
    MULTI_DIM_ARRAY_TAG,
    TYPED_ARRAY_DTYPES,
    Tensor,
    _typed_array_tag,
    tensor_to_wire,
)

__all__ = ["encoded_message_parts", "message_parts", "text_item"]

Parts = list[bytes | bytearray | memoryview]

_MAJOR_BYTES, _MAJOR_TEXT, _MAJOR_ARRAY, _MAJOR_MAP, _MAJOR_TAG = 2, 3, 4, 5, 6
_TENSORS_KEY = cbor2.dumps("tensors")
TEMPLATES_REMEMBERED = 256
"""Tensor templates kept (all are forgotten when one more comes)."""

_Key = tuple[str, np.dtype[Any], tuple[int, ...], str | None, int | None]
_templates: dict[_Key, tuple[bytes, bytes]] = {}
"""By a tensor's name, dtype, shape, scale and zero point: its map's bytes before its
data (through the data's byte-string head) and after it."""


def message_parts(
    before: dict[str, Any], tensors: tuple[Tensor, ...], after: dict[str, Any]
) -> Parts:
    """The CBOR map of ``before``'s fields, ``tensors`` under ``"tensors"``, then
    ``after``'s fields, as :func:`splitmq.wire.cbor.dumps_parts` would write the map
    ``{**before, "tensors": [tensor_to_wire(t) ...], **after}``."""
    count = len(before) + 1 + len(after)
    if count >= 24:  # one byte of map head below: never so for our messages
        return dumps_parts({**before, "tensors": [tensor_to_wire(t) for t in tensors], **after})
    # its own map head is one byte: < 24 fields
    return encoded_message_parts(len(before), memoryview(cbor2.dumps(before))[1:], tensors, after)


def encoded_message_parts(
    fields: int,
    before: bytes | bytearray | memoryview,
    tensors: tuple[Tensor, ...],
    after: dict[str, Any],
) -> Parts:
    """:func:`message_parts` of the ``fields`` fields before the tensors already encoded
    (``before``: their keys and values, without a map head), fewer than 23 in all."""
    count = fields + 1 + len(after)
    if count >= 24:
        raise EncodeError(f"a message of {count} fields is not written by this path")
    out = bytearray(_head(_MAJOR_MAP, count))
    out += before
    out += _TENSORS_KEY
    out += _head(_MAJOR_ARRAY, len(tensors))
    parts: Parts = []
    for tensor in tensors:
        known = _tensor_parts(tensor)
        if known is None:  # a conversion first: the general way for this tensor
            parts.append(out)
            parts.extend(dumps_parts(tensor_to_wire(tensor)))
            out = bytearray()
            continue
        prefix, data, suffix = known
        out += prefix
        if data.nbytes >= LARGE_PART:
            parts.append(out)
            parts.append(data)
            out = bytearray(suffix)
        else:
            out += data
            out += suffix
    _write_fields(out, after)
    parts.append(out)
    return parts


def _write_fields(out: bytearray, fields: dict[str, Any]) -> None:
    """``fields``' keys and values as ``cbor2.dumps`` writes them in a map. A list is
    written item by item: cbor2 asks each list and tuple whether it is a
    ``collections.abc.Mapping`` first, an interpreted call per container, where a
    message's trace is a list of maps."""
    for key, value in fields.items():
        out += _key(key)
        if type(value) is list:
            out += _head(_MAJOR_ARRAY, len(value))
            for item in value:
                out += cbor2.dumps(item)
        elif type(value) is str and value.isascii():
            out += text_item(value)
        else:
            out += cbor2.dumps(value)


def text_item(value: str) -> bytes:
    """A text string as CBOR writes it (definite length, UTF-8)."""
    encoded = value.encode()
    return _head(_MAJOR_TEXT, len(encoded)) + encoded


_keys: dict[str, bytes] = {}


def _key(name: str) -> bytes:
    """A field's name, encoded (the few names of our messages, remembered)."""
    known = _keys.get(name)
    if known is None:
        known = text_item(name)
        if len(_keys) < TEMPLATES_REMEMBERED:
            _keys[name] = known
    return known


def _tensor_parts(tensor: Tensor) -> tuple[bytes, memoryview, bytes] | None:
    """``tensor``'s map as its bytes before the data, the data, and its bytes after;
    None when the array must be converted before it is written."""
    array = tensor.array
    try:
        data = array.data.cast("B")  # C-contiguous arrays only
    except TypeError:
        return None
    scale = tensor.scale
    key = (
        tensor.name,
        array.dtype,
        array.shape,
        None if scale is None else float(scale).hex(),  # -0.0 is written apart from 0.0
        tensor.zero_point,
    )
    known = _templates.get(key)
    if known is None:
        made = _template(tensor)
        if made is None:
            return None
        if len(_templates) >= TEMPLATES_REMEMBERED:
            _templates.clear()
        _templates[key] = known = made
    return known[0], data, known[1]


def _template(tensor: Tensor) -> tuple[bytes, bytes] | None:
    """The bytes :func:`tensor_to_wire`'s map has around the data, for a tensor whose
    bytes it writes as they are (None for one it converts first)."""
    array = tensor.array
    try:
        tag = _typed_array_tag(array.dtype)
    except EncodeError:
        return None
    if sys.byteorder != "little" or (
        array.dtype.kind != "b" and array.dtype != TYPED_ARRAY_DTYPES[tag]
    ):
        return None
    wire = tensor_to_wire(tensor)
    prefix = bytearray(_head(_MAJOR_MAP, len(wire)))
    prefix += cbor2.dumps("name") + cbor2.dumps(tensor.name) + cbor2.dumps("data")
    prefix += _head(_MAJOR_TAG, MULTI_DIM_ARRAY_TAG) + _head(_MAJOR_ARRAY, 2)
    prefix += cbor2.dumps(list(array.shape))
    prefix += _head(_MAJOR_TAG, tag) + _head(_MAJOR_BYTES, array.nbytes)
    rest = {name: value for name, value in wire.items() if name not in ("name", "data")}
    suffix = cbor2.dumps(rest)[1:]  # a few fields: a one-byte map head
    return bytes(prefix), suffix
