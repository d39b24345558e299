"""What the hot modules write and read, as one digest per case: run once compiled and
once as pure Python (``SPLITMQ_PURE=1``), the two lists must be equal
(``test_compiled.py``).

    python -m tests.unit.compiled_corpus MESSAGES.pickle   # from the repository's root

Cases: every kind of wire message (a sample of each, and 300 Hypothesis draws with a
fixed seed) encoded, decoded and encoded again; the per-hop fast paths on activations
and results (read, forward, answer); MQTT packets encoded and decoded; the client's
input fitting and top classes; the planner's plans and refusals for random fleets.
"""

from __future__ import annotations

import enum
import hashlib
import pickle
import random
import sys
from collections.abc import Callable
from dataclasses import astuple, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from splitmq import compiled
from splitmq.client.inputs import fit_inputs, top_classes
from splitmq.coordinator.planner import PlannerConfig, plan
from splitmq.errors import SplitMQError
from splitmq.mqtt import packets
from splitmq.mqtt.codes import PacketType, Prop, Version
from splitmq.wire import (
    Activation,
    Message,
    Result,
    Tensor,
    decode,
    encode,
    encode_parts,
    hop,
)
from splitmq.wire.messages import MESSAGE_TYPES, TensorSpec

from ..coordinator.test_planner import random_case
from .samples import sample_messages
from .test_codec_properties import messages_of
from .test_wire_hop import ENTRY, MESSAGES, OUTPUTS

Case = tuple[str, bytes]


def digest(value: Any) -> str:
    """A stable digest of what a case gave (bytes, arrays, and containers of them)."""
    out = hashlib.sha256()

    def feed(item: Any) -> None:
        if isinstance(item, bytes | bytearray | memoryview):
            out.update(b"b" + bytes(item))
        elif isinstance(item, np.ndarray):
            out.update(f"a{item.dtype.str}{item.shape}".encode() + item.tobytes())
        elif isinstance(item, Tensor):
            out.update(f"t{item.name}{item.scale!r}{item.zero_point!r}".encode())
            feed(item.array)
        elif isinstance(item, dict):
            for key, each in item.items():
                feed(key)
                feed(each)
        elif isinstance(item, list | tuple):
            out.update(f"{type(item).__name__}{len(item)}".encode())
            for each in item:
                feed(each)
        elif isinstance(item, enum.IntEnum):  # a code is its number
            feed(int(item))
        else:  # numbers, strings, None: their type too (1 and 1.0 differ on the wire)
            out.update(f"{type(item).__name__}:{item!r}".encode())

    feed(value)
    return out.hexdigest()


def attempt(function: Callable[[], Any]) -> Any:
    """What ``function`` gives, or the error it refuses with (its type and message)."""
    try:
        return function()
    except (SplitMQError, ValueError, TypeError) as error:
        return f"{type(error).__name__}: {error}"


def message_cases(name: str, message: Message) -> list[tuple[str, str]]:
    payload = encode(message)
    joined = b"".join(bytes(part) for part in encode_parts(message))
    again = attempt(lambda: encode(decode(payload)))
    cases = [(f"{name}: encode", digest(payload)), (f"{name}: parts", digest(joined))]
    cases.append((f"{name}: decode, encode", digest(again)))
    if isinstance(message, Activation):
        read = attempt(lambda: hop.read(bytearray(payload)))
        cases.append((f"{name}: hop.read", digest(_hop(read))))
    if isinstance(message, Result):
        read = attempt(lambda: hop.read_result(bytearray(payload)))
        cases.append((f"{name}: hop.read_result", digest(_result(read))))
    return cases


def _hop(read: Any) -> Any:
    if not isinstance(read, hop.Hop):
        return read
    return [read.head, read.route, read.tensors, read.trace, read.client_id, read.source]


def _result(read: Any) -> Any:
    if not isinstance(read, Result):
        return read
    return encode(read)


def sampled() -> list[tuple[str, str]]:
    cases = []
    for index, message in enumerate(sample_messages()):
        cases += message_cases(f"sample {index} {message.KIND}", message)
    return cases


