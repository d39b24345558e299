"""The codec: round trips, the exact bytes, RFC 8746 interop, and hostile input."""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from dataclasses import replace

import cbor2
import numpy as np
import pytest

from splitmq.errors import DecodeError, EncodeError
from splitmq.wire import (
    Activation,
    AgentState,
    AgentStatus,
    Limits,
    Message,
    Ping,
    Result,
    Telemetry,
    Tensor,
    decode,
    encode,
    encode_parts,
    kinds,
)
from splitmq.wire import cbor as wire_cbor
from splitmq.wire.messages import MESSAGE_TYPES

from .samples import REQUEST_ID, sample_messages


@pytest.fixture(params=["cbor2", "zero-copy"])
def decoder_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Run a test through each of the two decoding paths."""
    threshold = 1 << 62 if request.param == "cbor2" else 0
    monkeypatch.setattr(wire_cbor, "ZERO_COPY_THRESHOLD", threshold)
    yield request.param


def activation(*tensors: Tensor) -> Activation:
    return Activation(
        request_id=REQUEST_ID,
        attempt=0,
        deployment="d1",
        stage=0,
        route=(("a",),),
        callback="cb",
        deadline_ms=1,
        tensors=tensors,
    )


@pytest.mark.parametrize("message", sample_messages(), ids=lambda m: type(m).__name__)
def test_every_message_round_trips(message: Message, decoder_path: str) -> None:
    decoded = decode(encode(message))
    assert type(decoded) is type(message)
    assert decoded == message


def test_samples_cover_every_kind() -> None:
    assert {type(m) for m in sample_messages()} == set(MESSAGE_TYPES)
    assert set(kinds()) == {cls.KIND for cls in MESSAGE_TYPES}
    assert len(kinds()) == len(MESSAGE_TYPES), "two message types share a kind"


def test_exact_bytes_of_a_ping() -> None:
    # A fixed-byte fixture: the format must not drift by accident.
    payload = encode(Ping("c1", "coord", 1.5))
    expected = bytes.fromhex(
        "a5"  # map of 5
        "646b696e64"
        "68636d642e70696e67"  # "kind": "cmd.ping"
        "6176"
        "01"  # "v": 1
        "6a636f6d6d616e645f6964"
        "626331"  # "command_id": "c1"
        "66697373756572"
        "65636f6f7264"  # "issuer": "coord"
        "6773656e745f6d73"
        "fb3ff8000000000000"  # "sent_ms": 1.5
    )
    assert payload == expected


# An AgentStatus with every optional field at its default, as written before agents
# declared their tensor dtypes: 17 pairs, ``link`` (None) left off.
STATUS_BEFORE_TENSOR_DTYPES = bytes.fromhex(
    "b1646b696e6466737461747573617601686167656e745f69646161657374617465666f6e6c696e65"
    "6574735f6d73006776657273696f6e606772756e74696d65606f72756e74696d655f76657273696f"
    "6e6065636f726573006c6d656d6f72795f6279746573006770726f66696c65606d6361636865645f"
    "736861726473806c73706565645f67666c6f7073fb00000000000000006e6163746976655f706f77"
    "65725f77fb00000000000000006c69646c655f706f7765725f77fb00000000000000006e72616469"
    "6f5f6a5f7065725f6d62fb00000000000000006e636f6d707574655f666163746f72fb3ff0000000"
    "000000"
)


def test_a_status_without_tensor_dtypes_writes_the_bytes_it_wrote_before() -> None:
    # None ("any dtype") is left off the wire: an agent that declares nothing writes
    # what older agents write, and their statuses read back as declaring nothing.
    assert encode(AgentStatus("a", AgentState.ONLINE)) == STATUS_BEFORE_TENSOR_DTYPES
    assert decode(STATUS_BEFORE_TENSOR_DTYPES) == AgentStatus("a", AgentState.ONLINE)


def test_declared_tensor_dtypes_are_one_more_pair_at_the_end() -> None:
    declared = AgentStatus("a", AgentState.ONLINE, tensor_dtypes=("float32", "uint8"))
    payload = encode(declared)
    # map of 18 (0xb2), the same pairs, then "tensor_dtypes": ["float32", "uint8"]
    assert payload == (
        b"\xb2"
        + STATUS_BEFORE_TENSOR_DTYPES[1:]
        + bytes.fromhex("6d74656e736f725f6474797065738267666c6f617433326575696e7438")
    )
    assert decode(payload) == declared


RFC8746_LITTLE_ENDIAN = {
    # The typed-array tags of RFC 8746 section 2.1, written out independently of splitmq.
    64: "u1",
    72: "i1",
    77: "<i2",
    78: "<i4",
    79: "<i8",
    84: "<f2",
    85: "<f4",
    86: "<f8",
}


@pytest.mark.parametrize(
    "dtype", ["float32", "float16", "int8", "uint8", "int32", "int64", "int16", "float64"]
)
def test_plain_cbor2_rebuilds_a_tensor_from_rfc8746_alone(dtype: str) -> None:
    rng = np.random.default_rng(1)
    array = (rng.standard_normal((2, 3, 4)) * 50).astype(dtype)
    raw = cbor2.loads(encode(activation(Tensor("t", array))))
    tag40 = raw["tensors"][0]["data"]
    assert isinstance(tag40, cbor2.CBORTag) and tag40.tag == 40
    shape, typed = tag40.value
    rebuilt = np.frombuffer(typed.value, dtype=RFC8746_LITTLE_ENDIAN[typed.tag]).reshape(shape)
    assert rebuilt.dtype == array.dtype
    assert np.array_equal(rebuilt, array)


def test_we_read_what_plain_cbor2_writes() -> None:
    array = np.arange(12, dtype="<f4").reshape(3, 4)
    payload = cbor2.dumps(
        {
            "kind": "activation",
            "v": 1,
            "request_id": REQUEST_ID,
            "attempt": 0,
            "deployment": "d",
            "stage": 2,
            "route": [["a"], ["b"]],
            "callback": "cb",
            "deadline_ms": 5,
            "tensors": [
                {
                    "name": "x",
                    "data": cbor2.CBORTag(40, [[3, 4], cbor2.CBORTag(85, array.tobytes())]),
                }
            ],
            "a_field_from_the_future": {"ignored": True},
        }
    )
    message = decode(payload, expect=Activation)
    assert message.stage == 2 and message.route == (("a",), ("b",))
    assert np.array_equal(message.tensors[0].array, array)


@pytest.mark.parametrize("dtype", ["float32", "float16", "int8", "uint8", "int32", "int64", "bool"])
def test_tensor_dtypes_round_trip(dtype: str, decoder_path: str) -> None:
    rng = np.random.default_rng(2)
    array = (rng.standard_normal((1, 5, 7)) * 100).astype(dtype)
    scale, zero_point = (0.05, -3) if dtype in ("int8", "uint8") else (None, None)
    tensor = Tensor("t", array, scale, zero_point)
    decoded = decode(encode(activation(tensor)), expect=Activation).tensors[0]
    assert decoded == tensor
    assert decoded.array.dtype == np.dtype(dtype)


@pytest.mark.parametrize("shape", [(), (0,), (3, 0, 2), (1,)])
def test_scalar_and_empty_tensors(shape: tuple[int, ...], decoder_path: str) -> None:
    tensor = Tensor("t", np.zeros(shape, dtype=np.float32))
    assert decode(encode(activation(tensor)), expect=Activation).tensors[0] == tensor


def test_non_contiguous_and_big_endian_arrays_are_sent_as_little_endian() -> None:
    base = np.arange(24, dtype=">i4").reshape(4, 6)
    view = base[:, ::2]
    decoded = decode(encode(activation(Tensor("t", view))), expect=Activation).tensors[0].array
    assert decoded.dtype == np.dtype("<i4")
    assert np.array_equal(decoded, view)


def test_large_tensors_decode_without_a_copy() -> None:
    array = np.random.default_rng(3).random((1, 112, 112, 16), dtype=np.float32)
    payload = encode(activation(Tensor("t", array)))
    assert len(payload) > wire_cbor.ZERO_COPY_THRESHOLD
    decoded = decode(payload, expect=Activation).tensors[0].array
    assert np.shares_memory(decoded, np.frombuffer(payload, dtype=np.uint8))
    assert not decoded.flags.writeable
    assert np.array_equal(decoded, array)


@pytest.mark.parametrize("message", sample_messages(), ids=lambda m: type(m).__name__)
def test_encoded_parts_join_to_the_encoded_bytes(message: Message) -> None:
    assert b"".join(encode_parts(message)) == encode(message)


def test_encoded_parts_reference_large_tensors_and_are_few() -> None:
    big = np.random.default_rng(4).random((1, 224, 224, 3), dtype=np.float32)
    small = np.arange(10, dtype=np.float32)
    parts = encode_parts(activation(Tensor("big", big), Tensor("small", small)))
    assert len(parts) == 3, "the small items joined around the one large buffer"
    assert [np.shares_memory(np.frombuffer(p, np.uint8), big) for p in parts] == [0, 1, 0]
    assert b"".join(parts) == encode(activation(Tensor("big", big), Tensor("small", small)))


def test_spliced_buffers_give_the_bytes_cbor2_writes_for_the_same_message() -> None:
    tensors = (Tensor("big", np.arange(8192, dtype=np.float32)), Tensor("small", np.ones(3)))
    message = activation(*tensors)
    plain = cbor2.loads(encode(message))  # byte strings in place of the buffers
    assert encode(message) == cbor2.dumps(plain)


def test_a_field_that_happens_to_equal_a_buffer_marker_is_an_encode_error() -> None:
    marker = wire_cbor._MARKER_PREFIX + (0).to_bytes(4, "big")
    message = replace(activation(Tensor("t", np.ones(4, np.float32))), request_id=marker)
    with pytest.raises(EncodeError, match="marker"):
        encode(message)


def test_unsupported_dtype_is_an_encode_error() -> None:
    with pytest.raises(EncodeError, match="complex64"):
        encode(activation(Tensor("t", np.zeros(2, dtype=np.complex64))))


def test_request_id_must_be_16_bytes() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        Activation(b"short", 0, "d", 0, (), "cb", 0, ())


def test_expect_rejects_other_kinds() -> None:
    payload = encode(Ping("c", "coord", 0.0))
    with pytest.raises(DecodeError, match="expected a message of kind 'telemetry'"):
        decode(payload, expect=Telemetry)


def test_decode_error_names_the_topic() -> None:
    with pytest.raises(DecodeError) as info:
        decode(b"\xff", topic="splitmq/v1/stage/d/0/a")
    assert info.value.topic == "splitmq/v1/stage/d/0/a"
    assert "splitmq/v1/stage/d/0/a" in str(info.value)


def _map(**fields: object) -> bytes:
    return cbor2.dumps(fields)


def _tensor_payload(shape: list[int], tag: int, data: bytes) -> bytes:
    return _map(
        kind="activation",
        v=1,
        request_id=REQUEST_ID,
        attempt=0,
        deployment="d",
        stage=0,
        route=[],
        callback="cb",
        deadline_ms=0,
        tensors=[{"name": "x", "data": cbor2.CBORTag(40, [shape, cbor2.CBORTag(tag, data)])}],
    )


def _nested(depth: int) -> bytes:
    return b"\x81" * depth + b"\x00"


HOSTILE = {
    "empty": (b"", "truncated"),
    "truncated map": (b"\xa2\x64kind", "truncated"),
    "truncated tensor": (_tensor_payload([1000], 85, bytes(4000))[:-100], "truncated"),
    "reserved info": (b"\x1c", "malformed"),
    "break outside indefinite": (b"\xff", "malformed"),
    "indefinite map": (b"\xbf\x64kind\x64ping\xff", "indefinite|malformed"),
    "not a map": (cbor2.dumps([1, 2, 3]), "must be a CBOR map"),
    "no kind": (_map(v=1), "needs a text 'kind'"),
    "unknown kind": (_map(kind="launch_missiles", v=1), "unknown message kind 'launch_missiles'"),
    "newer version": (
        _map(kind="cmd.ping", v=99, command_id="c", issuer="i", sent_ms=0.0),
        "newer",
    ),
    "bad version": (_map(kind="cmd.ping", v="1", command_id="c", issuer="i", sent_ms=0.0), "'v'"),
    "missing field": (
        _map(kind="cmd.ping", v=1, command_id="c", sent_ms=0.0),
        "missing required field 'issuer'",
    ),
    "mistyped field": (
        _map(kind="cmd.ping", v=1, command_id=7, issuer="i", sent_ms=0.0),
        "expected str, got an integer in field 'command_id'",
    ),
    "bool for int": (
        _map(kind="cmd.unload", v=1, command_id="c", issuer="i", deployment="d", stage=True),
        "expected int, got a boolean",
    ),
    "bad enum": (_map(kind="status", v=1, agent_id="a", state="asleep"), "'asleep' is not one of"),
    "shape mismatch": (
        _tensor_payload([2, 3], 85, bytes(20)),
        "needs 24 bytes, the typed array has 20",
    ),
    "absurd shape": (
        _tensor_payload([1 << 40, 1 << 40], 85, b""),
        "absurdly large|above the limit",
    ),
    "huge element count": (_tensor_payload([1 << 20, 1 << 20], 85, b""), "above the limit"),
    "empty but huge": (  # no element, yet numpy cannot even make the shape
        _tensor_payload([0, 166, 1410, 7085, 37107, 37472], 85, b""),
        "above the limit",
    ),
    "negative dim": (_tensor_payload([-1], 85, b""), "non-negative"),
    "deep rank": (_tensor_payload([1] * 20, 85, bytes(4)), "rank 20"),
    "big endian float": (_tensor_payload([1], 81, bytes(4)), "little-endian RFC 8746 typed array"),
    "not tag 40": (
        _map(
            kind="result",
            v=1,
            request_id=REQUEST_ID,
            attempt=0,
            deployment="d",
            tensors=[{"name": "x", "data": b"\x00"}],
        ),
        "tag 40",
    ),
    "short request id": (
        _map(
            kind="error",
            v=1,
            request_id=b"x",
            attempt=0,
            stage=0,
            agent_id="a",
            code="internal",
            message="m",
        ),
        "16 bytes",
    ),
    "deep nesting": (_nested(10_000), "depth|nesting"),
    "trailing bytes": (cbor2.dumps({"kind": "cmd.ping"}) + b"\x00", "trailing"),
    "shared reference": (bytes.fromhex("d81c81d81d00"), "tag 28|semantic tag|malformed"),
    "regex tag": (bytes.fromhex("d82363612e62"), "tag 35|semantic tag|malformed"),
    "duplicate keys": (b"\xa2\x64kind\x01\x64kind\x02", "(?i)duplicate"),
    "invalid utf-8": (b"\xa1\x62\xff\xfe\x00", "utf-8|UTF-8|malformed"),
    "huge declared bytes": (b"\x5b\x00\x00\x10\x00\x00\x00\x00\x00", "truncated|malformed"),
    "huge declared array": (
        b"\x9b\x00\x00\x10\x00\x00\x00\x00\x00",
        "truncated|malformed|cannot fit",
    ),
}


@pytest.mark.parametrize("case", HOSTILE, ids=str)
def test_hostile_bytes_raise_one_clear_error(case: str, decoder_path: str) -> None:
    payload, reason = HOSTILE[case]
    with pytest.raises(DecodeError, match=reason):
        decode(payload)


def test_oversized_payload_is_refused_before_decoding() -> None:
    payload = encode(activation(Tensor("t", np.zeros(1000, np.float32))))
    with pytest.raises(DecodeError, match="above the limit of 1000 bytes"):
        decode(payload, limits=Limits(max_message_bytes=1000))


def test_too_many_tensors() -> None:
    payload = encode(activation(*[Tensor(f"t{i}", np.zeros(1, np.uint8)) for i in range(5)]))
    with pytest.raises(DecodeError, match="5 entries, above the limit of 4"):
        decode(payload, limits=Limits(max_tensors=4))


def test_unknown_fields_are_ignored_for_older_readers() -> None:
    payload = _map(kind="status", v=1, agent_id="a", state="online", warp_factor=9)
    assert decode(payload) == AgentStatus("a", AgentState.ONLINE)


def test_bool_tensor_with_other_values_is_refused() -> None:
    payload = cbor2.loads(encode(activation(Tensor("t", np.array([True, False])))))
    payload["tensors"][0]["data"] = cbor2.CBORTag(40, [[2], cbor2.CBORTag(64, b"\x01\x07")])
    with pytest.raises(DecodeError, match="other than 0 and 1"):
        decode(cbor2.dumps(payload))


def test_scalars_taken_as_they_are_still_convert_and_check() -> None:
    """A field whose wire value is of its own type is taken without its converter
    (``_Field.as_is``); anything else still goes through it: an integer for a float
    is read as a float, null for an optional field as None, a boolean is no number."""
    read = decode(_map(kind="cmd.ping", v=1, command_id="c", issuer="i", sent_ms=7))
    assert isinstance(read, Ping)
    assert type(read.sent_ms) is float
    assert read.sent_ms == 7.0
    assert read.padding is None
    padded = decode(
        _map(kind="cmd.ping", v=1, command_id="c", issuer="i", sent_ms=1.5, padding=None)
    )
    assert padded == Ping("c", "i", 1.5)
    with pytest.raises(DecodeError, match="expected float, got a boolean"):
        decode(_map(kind="cmd.ping", v=1, command_id="c", issuer="i", sent_ms=True))
    with pytest.raises(DecodeError, match="expected bytes, got text"):
        decode(_map(kind="cmd.ping", v=1, command_id="c", issuer="i", sent_ms=1.0, padding="x"))


SIMPLE_VALUES = [bytes([0xE0 + n]) for n in range(20)] + [b"\xf7", b"\xf8\x20", b"\xf8\xff"]
"""RFC 8949 3.3: the simple values splitmq never writes (unassigned, and undefined)."""


@pytest.mark.parametrize("simple", SIMPLE_VALUES, ids=lambda b: b.hex())
def test_a_simple_value_is_read_alike_on_both_paths_and_refused_in_a_field(
    simple: bytes, decoder_path: str
) -> None:
    """Where the schema ignores it (an unknown key) the message decodes on both paths,
    where a field holds it the field is refused on both; a two-byte form below 32 is
    malformed (RFC 8949 3.3)."""
    plain = encode(Result(REQUEST_ID, 0, "d", ()))
    extra = bytes([plain[0] + 1]) + plain[1:] + b"\x65extra" + simple
    assert decode(extra) == decode(plain)
    held = plain.replace(b"\x67attempt\x00", b"\x67attempt" + simple)
    with pytest.raises(DecodeError, match="attempt"):
        decode(held)
    with pytest.raises(DecodeError, match="malformed"):
        decode(bytes([plain[0] + 1]) + plain[1:] + b"\x65extra\xf8\x10")


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_a_tensor_pickles_whole_compiled_or_not(protocol: int) -> None:
    """A result's tensors can cross a process boundary by pickle (a worker pool): the
    compiled build's frozen dataclass has no ``__dict__`` to fill field by field."""
    tensor = Tensor("q", np.arange(6, dtype=np.uint8).reshape(2, 3), scale=0.5, zero_point=3)
    back = pickle.loads(pickle.dumps(tensor, protocol=protocol))
    assert back == tensor and isinstance(back, Tensor)
