"""How our MQTT client cuts packets out of the byte stream: small packets as views of one
shared buffer, a large one read straight into a buffer of its own that becomes its
payload, with no copy, and the packets after it still found where they are."""

from __future__ import annotations

import functools
import os

import numpy as np
import pytest

from splitmq.mqtt.codes import Version
from splitmq.mqtt.packets import publish_header
from splitmq.transport.mqtt import publish_payload_start
from splitmq.transport.mqtt_reader import (
    LARGE_PACKET,
    LargePublish,
    PacketReader,
    PayloadBuffers,
    payload_view,
)


class Trickle:
    """A channel that hands out a byte stream ``chunk`` bytes at a time."""

    def __init__(self, data: bytes, chunk: int):
        self.data, self.chunk, self.pos = data, chunk, 0
        self.reads = 0
        self.wanted: list[int] = []
        """What the reader said it still needed of a packet, read by read."""
        self.at: list[int] = []
        """Where in the stream each read started."""

    def recv_into(self, view: memoryview, wanted: int = 0) -> int:
        self.wanted.append(wanted)
        self.at.append(self.pos)
        count = min(self.chunk, len(view), len(self.data) - self.pos)
        view[:count] = self.data[self.pos : self.pos + count]
        self.pos += count
        self.reads += 1
        return count


def publish(topic: str, payload: bytes, packet_id: int) -> bytes:
    header = publish_header(
        Version.V5, topic.encode(), len(payload), qos=1, retain=False, packet_id=packet_id
    )
    return header + payload


def payload_of(packet: memoryview | bytearray, topic: str) -> bytes | bytearray:
    start = 2 + len(topic) + 2 + 1  # topic length, topic, packet id, empty properties
    return payload_view(packet, memoryview(packet), start)


@pytest.mark.parametrize("chunk", [7, 1000, 65_000])
def test_a_large_payload_is_read_into_its_own_buffer_and_the_stream_goes_on(chunk: int) -> None:
    small, large, after = os.urandom(100), os.urandom(3 * LARGE_PACKET), os.urandom(50)
    stream = publish("a", small, 1) + publish("b/c", large, 2) + publish("d", after, 3)
    reader = PacketReader(Trickle(stream, chunk))

    first, packet = reader.next_packet()
    assert first >> 4 == 3 and isinstance(packet, memoryview)
    assert payload_of(packet, "a") == small

    first, packet = reader.next_packet()
    assert isinstance(packet, bytearray), "a large packet gets a buffer of its own"
    own = payload_of(packet, "b/c")
    assert own is packet and own == large, "that buffer becomes the payload, not a copy"

    first, packet = reader.next_packet()
    assert isinstance(packet, memoryview) and payload_of(packet, "d") == after


def test_a_large_packet_is_read_into_its_own_buffer_even_when_the_socket_has_it_all() -> None:
    """Reads into the shared buffer stop at FILL_BYTES: a large packet is never there
    whole, to be copied out again; the small ones after it are."""
    large, after = os.urandom(2 * LARGE_PACKET), os.urandom(10)
    channel = Trickle(publish("t", large, 1) + publish("u", after, 2), 1 << 30)
    reader = PacketReader(channel)
    _, packet = reader.next_packet()
    assert isinstance(packet, bytearray) and payload_of(packet, "t") == large
    assert channel.reads == 2  # its header and a first part, then the rest
    _, packet = reader.next_packet()
    assert isinstance(packet, memoryview) and payload_of(packet, "u") == after


def test_the_reader_says_how_much_of_a_packet_is_still_to_come() -> None:
    """What the channel is told it still waits for (``Channel.recv_into``'s ``wanted``):
    the rest of the packet begun, once its fixed header is read, 0 before. A channel
    that reads lone acknowledgements late reads such a rest at once."""
    first, second = publish("a", os.urandom(20), 1), publish("b", os.urandom(LARGE_PACKET), 2)
    channel = Trickle(first + second, 5)
    reader = PacketReader(channel)
    reader.next_packet()
    _, packet = reader.next_packet()
    assert isinstance(packet, bytearray), "the large one read into a buffer of its own too"
    ends = [len(first), len(first) + len(second)]
    rests = []
    for wanted, at in zip(channel.wanted, channel.at, strict=True):
        rest = next(end for end in ends if end > at) - at
        assert wanted in (0, rest)
        rests.append(rest)
    assert channel.wanted[0] == 0  # nothing known before the first byte
    for end in ends:  # each packet's last bytes were announced as its last
        last = max(i for i, at in enumerate(channel.at) if at < end)
        assert channel.wanted[last] == rests[last] == end - channel.at[last] <= 5


