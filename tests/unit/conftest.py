"""Fixtures of the transport's unit tests."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from splitmq.transport.channel import Channel

Pair = tuple[Channel, socket.socket]


@pytest.fixture
def pair() -> Iterator[Pair]:
    """A channel on a loopback TCP connection, and the broker's end of it."""
    listener = socket.create_server(("127.0.0.1", 0))
    ours = socket.create_connection(listener.getsockname())
    theirs, _ = listener.accept()
    listener.close()
    for sock in (ours, theirs):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    theirs.settimeout(10.0)
    channel = Channel(ours)
    yield channel, theirs
    channel.close()
    theirs.close()


def lowat(channel: Channel) -> int:
    """The low-water mark of ``channel``'s socket."""
    return channel.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT)
