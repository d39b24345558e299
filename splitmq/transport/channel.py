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

The broker's acknowledgements can be read late the same way
(:meth:`Channel.read_lone_acks_late`): on a plain socket whose low-water mark is
:data:`LONE_BYTES`, a lone acknowledgement (a PUBACK of four bytes, waiting with
nothing after it) does not wake the reader; it is read with the next packet, or once
the wait is over. A publisher's network thread is then woken once per activation that
comes in, as a bare client that reads only when it is ready is, and not once more for
the PUBACK of each it sent: at QoS 1 those wake-ups, and the preemptions of the
stage's worker and of the broker they cause, cost more CPU than the acknowledgements'
own handling (``docs/performance.md``). Where the next packet is a stage-time away
(one request at a time), a wait that ends with nothing after the acknowledgement
switches the connection to reading each as it comes, until a packet follows a lone
one within half the wait again (:meth:`Channel._set_late`).
"""

from __future__ import annotations

import contextlib
import math
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, cast

Buffer = bytes | bytearray | memoryview

RECV_CHUNK = 256 * 1024
LONE_BYTES = 5
"""The low-water mark of a socket whose lone acknowledgements are read late: every
PUBLISH, SUBACK, CONNACK of MQTT 5 and acknowledgement with a reason code is at least
this long, so it wakes the reader at once; a PUBACK, PUBREC, PUBREL or PUBCOMP of MQTT
3.1.1, or of MQTT 5 with success and no properties (four bytes), and a PINGRESP (two)
wait."""
WHOLE_BYTES = 64 * 1024
"""The rest of a packet at least this long is read in one go: the socket's low-water
mark is set to it for that read, so a reader waiting for a large activation wakes once
it is all there, not for each part the broker writes (each wake costs CPU that the
stages of a pipeline on the same cores need)."""
_CAN_WAIT_FOR_BYTES = hasattr(socket, "SO_RCVLOWAT") and hasattr(socket, "MSG_DONTWAIT")


class Channel:
    """Plain TCP; ``send`` writes the parts of a packet without joining them."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.send_lock = threading.Lock()
        self._held: list[bytes] = []
        self._held_until = 0.0
        self._poll = select.poll()
        self._poll.register(sock, select.POLLIN)
        self._late_ms = 0
        self._eager: Callable[[], bool] = _never
        self._late = False
        """Lone acknowledgements wait to be read (else: each is read as it comes)."""
        self._lone_at = -math.inf
        """When a lone acknowledgement was last read as it came."""
        self._relearn = False
        """The wait changed: read lone acknowledgements late again from the next read
        (set on any thread, applied on the network thread)."""

    def read_lone_acks_late(self, wait_s: float, unless: Callable[[], bool]) -> bool:
        """From now on, let a lone acknowledgement wait up to ``wait_s`` to be read with
        the next packet, except while ``unless()`` (someone waits for it). False, and
        nothing changes, where the socket cannot wait for :data:`LONE_BYTES` bytes."""
        if wait_s <= 0 or not _CAN_WAIT_FOR_BYTES:
            return False
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, LONE_BYTES)
        except OSError:
            return False
        self._late_ms = _whole_ms(wait_s)
        self._eager = unless
        self._late = True
        return True

    def wait_for_lone_acks(self, wait_s: float) -> None:
        """Let a lone acknowledgement wait ``wait_s`` from now on, where they are read
        late at all (:meth:`read_lone_acks_late`). A connection that went to reading
        each as it comes did so under the old wait (one that ended with nothing after
        the acknowledgement), so a changed wait reads them late again from the network
        thread's next read, to learn anew under it."""
        late_ms = _whole_ms(wait_s)
        if self._late_ms and late_ms != self._late_ms:
            self._late_ms = late_ms
            self._relearn = True

    def hold(self, packet: bytes, hold_s: float, most: int) -> None:
        """Send ``packet`` with the next write, or alone once ``hold_s`` has passed or
        ``most`` packets are held (the caller holds ``send_lock``)."""
        if not self._held:
            self._held_until = time.monotonic() + hold_s
        self._held.append(packet)
        if len(self._held) >= most:
            self.send([])

    def recv_into(self, view: memoryview, wanted: int = 0) -> int:
        """Read what is there into ``view`` (blocking); 0 at end of stream.

        ``wanted``: the bytes the reader knows are on their way, the rest of a packet
        (0: not known). Fewer than :data:`LONE_BYTES` are read as soon as they come."""
        if wanted >= WHOLE_BYTES and _CAN_WAIT_FOR_BYTES:
            return self._recv_whole(view, wanted)
        self._flush_held_before_waiting()
        if not self._late_ms:
            return self.sock.recv_into(view)
        if self._relearn:
            self._relearn = False
            self._set_late(True)
        if self._late:
            if 0 < wanted < LONE_BYTES or self._eager():
                return self._recv_now(view)
            if self._poll.poll(self._late_ms):
                return self.sock.recv_into(view)  # LONE_BYTES or more, or the end of the stream
            self._set_late(False)  # the wait ended with nothing after the acknowledgement
        count = self.sock.recv_into(view)
        now = time.monotonic()
        if 0 < count < LONE_BYTES:
            self._lone_at = now
        elif now - self._lone_at <= self._late_ms / 2000:
            self._set_late(True)  # a packet came within half the wait after a lone ack
        return count

    def _set_late(self, late: bool) -> None:
        """Read lone acknowledgements late, or each as it comes. Late from the start and
        while no wait ends with nothing after the acknowledgement; then each as it
        comes, until a packet follows a lone one within half the wait. A connection
        where the next packet is a stage-time away (one request at a time) has nothing
        to read them with, and a reader woken once the wait is over would wake in the
        middle of the next stage's work rather than at the end of its own."""
        self._late = late
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, self._low_water())

    def _low_water(self) -> int:
        """The socket's low-water mark between reads: :data:`LONE_BYTES` while lone
        acknowledgements are read late, else 1."""
        return LONE_BYTES if self._late else 1

    def _recv_whole(self, view: memoryview, wanted: int) -> int:
        """The ``wanted`` bytes of a packet's rest (as many as ``view`` holds), waited
        for whole (:data:`WHOLE_BYTES`); fewer at the end of the stream, or when the
        kernel cannot buffer them all (it then reports the socket readable early).

        The wait is a ``poll``, which compares the mark with all the bytes queued: a
        blocking ``recv`` would take what is queued first and then wait for the whole
        mark more. Held packets still leave by their deadline while it waits."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, min(wanted, view.nbytes))
        try:
            while True:
                self._flush_held_before_waiting()  # under the mark: until all of it is there
                self._poll.poll()
                try:
                    return self.sock.recv_into(view, 0, socket.MSG_DONTWAIT)
                except BlockingIOError:
                    continue  # woken with nothing to read: wait again
        finally:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, self._low_water())

    def _recv_now(self, view: memoryview) -> int:
        """What is there, however little, or the first byte to come."""
        try:
            return self.sock.recv_into(view, 0, socket.MSG_DONTWAIT)
        except BlockingIOError:
            pass
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, 1)
        try:
            return self.sock.recv_into(view)
        finally:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, LONE_BYTES)

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


def _never() -> bool:
    return False


def _whole_ms(wait_s: float) -> int:
    """A wait as ``poll`` takes it: whole milliseconds, at least one."""
    return max(1, round(wait_s * 1000))


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

    def read_lone_acks_late(self, wait_s: float, unless: Callable[[], bool]) -> bool:
        """Never: a TLS record is longer than :data:`LONE_BYTES` whatever it carries."""
        return False

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

    def recv_into(self, view: memoryview, wanted: int = 0) -> int:
        while True:
            with self._tls_lock:
                try:
                    # into a buffer it returns the count; typeshed says bytes, and a
                    # compiled build would check that: called untyped
                    count = int(cast(Any, self._tls).read(len(view), view))
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
