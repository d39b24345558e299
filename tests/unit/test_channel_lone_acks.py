"""A lone acknowledgement read late (``Channel.read_lone_acks_late``): on a TCP socket
whose low-water mark is ``LONE_BYTES``, four bytes waiting alone (a PUBACK) do not wake
the reader; they come with the next packet, or alone once the wait is over. Anything of
``LONE_BYTES`` or more, the rest of a packet begun, the end of the stream, or an
acknowledgement someone waits for is read at once. MQTT sets no time within which a
client must read an acknowledgement; the order of what is read is the order it came."""

from __future__ import annotations

import socket
import ssl
import threading
import time

import pytest

from splitmq.transport.channel import LONE_BYTES, Channel, TlsChannel

from ..helpers import wait_until
from .conftest import Pair, lowat

LONG_S = 30.0
"""A wait no test sits out: a reader that waited it would fail its test on time."""

PUBACK = bytes((0x40, 2, 0, 7))
PUBLISH = bytes((0x30, 8, 0, 3)) + b"a/bxyz"  # QoS 0, topic "a/b", payload "xyz"

pytestmark = pytest.mark.skipif(
    not hasattr(socket, "SO_RCVLOWAT") or not hasattr(socket, "MSG_DONTWAIT"),
    reason="the platform's sockets cannot wait for a number of bytes",
)


class Reader:
    """One ``recv_into`` on a thread of its own: what it read, and how long it took."""

    def __init__(self, channel: Channel, wanted: int = 0):
        self.data: bytes | None = None
        self.seconds = 0.0
        self._channel, self._wanted = channel, wanted
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        buffer = bytearray(64)
        start = time.monotonic()
        count = self._channel.recv_into(memoryview(buffer), self._wanted)
        self.seconds = time.monotonic() - start
        self.data = bytes(buffer[:count])

    def result(self) -> bytes:
        self._thread.join(LONG_S + 10.0)
        assert self.data is not None, "the reader is still waiting"
        return self.data


def queued(sock: socket.socket) -> int:
    """Bytes the kernel holds for ``sock`` to read."""
    return len(sock.recv(64, socket.MSG_PEEK | socket.MSG_DONTWAIT))


def arrived(sock: socket.socket, count: int) -> None:
    def there() -> bool:
        try:
            return queued(sock) >= count
        except BlockingIOError:
            return False

    wait_until(there, what=f"{count} bytes at the channel's socket")


def test_a_lone_ack_comes_with_the_next_packet(pair: Pair) -> None:
    channel, broker = pair
    assert channel.read_lone_acks_late(LONG_S, lambda: False)
    reader = Reader(channel)
    broker.sendall(PUBACK)
    arrived(channel.sock, len(PUBACK))  # there, and not read: it did not wake the reader
    broker.sendall(PUBLISH)
    assert reader.result() == PUBACK + PUBLISH  # one read, in the order they came
    assert reader.seconds < LONG_S


def test_once_the_wait_is_over_a_lone_ack_is_read_alone(pair: Pair) -> None:
    channel, broker = pair
    wait_s = 0.05
    assert channel.read_lone_acks_late(wait_s, lambda: False)
    broker.sendall(PUBACK)
    arrived(channel.sock, len(PUBACK))
    reader = Reader(channel)
    assert reader.result() == PUBACK
    assert reader.seconds >= wait_s - 0.001


@pytest.mark.parametrize(
    "packet",
    [PUBLISH, bytes((0x90, 3, 0, 1, 1)), bytes((0x40, 3, 0, 7, 0x80))],
    ids=["publish", "suback", "puback-with-a-reason"],
)
def test_anything_of_lone_bytes_or_more_is_read_at_once(pair: Pair, packet: bytes) -> None:
    channel, broker = pair
    assert len(packet) >= LONE_BYTES
    assert channel.read_lone_acks_late(LONG_S, lambda: False)
    reader = Reader(channel)
    broker.sendall(packet)
    assert reader.result() == packet
    assert reader.seconds < LONG_S / 2


