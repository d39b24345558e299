"""Acknowledgements held to ride the next packet written (``Channel.hold``): they go out
in the order they were held (MQTT 3.1.1 and 5.0 section 4.6), in the same ``sendmsg``
as the packet after them, alone once due if the reader would wait past that, and never
more than a few at a time (a broker's window of unacknowledged messages is small)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from splitmq.transport.channel import Channel


class CountingSocket(socket.socket):
    """A socket that counts its ``sendmsg`` calls."""

    sends = 0

    def sendmsg(self, *args: Any, **kwargs: Any) -> int:
        self.sends += 1
        return super().sendmsg(*args, **kwargs)


Link = tuple[Channel, socket.socket, CountingSocket]


@pytest.fixture
def link() -> Iterator[Link]:
    """A channel on one end of a socket pair, and the other end (the broker's side)."""
    ours, theirs = socket.socketpair()
    counting = CountingSocket(fileno=ours.detach())
    theirs.settimeout(10.0)
    channel = Channel(counting)
    yield channel, theirs, counting
    channel.close()
    theirs.close()


def nothing_to_read(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        sock.recv(1)
    except BlockingIOError:
        return True
    finally:
        sock.settimeout(10.0)
    return False


def read_exactly(sock: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        assert chunk, "the channel closed"
        data += chunk
    return data


def puback(packet_id: int) -> bytes:
    return bytes((0x40, 2, 0, packet_id))


def test_held_acks_ride_the_next_packet_in_order_in_one_write(link: Link) -> None:
    channel, broker, counting = link
    with channel.send_lock:
        for packet_id in (7, 3, 9):
            channel.hold(puback(packet_id), hold_s=60.0, most=8)
    assert counting.sends == 0 and nothing_to_read(broker)

    with channel.send_lock:
        channel.send([b"\x30\x03", b"\x00\x01a"])  # a QoS 0 PUBLISH, in two parts

    assert counting.sends == 1
    expected = puback(7) + puback(3) + puback(9) + b"\x30\x03\x00\x01a"
    assert read_exactly(broker, len(expected)) == expected
    with channel.send_lock:
        channel.send([b"\xc0\x00"])  # nothing held any more: PINGREQ alone
    assert read_exactly(broker, 2) == b"\xc0\x00"


def test_at_most_so_many_are_held(link: Link) -> None:
    channel, broker, counting = link
    with channel.send_lock:
        for packet_id in range(1, 4):
            channel.hold(puback(packet_id), hold_s=60.0, most=4)
    assert counting.sends == 0
    with channel.send_lock:
        channel.hold(puback(4), hold_s=60.0, most=4)
    assert counting.sends == 1
    assert read_exactly(broker, 16) == b"".join(puback(i) for i in range(1, 5))


def test_a_reader_about_to_wait_sends_them_once_due(link: Link) -> None:
    channel, broker, _ = link
    hold_s = 0.2
    held_at = time.monotonic()  # before: the deadline is no earlier than this + hold_s
    with channel.send_lock:
        channel.hold(puback(5), hold_s=hold_s, most=8)
    received: list[bytes] = []
    buffer = bytearray(16)

    def read() -> None:
        count = channel.recv_into(memoryview(buffer))
        received.append(bytes(buffer[:count]))

    reader = threading.Thread(target=read)
    reader.start()
    assert read_exactly(broker, 4) == puback(5)  # with nothing else to carry it
    assert time.monotonic() - held_at >= hold_s - 0.001  # not before it was due
    broker.sendall(b"\xd0\x00")
    reader.join(10.0)
    assert received == [b"\xd0\x00"]


def test_what_arrives_first_is_read_and_the_acks_stay_held(link: Link) -> None:
    channel, broker, counting = link
    with channel.send_lock:
        channel.hold(puback(5), hold_s=60.0, most=8)
    broker.sendall(b"\xd0\x00")
    buffer = bytearray(16)
    assert channel.recv_into(memoryview(buffer)) == 2
    assert counting.sends == 0 and nothing_to_read(broker)
    with channel.send_lock:
        channel.send([b"\xc0\x00"])
    assert read_exactly(broker, 6) == puback(5) + b"\xc0\x00"
