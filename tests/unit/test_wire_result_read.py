"""A client's fast path for results (splitmq.wire.hop.read_result): it reads what the
general decoder reads, through the layouts a stream of results repeats, and leaves
any other layout, and error messages, to the general decoder."""

from __future__ import annotations

import os
from dataclasses import replace

import cbor2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from splitmq.errors import DecodeError
from splitmq.wire import ErrorCode, ErrorMessage, Result, Tensor, TraceEntry, decode, encode, hop

from .test_codec_properties import messages_of
from .test_wire_hop import CUTS, EDITS, MIXED, SMALL_MIXED, mutated

TRACE = (
    TraceEntry(0, "a", 1.5, 2.5, 4.25, 1000, 0, 2400, 0.125),
    TraceEntry(1, "b", 5.0, 6.0, 7.5, 2400, 0, 4000, 0.25),
)


def result(**changes: object) -> Result:
    base = Result(
        request_id=os.urandom(16),
        attempt=0,
        deployment="d-1",
        tensors=(Tensor("logits:0", np.linspace(-1, 1, 1000, dtype=np.float32).reshape(1, 1000)),),
        trace=TRACE,
        agent_id="b",
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def _remembered(message: Result) -> bytes:
    """``message`` encoded, after a result of the same layout was read once."""
    hop.read_result(encode(replace(message, request_id=os.urandom(16))))
    return encode(message)


def _same_verdict(payload: bytes) -> None:
    """What the fast path makes of ``payload`` agrees with the general decoder."""
    try:
        read = hop.read_result(payload)
    except DecodeError:
        with pytest.raises(DecodeError):
            decode(payload, expect=Result)
        return
    if read is not None:
        assert read == decode(payload, expect=Result)


VARIANTS: dict[str, dict[str, object]] = {
    "a chain's": {},
    "a retry": {"attempt": 3},
    "a stage graph's share": {"stage": 4},
    "no trace": {"trace": ()},
    "several tensors": {"tensors": MIXED},
}


@pytest.mark.parametrize("name", VARIANTS)
def test_a_result_reads_as_the_general_decoder_reads_it(name: str) -> None:
    message = result(**VARIANTS[name])
    first = encode(message)
    assert hop.read_result(first) == decode(first, expect=Result) == message
    again = replace(message, request_id=os.urandom(16))
    payload = encode(again)
    assert hop._RESULTS.read(payload, memoryview(payload)) is not None  # the layout's path
    assert hop.read_result(payload) == decode(payload, expect=Result) == again


def test_results_that_share_a_head_and_not_their_tensors_each_keep_their_layout() -> None:
    """A stage graph's final stages answer the same request with different tensors."""
    left = result(stage=3, tensors=(Tensor("left:0", np.ones((1, 10), np.float32)),))
    right = result(stage=4, tensors=(Tensor("right:0", np.zeros((1, 4), np.int8)),))
    for message in (left, right):
        hop.read_result(encode(message))
    for _ in range(2):
        for message in (left, right):
            again = replace(message, request_id=os.urandom(16))
            payload = encode(again)
            assert hop._RESULTS.read(payload, memoryview(payload)) is not None
            assert hop.read_result(payload) == again


@pytest.mark.parametrize(
    "payload",
    [
        encode(ErrorMessage(os.urandom(16), 0, 1, "a", ErrorCode.OVERLOADED, "busy", "d-1")),
        cbor2.dumps(dict(reversed(list(cbor2.loads(encode(result())).items())))),
        cbor2.dumps({**cbor2.loads(encode(result())), "v": 99}),
        b"\xa0",
        b"",
    ],
    ids=["error message", "reordered", "newer", "empty map", "empty"],
)
def test_another_layout_is_left_to_the_general_decoder(payload: bytes) -> None:
    assert hop.read_result(payload) is None


def test_a_wrong_field_in_our_layout_is_an_error() -> None:
    raw = cbor2.loads(encode(result()))
    for wrong in ({"attempt": "two"}, {"request_id": b"abc"}, {"trace": [{"stage": "x"}]}):
        with pytest.raises(DecodeError):
            hop.read_result(cbor2.dumps({**raw, **wrong}))
        with pytest.raises(DecodeError):
            decode(cbor2.dumps({**raw, **wrong}), expect=Result)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(message=messages_of(Result))
def test_random_results_read_as_the_general_decoder_reads_them(message: Result) -> None:
    _same_verdict(encode(message))
    _same_verdict(encode(message))  # the second through its layout, when it has one


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edits=EDITS, cut=CUTS)
def test_mutations_of_a_remembered_layout_get_the_general_decoders_verdict(
    edits: list[tuple[int, int]], cut: int
) -> None:
    payload = _remembered(result(tensors=SMALL_MIXED, stage=2))
    _same_verdict(mutated(payload, edits, cut))