def split_reader(stream: bytes, chunk: int) -> PacketReader:
    start = functools.partial(publish_payload_start, Version.V5)
    return PacketReader(Trickle(stream, chunk), start)


@pytest.mark.parametrize("chunk", [7, 1000, 65_000])
def test_a_large_publish_is_read_as_its_head_and_a_payload_buffer_of_its_own(chunk: int) -> None:
    small, large, after = os.urandom(100), os.urandom(3 * LARGE_PACKET), os.urandom(50)
    stream = publish("a", small, 1) + publish("b/c", large, 2) + publish("d", after, 3)
    reader = split_reader(stream, chunk)

    _, packet = reader.next_packet()
    assert isinstance(packet, memoryview) and payload_of(packet, "a") == small

    first, packet = reader.next_packet()
    if chunk == 7:  # the topic was not buffered yet: the whole body in a buffer of its own
        assert isinstance(packet, bytearray) and payload_of(packet, "b/c") == large
    else:
        assert isinstance(packet, LargePublish)
        assert packet.payload == large and type(packet.payload) is bytearray
        assert publish_payload_start(Version.V5, first, memoryview(packet.head)) == len(packet.head)

    _, packet = reader.next_packet()
    assert isinstance(packet, memoryview) and payload_of(packet, "d") == after


def test_a_payload_buffer_is_read_into_again_only_once_nothing_refers_to_it() -> None:
    """A stream's same-sized payloads reuse a buffer no one holds any more; one still
    held (by the message, an array or a view of it) is never written over."""
    sizes = [2 * LARGE_PACKET] * 4 + [3 * LARGE_PACKET]
    payloads = [os.urandom(size) for size in sizes]
    reader = split_reader(b"".join(publish("t", p, i + 1) for i, p in enumerate(payloads)), 1000)

    def next_payload() -> bytearray:
        packet = reader.next_packet()[1]
        assert isinstance(packet, LargePublish)
        return packet.payload

    first = next_payload()
    view = np.frombuffer(first, np.uint8)  # an array of its bytes, as a tensor is
    second = next_payload()
    assert second is not first and bytes(view) == payloads[0], "a held buffer is kept as it is"
    del view, first
    third = next_payload()
    assert bytes(third) == payloads[2] and bytes(second) == payloads[1]
    third_id = id(third)
    del third
    fourth = next_payload()
    assert id(fourth) == third_id, "a buffer no one holds is read into again"
    assert bytes(fourth) == payloads[3]
    fifth = next_payload()
    assert bytes(fifth) == payloads[4], "another size gets a buffer of its own"


def test_payload_buffers_keep_a_few_and_never_a_large_one() -> None:
    buffers = PayloadBuffers(keep=2, max_bytes=100)
    big = buffers.take(101)
    big_id = id(big)
    del big
    assert big_id  # a buffer above max_bytes is never kept
    assert len(buffers._out) == 0
    kept = [buffers.take(10) for _ in range(3)]
    assert len(buffers._out) == 2 and buffers._out[0] is kept[1]


@pytest.mark.parametrize(
    ("version", "qos", "properties", "cut", "expected"),
    [
        (Version.V311, 0, b"", 0, 2 + 3),
        (Version.V311, 1, b"", 0, 2 + 3 + 2),
        (Version.V5, 1, b"\x00", 0, 2 + 3 + 2 + 1),
        (Version.V5, 1, b"\x02\x01\x01", 0, 2 + 3 + 2 + 3),  # 2 bytes: payload format
        (Version.V5, 1, b"\x02\x01\x01", 1, None),  # a prefix too short to tell
        (Version.V5, 1, b"\x80\x80\x80\x80\x01", 0, None),  # a length of 5 bytes: malformed
    ],
)
def test_where_a_publish_payload_starts_mqtt_3_3_2(
    version: Version, qos: int, properties: bytes, cut: int, expected: int | None
) -> None:
    """MQTT 3.1.1 3.3.2 / MQTT 5 3.3.2: topic name, packet identifier at QoS 1 and 2,
    and in MQTT 5 the properties' length (a variable byte integer) and properties."""
    head = (
        b"\x00\x03a/b"
        + (b"\x00\x07" if qos else b"")
        + (properties if version is Version.V5 else b"")
    )
    body = memoryview(head + b"payload")
    if cut:
        body = body[: len(head) - cut]
    first = 0x30 | (qos << 1)
    assert publish_payload_start(version, first, body) == expected
    assert publish_payload_start(version, 0x40, body) is None  # not a PUBLISH
