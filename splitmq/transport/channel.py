"""A byte channel to the broker: plain TCP, or TLS driven through memory buffers.

Reads happen on the transport's network thread, writes on whichever thread publishes,
at the same time. A plain socket allows that as is. An ``ssl.SSLSocket`` does not
(one OpenSSL object must not be used by two threads at once), so TLS runs on an
``ssl.SSLObject`` over two ``MemoryBIO`` buffers: the raw socket is read and written
without a lock, and only the short encrypt and decrypt steps share one.

Whoever takes encrypted bytes out of the outgoing buffer sends them while holding the
send lock, so TLS records reach the broker in the order they were made.

Acknowledgements can be held (:meth:`Channel.hold`) to go out with the next packet
written, in the same ``sendmsg``, instead of each in a write of its own: an agent's
PUBACK for an activation then rides with the activation it forwards a stage-time
later, and the broker reads both at once. They leave in the order they were held (MQTT
3.1.1 and 5.0 section 4.6), and never later than their deadline: a reader about to
wait for the socket past it writes them first (:meth:`Channel.recv_into`).
"""

from __future__ import annotations

import contextlib
import math
import select
import socket
import ssl
import threading
import time
from collections.abc import Sequence

Buffer = bytes | bytearray | memoryview

RECV_CHUNK = 256 * 1024


class Channel:
    """Plain TCP; ``send`` writes the parts of a packet without joining them."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.send_lock = threading.Lock()
        self._held: list[bytes] = []
        self._held_until = 0.0
        self._poll = select.poll()
        self._poll.register(sock, select.POLLIN)

    def hold(self, packet: bytes, hold_s: float, most: int) -> None:
        """Send ``packet`` with the next write, or alone once ``hold_s`` has passed or
        ``most`` packets are held (the caller holds ``send_lock``)."""
        if not self._held:
            self._held_until = time.monotonic() + hold_s
        self._held.append(packet)
        if len(self._held) >= most:
            self.send([])

    def recv_into(self, view: memoryview) -> int:
        """Read what is there into ``view`` (blocking); 0 at end of stream."""
        self._flush_held_before_waiting()
        return self.sock.recv_into(view)

    def _flush_held_before_waiting(self) -> None:
        """Wait for the socket until the held packets are due, then send them."""
        if not self._held:
            return
        left_ms = math.ceil((self._held_until - time.monotonic()) * 1000)
        if left_ms > 0 and self._poll.poll(left_ms):
            return  # something to read first; the next read looks again
        with self.send_lock:
            if self._held:
                self.send([])

    def send(self, parts: Sequence[Buffer]) -> None:
        """Write ``parts`` as one packet, after the held ones; the caller holds
        ``send_lock``."""
        if self._held:
            parts = [*self._held, *parts]
            self._held.clear()
        self._write(parts)

    def _write(self, parts: Sequence[Buffer]) -> None:
        total = sum(memoryview(part).nbytes for part in parts)
        sent = self.sock.sendmsg(parts)
        if sent < total:  # rare: a signal or a full buffer cut the write short
            self.sock.sendall(memoryview(b"".join(parts))[sent:])

    def shutdown(self) -> None:
        """Wake a blocked reader and writer (they see an error or end of stream)."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.shutdown()
        with contextlib.suppress(OSError):
            self.sock.close()


class TlsChannel(Channel):
    """TLS over memory buffers; see the module docstring for why."""

    def __init__(self, sock: socket.socket, context: ssl.SSLContext, server_hostname: str | None):
        super().__init__(sock)
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls = context.wrap_bio(
            self._incoming, self._outgoing, server_hostname=server_hostname
        )
        self._tls_lock = threading.Lock()

    def handshake(self) -> None:
        """Complete the TLS handshake (before any other thread uses the channel)."""
        while True:
            try:
                self._tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._flush()
                data = self.sock.recv(RECV_CHUNK)
                if not data:
                    raise ConnectionResetError(
                        "the broker closed the connection during TLS"
                    ) from None
                self._incoming.write(data)
        self._flush()

    def recv_into(self, view: memoryview) -> int:
        while True:
            with self._tls_lock:
                try:
                    count = int(self._tls.read(len(view), view))  # typeshed: bytes
                except ssl.SSLWantReadError:
                    count = -1
                except ssl.SSLZeroReturnError:
                    return 0
                pending = self._outgoing.pending
            if pending:  # e.g. a key update the broker asked for
                self._flush()
            if count >= 0:
                return count
            self._flush_held_before_waiting()
            data = self.sock.recv(RECV_CHUNK)
            if not data:
                return 0
            with self._tls_lock:
                self._incoming.write(data)

    def _write(self, parts: Sequence[Buffer]) -> None:
        with self._tls_lock:
            for part in parts:
                self._tls.write(part)
            data = self._outgoing.read()
        self.sock.sendall(data)

    def _flush(self) -> None:
        with self.send_lock:
            with self._tls_lock:
                data = self._outgoing.read()
            if data:
                self.sock.sendall(data)
