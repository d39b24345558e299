"""The rest of a large packet read in one go (``Channel.recv_into`` with ``wanted`` of
``WHOLE_BYTES`` or more): the socket's low-water mark is set to what is wanted, so the
reader is not woken for each part the broker writes; it gets all of it in one read, or
what came before the end of the stream. Its low-water mark is what it was afterwards,
late-read acknowledgements' included."""

from __future__ import annotations

import os
import socket
import threading

import pytest

from splitmq.transport.channel import LONE_BYTES, WHOLE_BYTES, Channel

from ..helpers import wait_until
from .conftest import Pair, lowat

pytestmark = pytest.mark.skipif(
    not hasattr(socket, "SO_RCVLOWAT") or not hasattr(socket, "MSG_DONTWAIT"),
    reason="the platform's sockets cannot wait for a number of bytes",
)

REST = WHOLE_BYTES
"""The rest awaited: one that loopback's first receive window holds (a larger one may
wake the reader early when the window runs short, as it should)."""


class RestReader:
    """One ``recv_into`` of a packet's rest, ``wanted`` bytes, on a thread of its own."""

    def __init__(self, channel: Channel, wanted: int):
        self.buffer = bytearray(wanted)
        self.count: int | None = None
        self._channel = channel
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        self.count = self._channel.recv_into(memoryview(self.buffer), len(self.buffer))

    def result(self) -> bytes:
        self._thread.join(30.0)
        assert self.count is not None, "the reader is still waiting"
        return bytes(self.buffer[: self.count])


def test_the_rest_of_a_large_packet_comes_in_one_read(pair: Pair) -> None:
    channel, broker = pair
    rest = os.urandom(REST)
    broker.sendall(rest[: REST // 3])  # the first part is there before the read
    reader = RestReader(channel, REST)
    wait_until(lambda: lowat(channel) == REST, what="the reader to wait for the whole rest")
    broker.sendall(rest[REST // 3 : REST // 2])
    broker.sendall(rest[REST // 2 :])
    assert reader.result() == rest
    assert lowat(channel) == 1


def test_the_end_of_the_stream_gives_what_came(pair: Pair) -> None:
    channel, broker = pair
    part = os.urandom(REST // 2)
    reader = RestReader(channel, REST)
    wait_until(lambda: lowat(channel) == REST, what="the reader to wait for the whole rest")
    broker.sendall(part)
    broker.shutdown(socket.SHUT_WR)
    assert reader.result() == part


def test_a_late_reading_connection_keeps_its_low_water_mark(pair: Pair) -> None:
    channel, broker = pair
    assert channel.read_lone_acks_late(30.0, lambda: False)
    rest = os.urandom(REST)
    reader = RestReader(channel, REST)
    wait_until(lambda: lowat(channel) == REST, what="the reader to wait for the whole rest")
    broker.sendall(rest)
    assert reader.result() == rest
    assert lowat(channel) == LONE_BYTES


def test_a_short_rest_is_read_as_it_comes(pair: Pair) -> None:
    channel, broker = pair
    broker.sendall(b"abc")
    buffer = bytearray(WHOLE_BYTES - 1)
    assert channel.recv_into(memoryview(buffer), len(buffer)) == 3
    assert bytes(buffer[:3]) == b"abc"


def test_a_held_packet_leaves_by_its_deadline_while_the_rest_is_awaited(pair: Pair) -> None:
    """MQTT 4.6: acknowledgements in order; the hold promises each leaves by its deadline,
    whatever the reader waits for meanwhile."""
    channel, broker = pair
    puback = bytes((0x40, 2, 0, 9))
    with channel.send_lock:
        channel.hold(puback, 0.05, 8)
    rest = os.urandom(REST)
    broker.sendall(rest[: REST // 4])  # there before the read: no wait for it ends early
    reader = RestReader(channel, REST)
    assert broker.recv(len(puback)) == puback  # the broker's end waits 10 s at most
    broker.sendall(rest[REST // 4 :])
    assert reader.result() == rest
