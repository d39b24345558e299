"""Property tests: random messages round trip; random and mutated bytes never crash."""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from splitmq.errors import DecodeError
from splitmq.wire import Message, Tensor, decode, encode
from splitmq.wire import cbor as wire_cbor
from splitmq.wire.messages import MESSAGE_TYPES, REQUEST_ID_BYTES

from .samples import sample_messages

TENSOR_DTYPES = ["<f4", "<f2", "i1", "u1", "<i4", "<i8", "?"]


@st.composite
def tensors(draw: st.DrawFn) -> Tensor:
    dtype = np.dtype(draw(st.sampled_from(TENSOR_DTYPES)))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5))
    elements = st.floats(width=16, allow_nan=False) if dtype.kind == "f" else None
    array = draw(hnp.arrays(dtype, shape, elements=elements))
    quantized = dtype.kind in "iu" and dtype.itemsize == 1 and draw(st.booleans())
    return Tensor(
        draw(st.text(max_size=20)),
        array,
        scale=draw(st.floats(1e-6, 10.0)) if quantized else None,
        zero_point=draw(st.integers(-128, 127)) if quantized else None,
    )


def strategy_for(hint: Any, name: str = "") -> st.SearchStrategy[Any]:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        inner = next(a for a in args if a is not type(None))
        return st.none() | strategy_for(inner, name)
    if origin is tuple:
        return st.lists(strategy_for(args[0]), max_size=4).map(tuple)
    if origin is dict:
        return st.dictionaries(st.text(max_size=10), strategy_for(args[1]), max_size=4)
    if hint is Tensor:
        return tensors()
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return st.sampled_from(list(hint))
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return messages_of(hint)
    if hint is bytes:
        if name == "request_id":
            return st.binary(min_size=REQUEST_ID_BYTES, max_size=REQUEST_ID_BYTES)
        return st.binary(max_size=64)
    if hint is str:
        return st.text(max_size=30)
    if hint is bool:
        return st.booleans()
    if hint is int:
        return st.integers(-(2**63), 2**64 - 1)
    if hint is float:
        return st.floats(allow_nan=False)
    raise TypeError(hint)


def messages_of(cls: type[Any]) -> st.SearchStrategy[Any]:
    hints = typing.get_type_hints(cls)
    fields = {f.name: strategy_for(hints[f.name], f.name) for f in dataclasses.fields(cls)}
    return st.builds(cls, **fields)


any_message = st.one_of([messages_of(cls) for cls in MESSAGE_TYPES])
decoder_paths = st.sampled_from([0, 1 << 62])


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(message=any_message, threshold=decoder_paths)
def test_random_messages_round_trip(message: Message, threshold: int) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(wire_cbor, "ZERO_COPY_THRESHOLD", threshold)
        assert decode(encode(message)) == message


def _decode_or_fail_cleanly(payload: bytes) -> None:
    try:
        decoded = decode(payload)
    except DecodeError as error:
        assert str(error)
    else:
        assert isinstance(decoded, Message)
        encode(decoded)  # whatever decodes is a well-formed message


@settings(max_examples=1500, deadline=None)
@given(payload=st.binary(max_size=256), threshold=decoder_paths)
def test_random_bytes_never_crash_the_decoder(payload: bytes, threshold: int) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(wire_cbor, "ZERO_COPY_THRESHOLD", threshold)
        _decode_or_fail_cleanly(payload)


SAMPLES = [encode(m) for m in sample_messages()]


@settings(max_examples=1500, deadline=None)
@given(
    sample=st.sampled_from(SAMPLES),
    edits=st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 255)), max_size=4),
    cut=st.integers(0, 1 << 20),
    threshold=decoder_paths,
)
def test_mutated_messages_never_crash_the_decoder(
    sample: bytes, edits: list[tuple[int, int]], cut: int, threshold: int
) -> None:
    payload = bytearray(sample)
    for position, value in edits:
        payload[position % len(payload)] = value
    if cut % 3 == 0:  # a third of the cases are also truncated
        del payload[len(payload) - cut % (len(payload) + 1) :]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(wire_cbor, "ZERO_COPY_THRESHOLD", threshold)
        _decode_or_fail_cleanly(bytes(payload))


@st.composite
def lying_tensor_payloads(draw: st.DrawFn) -> bytes:
    """Well-formed CBOR activations whose tensor headers say anything at all."""
    import cbor2

    shape = draw(st.lists(st.integers(-2, 2**64 - 1) | st.integers(0, 8), max_size=10))
    data = draw(st.binary(max_size=256))
    tag = draw(st.sampled_from([64, 72, 77, 78, 84, 85, 86, 81, 99]))
    return bytes(
        cbor2.dumps(
            {
                "kind": "activation",
                "v": 1,
                "request_id": bytes(REQUEST_ID_BYTES),
                "attempt": 0,
                "deployment": "d",
                "stage": 0,
                "route": [],
                "callback": "cb",
                "deadline_ms": 0,
                "tensors": [
                    {"name": "x", "data": cbor2.CBORTag(40, [shape, cbor2.CBORTag(tag, data)])}
                ],
            }
        )
    )


@pytest.mark.slow  # seconds of work: the full tier runs it (make test)
@settings(max_examples=1500, deadline=None)
@given(payload=lying_tensor_payloads(), threshold=decoder_paths)
def test_lying_tensor_headers_never_crash_the_decoder(payload: bytes, threshold: int) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(wire_cbor, "ZERO_COPY_THRESHOLD", threshold)
        _decode_or_fail_cleanly(payload)
