"""Cutting MQTT packets out of a connection's byte stream, one buffer for all."""

from __future__ import annotations

import contextlib
import sys
from collections import deque
from collections.abc import Callable
from typing import Protocol

from splitmq.mqtt.packets import parse_fixed_header
from splitmq.transport.mqtt_errors import BrokerClosed

INITIAL_BUFFER = 1 << 20
LARGE_PACKET = 64 * 1024
"""A packet from this size on is read into a buffer of its own, which becomes the
message's payload: its bytes are not copied once more out of the shared buffer."""
FILL_BYTES = LARGE_PACKET
"""The most one read into the shared buffer takes: a large packet's header arrives
there and its body goes to a buffer of its own. Reading as much as the socket had would
bring a whole large packet into the shared buffer, to be copied out again."""


RECYCLED_BUFFERS = 3
"""Large payload buffers kept to be read into again once no one holds them."""
RECYCLED_MAX_BYTES = 16 << 20
"""Larger payloads get a fresh buffer each time (and none is kept)."""


class Source(Protocol):
    """What the reader reads from: a :class:`~splitmq.transport.channel.Channel`."""

    def recv_into(self, view: memoryview, wanted: int = 0) -> int: ...


class LargePublish:
    """A large PUBLISH read as its variable header and its payload, each a buffer of its own:
    the payload buffer holds nothing else, so it can be read into again later
    (:class:`PayloadBuffers`)."""

    __slots__ = ("head", "payload")

    def __init__(self, head: bytes, payload: bytearray):
        self.head = head
        self.payload = payload


class PayloadBuffers:
    """The large payload buffers handed out lately, each taken back for a payload of its
    size once nothing refers to it any more.

    A fresh ``bytearray`` is zero-filled memory the allocator may first have to map: for
    a stage's activation of a few hundred kB, tens of microseconds per message, which a
    stream of same-sized activations need not pay. A buffer is reused only when its
    reference count shows that this pool alone holds it: no message, array or view of it
    is left anywhere (a view or an array of its bytes refers to it)."""

    def __init__(self, keep: int = RECYCLED_BUFFERS, max_bytes: int = RECYCLED_MAX_BYTES):
        self._out: deque[bytearray] = deque(maxlen=keep)
        self._max_bytes = max_bytes
        self._recycle = keep > 0 and sys.implementation.name == "cpython"

    def take(self, size: int) -> bytearray:
        """A buffer of ``size`` bytes to read into (its old contents are overwritten)."""
        out = self._out
        for index in range(len(out) if self._recycle else 0):
            # held by the deque and by getrefcount's argument only: no one else has it
            if len(out[index]) == size and sys.getrefcount(out[index]) == _UNHELD:
                buffer = out[index]
                del out[index]
                break
        else:
            buffer = bytearray(size)
        if self._recycle and size <= self._max_bytes:
            out.append(buffer)
        return buffer


_UNHELD = 2
"""``sys.getrefcount`` of a buffer only :class:`PayloadBuffers` holds, as it reads it."""


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

    def __init__(
        self,
        channel: Source,
        payload_start: Callable[[int, memoryview], int | None] | None = None,
    ):
        """``payload_start(first_byte, body_prefix)``: where a packet's payload starts in
        its body, or None (not a PUBLISH, or the prefix is too short to tell); given it,
        a large PUBLISH is read as a :class:`LargePublish`."""
        self._channel = channel
        self._payload_start = payload_start
        self._payloads = PayloadBuffers()
        self._buffer = bytearray(INITIAL_BUFFER)
        self._view = memoryview(self._buffer)
        self._start = 0
        self._end = 0

    def next_packet(self) -> tuple[int, memoryview | bytearray | LargePublish]:
        """The next packet's first byte and body: a view valid until the next call, or,
        for a large packet not yet read, a buffer of its own (:data:`LARGE_PACKET`), or a
        large PUBLISH's head and payload apart (:class:`LargePublish`)."""
        while True:
            start, buffer = self._start, self._buffer
            if self._end - start >= 2 and buffer[start + 1] < 0x80:  # a one-byte length (2.2.3)
                total = 2 + buffer[start + 1]  # an acknowledgement, mostly: read without a call
                if self._end - start >= total:
                    self._start = start + total
                    return buffer[start], self._view[start + 2 : start + total]
            header = parse_fixed_header(self._view[self._start : min(self._end, self._start + 5)])
            wanted = 0
            if header is not None:
                first, remaining, header_length = header
                total = header_length + remaining
                if self._end - self._start >= total:
                    body = self._view[self._start + header_length : self._start + total]
                    self._start += total
                    return first, body
                if remaining >= LARGE_PACKET:
                    split = self._read_split(first, header_length, remaining)
                    if split is not None:
                        return first, split
                    return first, self._read_own(header_length, remaining)
                self._make_room(total)
                wanted = total - (self._end - self._start)
            else:
                self._make_room(5)
            self._fill(wanted)

    def _read_split(self, first: int, header_length: int, remaining: int) -> LargePublish | None:
        """A large PUBLISH whose variable header is buffered, its payload read into a
        recycled buffer (:class:`PayloadBuffers`); None when that cannot be told yet."""
        if self._payload_start is None:
            return None
        body_at = self._start + header_length
        offset = self._payload_start(first, self._view[body_at : self._end])
        if offset is None or offset > remaining:
            return None
        head = bytes(self._view[body_at : body_at + offset])
        payload = self._payloads.take(remaining - offset)
        self._fill_from_buffer(payload, body_at + offset)
        return LargePublish(head, payload)

    def _fill_from_buffer(self, target: bytearray, at: int) -> None:
        """``target`` filled with what is buffered from ``at`` on, then from the socket."""
        view = memoryview(target)
        have = self._end - at
        view[:have] = self._view[at : self._end]
        self._start = self._end = 0
        while have < len(target):
            count = self._channel.recv_into(view[have:], len(target) - have)
            if count == 0:
                raise BrokerClosed("it closed the socket")
            have += count
        view.release()

    def _read_own(self, header_length: int, remaining: int) -> bytearray:
        """The body of a packet of ``remaining`` bytes, read straight into its own buffer
        (what is buffered already is the start of it)."""
        body = bytearray(remaining)
        self._fill_from_buffer(body, self._start + header_length)
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

    def _fill(self, wanted: int) -> None:
        """Read what comes into the buffer; ``wanted``: the rest of the packet begun in
        it (0 when its length is not known yet)."""
        if self._start == self._end:
            self._start = self._end = 0
        count = self._channel.recv_into(self._view[self._end : self._end + FILL_BYTES], wanted)
        if count == 0:
            raise BrokerClosed("it closed the socket")
        self._end += count
