"""The per-hop fast path (splitmq.wire.hop): it reads what the general decoder reads,
returns None for any other layout, and forwards exactly the bytes ``encode_parts``
gives for the same message."""

from __future__ import annotations

import os
from dataclasses import fields, replace

import cbor2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from splitmq.errors import DecodeError
from splitmq.wire import Activation, Result, Tensor, TraceEntry, decode, encode, encode_parts, hop

from .test_codec_properties import messages_of

REQUEST_ID = bytes(range(16))


def join(parts: list[bytes | bytearray | memoryview]) -> bytes:
    return b"".join(bytes(part) for part in parts)


def activation(**changes: object) -> Activation:
    base = Activation(
        request_id=REQUEST_ID,
        attempt=2,
        deployment="d-1",
        stage=1,
        route=(("a",), ("b", "b2"), ("c",)),
        callback="splitmq/v1/clients/alice/result",
        deadline_ms=1_800_000_000_000,
        tensors=(Tensor("x:0", np.arange(600, dtype=np.float32).reshape(1, 600)),),
        trace=(TraceEntry(0, "a", 1.5, 2.5, 4.25, 1000, 2, 2400, 0.125),),
        client_id="alice",
    )
    return replace(base, **changes)  # type: ignore[arg-type]


OUTPUTS = (
    Tensor("y:0", np.linspace(-1, 1, 70_000, dtype=np.float32)),  # a part of its own
    Tensor("q:0", np.arange(-5, 5, dtype=np.int8), scale=0.5, zero_point=-3),
    Tensor("m:0", np.array([True, False])),
)
ENTRY = hop.trace_entry(
    stage=1,
    agent_id="b",
    received_ms=10.0,
    started_ms=11.0,
    finished_ms=15.5,
    bytes_in=2400,
    attempt=2,
    bytes_out=5,
    energy_j=0.5,
)
MESSAGES = {
    "chain": activation(),
    "no trace": activation(stage=0, trace=()),
    "a stage graph's source": activation(source=0),
    "large, quantized": activation(
        tensors=(Tensor("x:0", np.ones((1, 300, 300, 3), np.int8), scale=0.1, zero_point=4),)
    ),
    "names holding the key's bytes": activation(deployment="gtensors", client_id="gtensors"),
}


@pytest.mark.parametrize("name", MESSAGES)
def test_it_reads_what_the_general_decoder_reads(name: str) -> None:
    message = MESSAGES[name]
    payload = bytearray(encode(message))
    read = hop.read(payload)
    assert read is not None
    assert read.activation() == decode(payload, expect=Activation) == message
    assert read.head["v"] == Activation.VERSION


@pytest.mark.parametrize("name", MESSAGES)
def test_it_forwards_the_bytes_encode_parts_gives(name: str) -> None:
    message = MESSAGES[name]
    read = hop.read(encode(message))
    assert read is not None
    entry = TraceEntry(**ENTRY)
    forward = replace(
        message, stage=message.stage + 1, tensors=OUTPUTS, trace=(*message.trace, entry)
    )
    assert join(hop.forward_parts(read, OUTPUTS, ENTRY)) == join(encode_parts(forward))
    assert join(hop.forward_parts(read, OUTPUTS, ENTRY)) == encode(forward)
    result = Result(
        request_id=message.request_id,
        attempt=message.attempt,
        deployment=message.deployment,
        tensors=OUTPUTS,
        trace=(*message.trace, entry),
        agent_id="b",
    )
    assert join(hop.result_parts(read, OUTPUTS, ENTRY, "b")) == encode(result)
    # the same through the general decoder's hop, and in-process to the next stage
    general = hop.Hop.of(decode(encode(message), expect=Activation))
    assert join(hop.forward_parts(general, OUTPUTS, ENTRY)) == encode(forward)
    assert read.following(OUTPUTS, ENTRY).activation() == forward


def test_the_trace_entry_map_is_the_codecs() -> None:
    assert list(hop.trace_entry(**ENTRY)) == [f.name for f in fields(TraceEntry)]


