"""Cutting MQTT packets out of a connection's byte stream, one buffer for all."""

from __future__ import annotations

import contextlib

from splitmq.mqtt.packets import parse_fixed_header
from splitmq.transport.channel import Channel
from splitmq.transport.mqtt_errors import BrokerClosed

INITIAL_BUFFER = 1 << 20
LARGE_PACKET = 64 * 1024
"""A packet from this size on is read into a buffer of its own, which becomes the
message's payload: its bytes are not copied once more out of the shared buffer."""


def payload_view(packet: memoryview | bytearray, body: memoryview, start: int) -> bytes | bytearray:
    """The payload from ``start`` on: a packet in a buffer of its own becomes it (cutting
    the front of a bytearray moves no bytes); a view into the shared buffer is copied."""
    if isinstance(packet, bytearray):
        body.release()
        with contextlib.suppress(BufferError):  # another view of it still held: copy
            del packet[:start]
            return packet
        return bytes(packet[start:])
    return bytes(body[start:])


class PacketReader:
    """Cuts packets out of the byte stream, reading into one buffer that grows as needed."""

    def __init__(self, channel: Channel):
        self._channel = channel
        self._buffer = bytearray(INITIAL_BUFFER)
        self._view = memoryview(self._buffer)
        self._start = 0
        self._end = 0

    def next_packet(self) -> tuple[int, memoryview | bytearray]:
        """The next packet's first byte and body: a view valid until the next call, or,
        for a large packet not yet read, a buffer of its own (:data:`LARGE_PACKET`)."""
        while True:
            header = parse_fixed_header(self._view[self._start : min(self._end, self._start + 5)])
            if header is not None:
                first, remaining, header_length = header
                total = header_length + remaining
                if self._end - self._start >= total:
                    body = self._view[self._start + header_length : self._start + total]
                    self._start += total
                    return first, body
                if remaining >= LARGE_PACKET:
                    return first, self._read_own(header_length, remaining)
                self._make_room(total)
            else:
                self._make_room(5)
            self._fill()

    def _read_own(self, header_length: int, remaining: int) -> bytearray:
        """The body of a packet of ``remaining`` bytes, read straight into its own buffer
        (what is buffered already is the start of it)."""
        body = bytearray(remaining)
        view = memoryview(body)
        have = self._end - self._start - header_length
        view[:have] = self._view[self._start + header_length : self._end]
        self._start = self._end = 0
        while have < remaining:
            count = self._channel.recv_into(view[have:])
            if count == 0:
                raise BrokerClosed("it closed the socket")
            have += count
        view.release()
        return body

    def _make_room(self, packet_bytes: int) -> None:
        if self._start + packet_bytes <= len(self._buffer):
            return
        held = self._end - self._start
        if packet_bytes > len(self._buffer):
            bigger = bytearray(max(packet_bytes, 2 * len(self._buffer)))
            bigger[:held] = self._view[self._start : self._end]
            self._buffer = bigger
            self._view = memoryview(bigger)
        else:  # a copy first: source and destination may overlap
            self._buffer[:held] = bytes(self._view[self._start : self._end])
        self._start, self._end = 0, held

    def _fill(self) -> None:
        if self._start == self._end:
            self._start = self._end = 0
        count = self._channel.recv_into(self._view[self._end :])
        if count == 0:
            raise BrokerClosed("it closed the socket")
        self._end += count
