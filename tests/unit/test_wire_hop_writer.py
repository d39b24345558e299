"""A stage's outgoing message written from remembered tensor templates
(splitmq.wire.hop_writer): the bytes are those the general encoder writes for the same
map, whatever the tensors (RFC 8746 typed arrays, section 2 and 3.1), and a tensor the
encoder would convert first is written the general way."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from splitmq.errors import EncodeError
from splitmq.wire import Tensor
from splitmq.wire.cbor import LARGE_PART, dumps_parts
from splitmq.wire.hop_writer import _templates, encoded_message_parts, message_parts
from splitmq.wire.tensors import tensor_to_wire

BEFORE = {"kind": "activation", "v": 1, "request_id": bytes(16), "stage": 2}
AFTER = {"trace": [{"stage": 1, "agent_id": "a"}], "client_id": "alice"}


def join(parts: list[bytes | bytearray | memoryview]) -> bytes:
    return b"".join(bytes(part) for part in parts)


def general(tensors: tuple[Tensor, ...]) -> bytes:
    return join(dumps_parts({**BEFORE, "tensors": [tensor_to_wire(t) for t in tensors], **AFTER}))


DTYPES = ["<f4", "<f2", "<f8", "i1", "u1", "<i2", "<i4", "<i8", "<u2", "<u4", "<u8", "?"]
DTYPES += [">f4", ">i4"]  # another byte order: converted first


@st.composite
def tensors(draw: Any) -> Tensor:
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=6))
    array = draw(hnp.arrays(dtype, shape))
    if draw(st.booleans()) and array.ndim >= 2:
        array = array.T  # not contiguous: converted first
    quantized = dtype.kind in "iu" and draw(st.booleans())
    scale = draw(st.sampled_from([0.5, -0.0, 0.0, float("nan"), 1e-7])) if quantized else None
    zero_point = draw(st.integers(-128, 255)) if quantized else None
    name = draw(st.text(min_size=0, max_size=12))
    return Tensor(name, array, scale, zero_point)


@settings(max_examples=400, deadline=None)
@given(st.lists(tensors(), max_size=3), st.integers(1, 3))
def test_the_bytes_are_the_general_encoders(given: list[Tensor], times: int) -> None:
    """Written several times, so that the templates remembered the first time are used."""
    for _ in range(times):
        assert join(message_parts(BEFORE, tuple(given), AFTER)) == general(tuple(given))


def test_a_templates_tensor_data_is_sent_as_it_is_and_its_map_remembered() -> None:
    big = Tensor("y", np.arange(LARGE_PART, dtype=np.float32).reshape(1, -1))
    small = Tensor("q", np.arange(10, dtype=np.int8), 0.25, 3)
    _templates.clear()
    parts = message_parts(BEFORE, (big, small), AFTER)
    assert join(parts) == general((big, small))
    views = [p for p in parts if isinstance(p, memoryview)]
    assert any(id(v.obj) == id(big.array) for v in views), "the data is not copied"
    assert len(_templates) == 2
    again = Tensor("y", np.ones((1, LARGE_PART), np.float32))
    assert join(message_parts(BEFORE, (again, small), AFTER)) == general((again, small))
    assert len(_templates) == 2, "the same name, dtype, shape and quantization: one template"


@pytest.mark.parametrize(
    "tensor",
    [
        Tensor("t", np.arange(12, dtype=">f4").reshape(3, 4)),
        Tensor("t", np.arange(12, dtype=np.float32).reshape(3, 4).T),
        Tensor("t", np.arange(12, dtype=np.complex64)),
    ],
    ids=["big-endian", "transposed", "complex"],
)
def test_a_tensor_the_encoder_converts_or_refuses_goes_the_general_way(tensor: Tensor) -> None:
    try:
        expected: bytes | type[Exception] = general((tensor,))
    except Exception as error:
        expected = type(error)
    if isinstance(expected, bytes):
        assert join(message_parts(BEFORE, (tensor,), AFTER)) == expected
    else:
        with pytest.raises(expected):
            message_parts(BEFORE, (tensor,), AFTER)


def test_a_negative_zero_scale_is_not_written_as_zero() -> None:
    """-0.0 == 0.0, but CBOR writes them apart: their templates are too."""
    for scale in (0.0, -0.0, 0.0):
        tensor = Tensor("q", np.arange(4, dtype=np.int8), scale, 0)
        assert join(message_parts(BEFORE, (tensor,), AFTER)) == general((tensor,))


SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text() | st.binary()
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.text(max_size=8).filter(lambda key: key not in {*BEFORE, "tensors"}), VALUES, max_size=4
    )
)
def test_the_fields_after_the_tensors_are_written_as_cbor2_writes_them(
    after: dict[str, Any],
) -> None:
    """Lists item by item, ASCII text directly, anything else by cbor2: the map's bytes
    are cbor2's whatever the values (non-ASCII text, nested lists, big integers)."""
    expected = dumps_parts({**BEFORE, "tensors": [], **after})
    assert join(message_parts(BEFORE, (), after)) == join(expected)


def test_a_message_of_24_fields_or_more_is_refused_by_the_encoded_path() -> None:
    with pytest.raises(EncodeError, match="24 fields"):
        encoded_message_parts(20, b"", (), {str(n): n for n in range(3)})