def reordered(message: Activation) -> bytes:
    """The same message as another encoder may lay it out: keys in another order."""
    raw = cbor2.loads(encode(message))
    return cbor2.dumps(dict(reversed(list(raw.items()))))


@pytest.mark.parametrize(
    "payload",
    [
        reordered(activation()),
        cbor2.dumps({**cbor2.loads(encode(activation())), "future": 1}),  # an unknown field
        encode(Result(REQUEST_ID, 0, "d", OUTPUTS)),  # another kind
        cbor2.dumps({**cbor2.loads(encode(activation())), "v": 99}),  # a newer version
        b"\xa0",
        b"",
    ],
    ids=["reordered", "unknown field", "result", "newer", "empty map", "empty"],
)
def test_another_layout_is_left_to_the_general_decoder(payload: bytes) -> None:
    assert hop.read(payload) is None


def test_a_wrong_field_in_our_layout_is_an_error() -> None:
    raw = cbor2.loads(encode(activation()))
    with pytest.raises(DecodeError):
        hop.read(cbor2.dumps({**raw, "attempt": "two"}))
    with pytest.raises(DecodeError):
        hop.read(cbor2.dumps({**raw, "request_id": os.urandom(3)}))
    with pytest.raises(DecodeError):
        hop.read(cbor2.dumps({**raw, "trace": [{"stage": "x"}]}))
    with pytest.raises(DecodeError):
        hop.read(encode(activation()) + b"\x00")  # trailing bytes


def _same_verdict(payload: bytes) -> None:
    """What the fast path makes of ``payload`` agrees with the general decoder."""
    try:
        read = hop.read(payload)
    except DecodeError:
        with pytest.raises(DecodeError):
            decode(payload, expect=Activation)
        return
    if read is not None:
        general = decode(payload, expect=Activation)
        # the same message, compared as its bytes: a mutated time may be NaN, which is a
        # float the wire allows and equal to nothing, itself included
        assert encode(read.activation()) == encode(general)
        entry = TraceEntry(**ENTRY)
        forward = replace(general, stage=general.stage + 1, trace=(*general.trace, entry))
        assert join(hop.forward_parts(read, general.tensors, ENTRY)) == encode(forward)
        result = Result(
            request_id=general.request_id,
            attempt=general.attempt,
            deployment=general.deployment,
            tensors=general.tensors,
            trace=(*general.trace, entry),
            agent_id="b",
        )
        assert join(hop.result_parts(read, general.tensors, ENTRY, "b")) == encode(result)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(message=messages_of(Activation))
def test_a_request_is_written_as_encode_parts_writes_it(message: Activation) -> None:
    """The client's first activation, with no trace and no stage graph's fields (what
    request_parts writes itself) and as generated (what it leaves to the codec)."""
    first = replace(message, trace=(), source=None, branch=None, retry=None)
    for each in (first, message):
        assert join(hop.request_parts(each)) == join(encode_parts(each))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(message=messages_of(Activation))
def test_random_activations_read_as_the_general_decoder_reads_them(message: Activation) -> None:
    _same_verdict(encode(message))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    edits=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=4),
    cut=st.integers(0, 400),
)
def test_mutated_activations_get_the_general_decoders_verdict(
    edits: list[tuple[int, int]], cut: int
) -> None:
    payload = bytearray(encode(activation()))
    for position, value in edits:
        payload[position % 400] = value  # the fields around the tensors' start
    if cut % 3 == 0:
        del payload[len(payload) - cut :]
    _same_verdict(bytes(payload))


# -- the layouts a stream repeats (splitmq.wire.hop_layouts) ---------------------------


MIXED = (
    Tensor("q:0", np.arange(-50, 50, dtype=np.int8), scale=0.5, zero_point=-3),
    Tensor("m:0", np.array([[True, False], [False, True]])),
    Tensor("big:0", np.ones((1, 64, 64, 3), np.float32)),
)
"""Tensors of every kind a layout keeps: quantized, bool, large (a part of its own)."""
SMALL_MIXED = MIXED[:2]
EDITS = st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=3)
CUTS = st.integers(0, 3000)