def draw(count: int = 300) -> list[Message]:
    """``count`` random messages of every kind."""
    drawn: list[Message] = []

    @settings(
        max_examples=count,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(message=st.one_of([messages_of(cls) for cls in MESSAGE_TYPES]))
    def keep(message: Message) -> None:
        drawn.append(message)

    keep()
    return drawn


def drawn(messages: list[Message]) -> list[tuple[str, str]]:
    cases = []
    for index, message in enumerate(messages):
        cases += message_cases(f"drawn {index} {message.KIND}", message)
    return cases


def hops() -> list[tuple[str, str]]:
    cases = []
    for name, message in MESSAGES.items():
        read = hop.read(bytearray(encode(message)))
        assert read is not None
        if not message.trace and message.source is None:
            cases.append((f"{name}: request_parts", digest(hop.request_parts(message))))
        forward = hop.forward_parts(read, OUTPUTS, ENTRY)
        cases.append((f"{name}: forward_parts", digest(forward)))
        following = hop.read(bytearray(b"".join(bytes(part) for part in forward)))
        cases.append((f"{name}: the forward read", digest(_hop(following))))
        answer = b"".join(bytes(p) for p in hop.result_parts(read, OUTPUTS[:2], ENTRY, "c"))
        cases.append((f"{name}: result_parts", digest(answer)))
        cases.append((f"{name}: the result read", digest(_result(hop.read_result(answer)))))
    entry = hop.trace_entry(
        stage=0,
        agent_id="a",
        received_ms=5,
        started_ms=6,
        finished_ms=7,
        bytes_in=1,
        attempt=0,
        bytes_out=2,
        energy_j=0,
    )
    cases.append(("a trace entry given ints", digest(entry)))
    return cases


def mqtt() -> list[tuple[str, str]]:
    cases = []
    for version in (Version.V5, Version.V311):
        v = version.name
        connect = packets.encode_connect(
            version, "client-1", keepalive_s=30, username="u", password="p"
        )
        publish = packets.encode_publish(
            version,
            "a/b",
            b"payload",
            qos=1,
            retain=True,
            packet_id=7,
            properties=[(Prop.MESSAGE_EXPIRY_INTERVAL, 60)] if version is Version.V5 else [],
        )
        header = packets.publish_header(
            version, b"a/b", 1000, qos=1, retain=False, dup=True, packet_id=9, properties=b"\x00"
        )
        encoded = {
            "connect": connect,
            "publish": publish,
            "publish header": header,
            "puback": packets.encode_ack(PacketType.PUBACK, 513, version),
            "pubrec refused": packets.encode_ack(PacketType.PUBREC, 2, version, 0x87),
            "subscribe": packets.encode_subscribe(version, 3, "a/+/c", 1),
            "unsubscribe": packets.encode_unsubscribe(version, 4, "a/#"),
            "suback": packets.encode_suback(version, 3, [1, 0x80]),
            "connack": packets.encode_connack(version, 0, session_present=True),
        }
        for name, data in encoded.items():
            cases.append((f"{v} {name}", digest(data)))
            header_fields = packets.parse_fixed_header(data)
            assert header_fields is not None
            first, _, length = header_fields
            body = bytes(data[length:])
            decoded = attempt(partial(packets.decode_server_packet, first, body, version))
            cases.append((f"{v} {name}: as from a server", digest(_fields(decoded))))
            decoded = attempt(partial(packets.decode_packet, first, body, version))
            cases.append((f"{v} {name}: as from a client", digest(_fields(decoded))))
    cases.append(("varints", digest([packets.encode_varint(n) for n in (0, 127, 128, 2**21)])))
    return cases


def _fields(packet: Any) -> Any:
    """A decoded packet's type and fields (an error's text as it is)."""
    return packet if isinstance(packet, str) else [type(packet).__name__, astuple(packet)]


def client() -> list[tuple[str, str]]:
    specs = [TensorSpec("x:0", (1, 4, 4, 3), "float32")]
    quantized = [replace(specs[0], dtype="int8", scale=0.5, zero_point=-2)]
    rng = np.random.default_rng(7)
    image = rng.random((4, 4, 3))
    cases = [
        ("fit a float64 image", digest(attempt(lambda: fit_inputs(image, specs)))),
        ("fit a larger image", digest(attempt(lambda: fit_inputs(rng.random((8, 6, 3)), specs)))),
        ("fit to int8", digest(attempt(lambda: fit_inputs(image * 10, quantized)))),
        ("fit the wrong shape", digest(attempt(lambda: fit_inputs(np.ones(5), specs)))),
    ]
    scores = rng.random((1, 1000)).astype(np.float32)
    cases.append(("top 5", digest(top_classes(scores, 5))))
    levels = rng.integers(-128, 127, (1, 10), dtype=np.int8)
    cases.append(("top 3 quantized", digest(top_classes(levels, 3, 0.25, 4))))
    return cases


def planner() -> list[tuple[str, str]]:
    """The planner's brute-force test's random cases, some agents moved behind site
    brokers with hop times of their own, some clients with their own work and agent."""
    cases = []
    rng = random.Random(11)
    for index in range(80):
        deployments, agents, request = random_case(rng)
        agents = {
            name: replace(agent, site=rng.choice(["", "s1"]), hop_ms=rng.choice([None, 1.5]))
            for name, agent in agents.items()
        }
        request = replace(request, client_ms=rng.choice([None, 1.5]))
        client = rng.choice([None, next(iter(agents.values()))])
        config = PlannerConfig(max_fallbacks=rng.choice([0, 2]))
        answer = attempt(partial(plan, request, deployments, agents, config, client=client))
        kept = encode(answer) if isinstance(answer, Message) else answer
        cases.append((f"plan {index}", digest(kept)))
    return cases


def corpus(messages: list[Message]) -> list[tuple[str, str]]:
    return sampled() + drawn(messages) + hops() + mqtt() + client() + planner()


def main() -> None:
    """The digests; the random messages are drawn into the file named as the argument,
    or read from it when it exists (both runs must see the same messages: what
    Hypothesis draws depends on the order the process imported its modules in)."""
    path = Path(sys.argv[1])
    if path.exists():
        messages = pickle.loads(path.read_bytes())
    else:  # the hop's messages too: some carry tensors, which the draw seldom does
        messages = draw() + list(MESSAGES.values())
        path.write_bytes(pickle.dumps(messages))
    print(compiled.describe())
    for name, value in corpus(messages):
        print(f"{value} {name}")


if __name__ == "__main__":
    main()
