"""How our MQTT client cuts packets out of the byte stream: small packets as views of one
shared buffer, a large one read straight into a buffer of its own that becomes its
payload, with no copy, and the packets after it still found where they are."""

from __future__ import annotations

import os

import pytest

from splitmq.mqtt.codes import Version
from splitmq.mqtt.packets import publish_header
from splitmq.transport.mqtt_reader import LARGE_PACKET, PacketReader, payload_view


class Trickle:
    """A channel that hands out a byte stream ``chunk`` bytes at a time."""

    def __init__(self, data: bytes, chunk: int):
        self.data, self.chunk, self.pos = data, chunk, 0
        self.reads = 0

    def recv_into(self, view: memoryview) -> int:
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
    reader = PacketReader(Trickle(stream, chunk))  # type: ignore[arg-type]

    first, packet = reader.next_packet()
    assert first >> 4 == 3 and isinstance(packet, memoryview)
    assert payload_of(packet, "a") == small

    first, packet = reader.next_packet()
    assert isinstance(packet, bytearray), "a large packet gets a buffer of its own"
    own = payload_of(packet, "b/c")
    assert own is packet and own == large, "that buffer becomes the payload, not a copy"

    first, packet = reader.next_packet()
    assert payload_of(packet, "d") == after


def test_a_large_packet_already_buffered_is_a_view_of_the_shared_buffer() -> None:
    large = os.urandom(2 * LARGE_PACKET)
    reader = PacketReader(Trickle(publish("t", large, 1), 1 << 30))  # type: ignore[arg-type]
    _, packet = reader.next_packet()
    assert isinstance(packet, memoryview)
    assert payload_of(packet, "t") == large