def mutated(payload: bytes, edits: list[tuple[int, int]], cut: int) -> bytes:
    """``payload`` with ``edits`` (position, byte) made, and cut short every fourth ``cut``."""
    changed = bytearray(payload)
    for position, value in edits:
        changed[position % len(changed)] = value
    if cut % 4 == 0:
        del changed[len(changed) - cut % len(changed) :]
    return bytes(changed)


def _remembered(message: Activation) -> bytes:
    """``message`` encoded, after a message of the same layout was read once."""
    hop.read(encode(replace(message, request_id=os.urandom(16))))
    return encode(message)


LAYOUT_CHANGES: dict[str, dict[str, object]] = {
    "another request": {"request_id": os.urandom(16), "deadline_ms": 1_900_000_000_123},
    "no deadline": {"deadline_ms": 0},
    "other tensor values": {
        "tensors": (Tensor("x:0", np.linspace(0, 1, 600, dtype=np.float32).reshape(1, 600)),)
    },
    "a longer trace": {
        "trace": (
            TraceEntry(0, "a", 1.5, 2.5, 4.25, 1000, 2, 2400, 0.125),
            TraceEntry(1, "b", 5.0, 6.0, 7.5, 2400, 2, 80, 0.25),
        )
    },
    "quantized and bool tensors": {"tensors": MIXED},
}


@pytest.mark.parametrize("name", LAYOUT_CHANGES)
def test_a_remembered_layout_reads_what_the_general_decoder_reads(name: str) -> None:
    message = activation(**LAYOUT_CHANGES[name])
    payload = _remembered(message)
    view = memoryview(payload)
    assert hop._LAYOUTS.read(payload, view) is not None  # the layout's path, not the general
    read = hop.read(payload)
    assert read is not None
    assert read.activation() == decode(payload, expect=Activation) == message
    trace = (*message.trace, TraceEntry(**ENTRY))
    forward = replace(message, stage=2, tensors=OUTPUTS, trace=trace)
    assert join(hop.forward_parts(read, OUTPUTS, ENTRY)) == encode(forward)


def test_a_layout_is_remembered_only_for_the_default_limits() -> None:
    from splitmq.wire.limits import DEFAULT_LIMITS

    message = activation(deployment="limits-only")
    payload = encode(message)
    hop.read(payload, replace(DEFAULT_LIMITS, max_items=100))
    assert hop._LAYOUTS.read(payload, memoryview(payload)) is None


def test_a_bool_tensor_is_checked_on_a_remembered_layout() -> None:
    message = activation(tensors=(Tensor("m:0", np.array([True, False, True])),))
    payload = bytearray(_remembered(message))
    flag = payload.index(bytes([1, 0, 1]))
    payload[flag + 1] = 2  # not a bool
    assert hop._LAYOUTS.read(bytes(payload), memoryview(bytes(payload))) is None
    with pytest.raises(DecodeError, match="bool"):
        decode(bytes(payload), expect=Activation)
    _same_verdict(bytes(payload))


def test_a_trace_written_otherwise_is_converted_as_the_codec_converts_it() -> None:
    raw = cbor2.loads(encode(activation()))
    entry = dict(raw["trace"][0])
    entry["received_ms"] = 2  # an integer for a float
    reordered_entry = dict(reversed(list(entry.items())))
    for trace in ([entry], [reordered_entry], [{**entry, "extra": 1}]):
        payload = cbor2.dumps({**raw, "trace": trace})
        read = hop.read(payload)
        assert read is not None
        assert read.activation() == decode(payload, expect=Activation)
        assert read.trace[0]["received_ms"] == 2.0 and type(read.trace[0]["received_ms"]) is float


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edits=EDITS, cut=CUTS)
def test_mutations_of_a_remembered_layout_get_the_general_decoders_verdict(
    edits: list[tuple[int, int]], cut: int
) -> None:
    payload = _remembered(activation(tensors=SMALL_MIXED))
    _same_verdict(mutated(payload, edits, cut))