def test_after_a_wait_with_nothing_acks_are_read_as_they_come_until_one_is_followed(
    pair: Pair,
) -> None:
    """A wait that ends with nothing after the acknowledgement (one request at a time:
    the next packet is a stage-time away) switches to reading each as it comes (the
    low-water mark 1: an idle connection is not polled by the clock); a packet that
    comes within half the wait after a lone acknowledgement switches back."""
    channel, broker = pair
    wait_s = 1.0
    assert channel.read_lone_acks_late(wait_s, lambda: False)
    assert lowat(channel) == LONE_BYTES
    first = Reader(channel)
    wait_until(lambda: lowat(channel) == 1, what="the reader's wait over, with nothing")
    broker.sendall(PUBACK)
    assert first.result() == PUBACK  # read as it came
    broker.sendall(PUBLISH)
    assert Reader(channel).result() == PUBLISH
    assert lowat(channel) == LONE_BYTES  # it came within half the wait: late again
    late = Reader(channel)
    broker.sendall(PUBACK)
    arrived(channel.sock, len(PUBACK))
    broker.sendall(PUBLISH)
    assert late.result() == PUBACK + PUBLISH


def test_a_new_wait_reads_lone_acks_late_again_from_the_next_read(pair: Pair) -> None:
    """The switch to reading each as it comes was decided under the old wait (an agent
    paced from the shipped 5 ms to its stage-time): a new wait re-arms reading late on
    the network thread's next read, which learns anew under it."""
    channel, broker = pair
    assert channel.read_lone_acks_late(0.005, lambda: False)
    idle = Reader(channel)
    wait_until(lambda: lowat(channel) == 1, what="the short wait over, with nothing")
    channel.wait_for_lone_acks(LONG_S)
    assert lowat(channel) == 1  # not from this thread: the reader waits on its own mark
    broker.sendall(PUBLISH)
    assert idle.result() == PUBLISH
    late = Reader(channel)
    wait_until(lambda: lowat(channel) == LONE_BYTES, what="the next read, late again")
    broker.sendall(PUBACK)
    arrived(channel.sock, len(PUBACK))  # there, and not read
    broker.sendall(PUBLISH)
    assert late.result() == PUBACK + PUBLISH
    assert late.seconds < LONG_S


def test_an_awaited_ack_is_read_at_once(pair: Pair) -> None:
    channel, broker = pair
    assert channel.read_lone_acks_late(LONG_S, lambda: True)
    reader = Reader(channel)
    broker.sendall(PUBACK)
    assert reader.result() == PUBACK
    assert reader.seconds < LONG_S / 2


def test_the_rest_of_a_packet_begun_is_read_as_soon_as_it_comes(pair: Pair) -> None:
    channel, broker = pair
    assert channel.read_lone_acks_late(LONG_S, lambda: False)
    reader = Reader(channel, wanted=3)  # a packet's last three bytes
    broker.sendall(b"xyz")
    assert reader.result() == b"xyz"
    assert reader.seconds < LONG_S / 2


def test_the_end_of_the_stream_wakes_the_reader(pair: Pair) -> None:
    channel, broker = pair
    assert channel.read_lone_acks_late(LONG_S, lambda: False)
    reader = Reader(channel)
    broker.close()
    assert reader.result() == b""
    assert reader.seconds < LONG_S / 2


def test_nothing_changes_when_not_asked(pair: Pair) -> None:
    channel, broker = pair
    assert not channel.read_lone_acks_late(0, lambda: False)
    assert lowat(channel) == 1
    reader = Reader(channel)
    broker.sendall(PUBACK)
    assert reader.result() == PUBACK


def test_a_tls_channel_reads_every_record_at_once() -> None:
    """A TLS record is longer than ``LONE_BYTES`` whatever it carries: no mark helps."""
    ours, theirs = socket.socketpair()
    try:
        channel = TlsChannel(ours, ssl.create_default_context(), "localhost")
        assert not channel.read_lone_acks_late(LONG_S, lambda: False)
    finally:
        ours.close()
        theirs.close()
