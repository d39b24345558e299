"""A broker that plays a script, for client behaviour no real broker shows on demand
(a CONNACK with given properties, a link cut between PUBREC and PUBCOMP, ...).

Each accepted connection runs ``script(link)`` on a thread of its own; the link reads
and writes whole packets. Packets are framed by hand here; the bodies use
:mod:`splitmq.mqtt.packets` only where the test says so.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Callable
from types import TracebackType

from splitmq.mqtt.codes import Prop, PropertyValue
from splitmq.mqtt.packets import encode_properties

HOST = "127.0.0.1"


class Link:
    """One client connection as the scripted broker sees it."""

    def __init__(self, sock: socket.socket, number: int):
        self.sock = sock
        self.number = number  # 0 for the first connection, 1 for the next...
        self._buffer = b""

    def read(self, timeout_s: float = 5.0) -> tuple[int, bytes]:
        """The next packet: its first byte and its body."""
        self.sock.settimeout(timeout_s)
        while True:
            header = _frame(self._buffer)
            if header is not None:
                first, start, end = header
                body, self._buffer = self._buffer[start:end], self._buffer[end:]
                return first, body
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the client closed the connection")
            self._buffer += chunk

    def read_until(self, kind: int, timeout_s: float = 5.0) -> tuple[int, bytes]:
        """Skip packets until one of type ``kind`` (PINGREQ and the like in between)."""
        while True:
            first, body = self.read(timeout_s)
            if first >> 4 == kind:
                return first, body

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def connack(
        self, *, v5: bool, code: int = 0, properties: dict[Prop, PropertyValue] | None = None
    ) -> None:
        if not v5:
            self.send(bytes((0x20, 2, 0, code)))
            return
        block = encode_properties([(int(k), v) for k, v in (properties or {}).items()])
        body = bytes((0, code)) + block
        self.send(bytes((0x20, len(body))) + body)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def _frame(buffer: bytes) -> tuple[int, int, int] | None:
    if len(buffer) < 2:
        return None
    length, multiplier, index = 0, 1, 1
    while True:
        if index >= len(buffer):
            return None
        byte = buffer[index]
        length += (byte & 0x7F) * multiplier
        multiplier *= 128
        index += 1
        if not byte & 0x80:
            break
    if len(buffer) < index + length:
        return None
    return buffer[0], index, index + length


def packet_id(body: bytes) -> int:
    """The packet identifier of a QoS 1/2 PUBLISH body (after its topic)."""
    (length,) = struct.unpack_from("!H", body, 0)
    return int(struct.unpack_from("!H", body, 2 + length)[0])


def ack(kind: int, pid: int) -> bytes:
    """PUBACK (4), PUBREC (5), PUBREL (6) or PUBCOMP (7), success, short form."""
    return bytes(((kind << 4) | (0x02 if kind == 6 else 0), 2)) + struct.pack("!H", pid)


def suback(pid: int, v5: bool) -> bytes:
    """SUBACK granting QoS 1 to one filter."""
    body = pid.to_bytes(2, "big") + (b"\x00" if v5 else b"") + b"\x01"
    return bytes((0x90, len(body))) + body


def qos1_publish(topic: str, pid: int, payload: bytes, v5: bool) -> bytes:
    """A QoS 1 PUBLISH (MQTT 5: with an empty property block)."""
    name = topic.encode()
    body = len(name).to_bytes(2, "big") + name + pid.to_bytes(2, "big")
    body += (b"\x00" if v5 else b"") + payload
    return bytes((0x32, len(body))) + body


class ScriptedBroker:
    """Listens on a free port; runs ``script`` for every connection."""

    def __init__(self, script: Callable[[Link], None]):
        self._script = script
        self._server = socket.create_server((HOST, 0))
        self.port = int(self._server.getsockname()[1])
        self.connections = 0
        self.errors: list[BaseException] = []
        self._links: list[Link] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> ScriptedBroker:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self._server.shutdown(socket.SHUT_RDWR)  # wakes the accept (close alone may not)
        self._server.close()
        self._thread.join(5.0)  # a connection it accepted meanwhile is in _links: closed too
        for link in self._links:
            link.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                sock, _ = self._server.accept()
            except OSError:
                return
            link = Link(sock, self.connections)
            self.connections += 1
            self._links.append(link)
            threading.Thread(target=self._run, args=(link,), daemon=True).start()

    def _run(self, link: Link) -> None:
        try:
            self._script(link)
        except (OSError, ConnectionError):
            pass  # the client went away: the test decides whether that was expected
        except BaseException as error:  # an assertion in the script: the test reports it
            self.errors.append(error)
