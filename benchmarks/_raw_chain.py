"""The floor of any split over processes: shards chained with bare sockets.

Each stage is a process with one thread and blocking sockets: it reads a frame from the
stage before it, runs its shard (same runtime and thread count as the agents), and
writes its outputs to the next stage, or, from the last stage, back to the caller. A
frame is ``[u32 request number]`` and the tensors framed as in ``_grpc_chain.pack``.
No retry, no check beyond the shapes, no thread hand-off: what is left of a split's
cost once every feature of a framework is gone, on this machine.

Two ways to link the stages:

- ``direct``: TCP from each stage to the next (``[u32 byte count]`` before each frame);
- through a broker: each stage a bare MQTT 3.1.1 client (CONNECT, one SUBSCRIBE, then
  PUBLISH packets written and read by hand) on topic ``{chain}/{stage}``, the last stage
  publishing on ``{chain}/result``. Every frame crosses the broker, as in splitmq: the
  floor of a split through Mosquitto. At QoS 0 (at most once) or at QoS 1 (at least
  once, as splitmq's hops by default): then what the protocol asks of a client and
  nothing more, each PUBLISH with a packet id, each PUBLISH received acknowledged by a
  PUBACK written with the client's next PUBLISH (section 4.6 lets a receiver send its
  PUBACKs in order, at any time), and the broker's PUBACKs read and dropped (a bare
  client that never reconnects has nothing to send again).

    python benchmarks/_raw_chain.py SHARD.tflite STAGE --listen PORT --next HOST:PORT
    python benchmarks/_raw_chain.py SHARD.tflite STAGE --broker HOST:PORT --chain raw/1 \\
        [--qos 1] [--last]
"""

from __future__ import annotations

import argparse
import itertools
import os
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from _grpc_chain import pack, unpack

from splitmq.mosquitto import free_port
from splitmq.mqtt.packets import encode_varint

_NUMBER = struct.Struct("<I")
_SIZE = struct.Struct("<I")
_PACKET_ID = struct.Struct("!H")
_CHAINS = itertools.count()
"""Numbers the chains of one process: each has topics and client ids of its own."""


def _nodelay(sock: socket.socket) -> socket.socket:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _connect(address: str) -> socket.socket:
    host, port = address.rsplit(":", 1)
    return _nodelay(socket.create_connection((host, int(port))))


def _read_exactly(sock: socket.socket, size: int) -> bytearray | None:
    """``size`` bytes; None if the peer closed before the first one."""
    data = bytearray(size)
    view = memoryview(data)
    have = 0
    while have < size:
        count = sock.recv_into(view[have:])
        if count == 0:
            if have == 0:
                return None
            raise ConnectionError("the peer closed mid-frame")
        have += count
    return data


def _send_all(sock: socket.socket, parts: list[bytes | bytearray | memoryview]) -> None:
    """``parts`` in one ``sendmsg`` (more if the socket takes part of them)."""
    views = [memoryview(part).cast("B") for part in parts]
    while views:
        sent = sock.sendmsg(views)
        while views and sent >= len(views[0]):
            sent -= len(views[0])
            views.pop(0)
        if views:
            views[0] = views[0][sent:]


Parts = list[bytes | bytearray | memoryview]


def write_shards(directory: Path, shards: Sequence[bytes]) -> list[Path]:
    """Each shard as ``shard-{index}.tflite`` in ``directory``, for stage processes."""
    paths = [directory / f"shard-{index}.tflite" for index in range(len(shards))]
    for path, data in zip(paths, shards, strict=True):
        path.write_bytes(data)
    return paths


class Link(Protocol):
    def send(self, frame: Parts) -> None: ...

    def receive(self) -> bytearray | None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


class TcpLink:
    """Frames behind their byte count, on one TCP connection each way."""

    def __init__(self, outgoing: socket.socket | None, incoming: socket.socket | None):
        self._out, self._in = outgoing, incoming

    def send(self, frame: Parts) -> None:
        assert self._out is not None
        _send_all(self._out, [_SIZE.pack(sum(len(part) for part in frame)), *frame])

    def receive(self) -> bytearray | None:
        assert self._in is not None
        header = _read_exactly(self._in, _SIZE.size)
        if header is None:
            return None
        (size,) = _SIZE.unpack(header)
        return _read_exactly(self._in, size)

    def flush(self) -> None:
        """Nothing is owed on a direct link."""

    def close(self) -> None:
        for sock in (self._out, self._in):
            if sock is not None:
                sock.close()


def _utf8(text: str) -> bytes:
    data = text.encode()
    return struct.pack("!H", len(data)) + data


class MqttLink:
    """A bare MQTT 3.1.1 client at QoS 0 or 1: frames published on ``topic_out``, read
    from the one subscription, ``topic_in``.

    At QoS 1 the PUBACKs owed for the frames received wait for the next frame sent and
    go out in the same write (or in :meth:`flush`); the broker's PUBACKs are read and
    dropped. Sending and receiving may be on two threads (:meth:`RawChain.stream`)."""

    def __init__(
        self,
        broker: str,
        client_id: str,
        topic_in: str | None,
        topic_out: str | None,
        qos: int = 0,
    ):
        if qos not in (0, 1):
            raise ValueError(f"a raw chain runs at QoS 0 or 1, not {qos}")
        self._sock = _connect(broker)
        self._qos = qos
        self._topic_out = _utf8(topic_out) if topic_out else b""
        self._packet_id = 0
        self._acks_owed: Parts = []
        self._write_lock = threading.Lock()
        body = _utf8("MQTT") + bytes([4, 0x02, 0, 0]) + _utf8(client_id)  # clean, no keep-alive
        _send_all(self._sock, [b"\x10", encode_varint(len(body)), body])
        connack = self._packet()
        if connack is None or connack[0] != 0x20 or bytes(connack[1]) != b"\x00\x00":
            raise ConnectionError("the broker refused the connection")
        if topic_in:
            body = struct.pack("!H", 1) + _utf8(topic_in) + bytes([qos])
            _send_all(self._sock, [b"\x82", encode_varint(len(body)), body])
            first, ack = self._packet() or (0, b"")
            if first != 0x90 or ack[-1:] != bytes([qos]):
                raise ConnectionError(f"the broker refused the subscription to {topic_in}")

    def _packet(self) -> tuple[int, bytearray] | None:
        head = _read_exactly(self._sock, 1)
        if head is None:
            return None
        size, shift = 0, 0
        while True:
            byte = _read_exactly(self._sock, 1)
            if byte is None:
                raise ConnectionError("the broker closed mid-packet")
            size |= (byte[0] & 0x7F) << shift
            shift += 7
            if not byte[0] & 0x80:
                break
        return head[0], _read_exactly(self._sock, size) or bytearray()

    def send(self, frame: Parts) -> None:
        variable = self._topic_out
        with self._write_lock:
            if self._qos:
                self._packet_id = self._packet_id % 0xFFFF + 1
                variable += _PACKET_ID.pack(self._packet_id)
            length = encode_varint(len(variable) + sum(len(part) for part in frame))
            owed, self._acks_owed = self._acks_owed, []
            _send_all(self._sock, [*owed, bytes([0x30 | self._qos << 1]), length, variable, *frame])

    def flush(self) -> None:
        """Write the PUBACKs still owed (nothing at QoS 0)."""
        with self._write_lock:
            owed, self._acks_owed = self._acks_owed, []
            if owed:
                _send_all(self._sock, owed)

    def receive(self) -> bytearray | None:
        while (packet := self._packet()) is not None:
            first, body = packet
            if first >> 4 == 3:  # PUBLISH: topic, the packet id at QoS 1, then the payload
                (topic_length,) = struct.unpack_from("!H", body)
                start = 2 + topic_length
                if first & 0x06:
                    packet_id = body[start : start + 2]
                    with self._write_lock:
                        self._acks_owed.append(b"\x40\x02" + packet_id)
                    start += 2
                del body[:start]
                return body
        return None

    def close(self) -> None:
        self.flush()
        self._sock.sendall(b"\xe0\x00")  # DISCONNECT
        self._sock.close()


def serve(shard_path: str, link: Link, threads: int) -> None:
    from splitmq.agent import find_runtime

    shard = find_runtime().load(Path(shard_path).read_bytes(), threads=threads)
    specs = {s.name: (tuple(s.shape), np.dtype(s.dtype)) for s in shard.inputs}
    print("ready", flush=True)
    while (frame := link.receive()) is not None:
        outputs, _seconds = shard.run(unpack(memoryview(frame)[_NUMBER.size :], specs))
        link.send([frame[: _NUMBER.size], pack({t.name: t.array for t in outputs})])
    link.close()


class RawChain:
    """The caller's side: the stage processes started here, frames sent to the first
    stage and answers read from the last, directly or through the broker at ``broker``
    (``host:port``), every hop at ``qos`` there."""

    def __init__(
        self,
        shard_paths: list[Path],
        output_specs: Mapping[str, tuple[tuple[int, ...], np.dtype[Any]]],
        threads: int = 1,
        broker: str | None = None,
        qos: int = 0,
    ):
        self._specs = output_specs
        self._processes: list[subprocess.Popen[str]] = []
        self._number = 0
        script = [sys.executable, str(Path(__file__))]
        last = len(shard_paths) - 1
        if broker is not None:
            chain = f"raw/{os.getpid()}-{next(_CHAINS)}"
            self._link: Link = MqttLink(
                broker, f"{chain}/caller", f"{chain}/result", f"{chain}/0", qos
            )
            for stage, path in enumerate(shard_paths):
                command = [*script, str(path), str(stage), "--broker", broker, "--chain", chain]
                command += ["--qos", str(qos)]
                self._start([*command, "--last"] if stage == last else command, threads)
            return
        results = socket.create_server(("127.0.0.1", 0))
        next_address = f"127.0.0.1:{results.getsockname()[1]}"
        answers: socket.socket | None = None
        for stage in reversed(range(len(shard_paths))):  # the last stage first
            port = free_port()
            command = [*script, str(shard_paths[stage]), str(stage), "--listen", str(port)]
            self._start([*command, "--next", next_address], threads)
            if answers is None:
                answers = _nodelay(results.accept()[0])  # the last stage connected back
            next_address = f"127.0.0.1:{port}"
        results.close()
        self._link = TcpLink(_connect(next_address), answers)

    @property
    def pids(self) -> list[int]:
        """The stage processes' ids, first stage first."""
        pids = [process.pid for process in self._processes]
        return pids if isinstance(self._link, MqttLink) else pids[::-1]  # last started first

    def _start(self, command: list[str], threads: int) -> None:
        process = subprocess.Popen(
            [*command, "--threads", str(threads)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._processes.append(process)
        assert process.stdout is not None
        if process.stdout.readline().strip() != "ready":
            raise SystemExit("a raw stage process did not start")

    def _frame(self, arrays: Mapping[str, np.ndarray]) -> Parts:
        self._number += 1
        return [_NUMBER.pack(self._number), pack(arrays)]

    def _answer(self, expected: int) -> dict[str, np.ndarray]:
        frame = self._link.receive()
        if frame is None or _NUMBER.unpack_from(frame)[0] != expected:
            raise ConnectionError("the chain answered out of turn")
        return unpack(memoryview(frame)[_NUMBER.size :], self._specs)

    def infer(self, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One request, nothing else in flight."""
        self._link.send(self._frame(arrays))
        return self._answer(self._number)

    def stream(
        self, inputs: Iterable[Mapping[str, np.ndarray]], in_flight: int
    ) -> list[dict[str, np.ndarray]]:
        """Every input's outputs, in order, with up to ``in_flight`` sent ahead."""
        frames = [self._frame(arrays) for arrays in inputs]
        first = self._number - len(frames) + 1
        window = threading.Semaphore(in_flight)

        def send() -> None:
            for frame in frames:
                window.acquire()
                self._link.send(frame)

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        out = []
        for expected in range(first, first + len(frames)):
            out.append(self._answer(expected))
            window.release()
        sender.join()
        self._link.flush()
        return out

    def close(self) -> None:
        if isinstance(self._link, MqttLink):  # the stages wait on the broker: end them
            for process in self._processes:
                process.terminate()
        self._link.close()
        for process in self._processes:
            process.wait(10)


def floors(
    shard_paths: list[Path],
    output_specs: Mapping[str, tuple[tuple[int, ...], np.dtype[Any]]],
    threads: int,
    broker: str,
) -> dict[str, RawChain]:
    """The floors a scenario measures beside splitmq: the shards over bare sockets
    (``raw``), and through ``broker`` as bare MQTT clients at QoS 0 (``raw_broker``) and
    at QoS 1 (``raw_broker_q1``)."""
    return {
        "raw": RawChain(shard_paths, output_specs, threads),
        "raw_broker": RawChain(shard_paths, output_specs, threads, broker=broker),
        "raw_broker_q1": RawChain(shard_paths, output_specs, threads, broker=broker, qos=1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("shard")
    parser.add_argument("stage", type=int)
    parser.add_argument("--listen", type=int, help="direct: the port the stage before connects to")
    parser.add_argument("--next", help="direct: host:port of the next stage (or the caller)")
    parser.add_argument("--broker", help="through a broker: its host:port")
    parser.add_argument("--last", action="store_true", help="through a broker: the last stage")
    parser.add_argument("--chain", default="raw", help="through a broker: the topics' prefix")
    parser.add_argument("--qos", type=int, default=0, choices=(0, 1), help="through a broker")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    link: Link
    if args.broker:
        chain = args.chain
        topic_out = f"{chain}/result" if args.last else f"{chain}/{args.stage + 1}"
        client_id = f"{chain}/stage-{args.stage}"
        link = MqttLink(args.broker, client_id, f"{chain}/{args.stage}", topic_out, args.qos)
    else:
        listener = socket.create_server(("127.0.0.1", args.listen))
        downstream = _connect(args.next)
        link = _AcceptingLink(listener, downstream)
    serve(args.shard, link, args.threads)


class _AcceptingLink(TcpLink):
    """A direct stage's link: the stage before connects once the stage is ready."""

    def __init__(self, listener: socket.socket, downstream: socket.socket):
        super().__init__(downstream, None)
        self._listener: socket.socket | None = listener

    def receive(self) -> bytearray | None:
        if self._listener is not None:
            self._in = _nodelay(self._listener.accept()[0])
            self._listener.close()
            self._listener = None
        return super().receive()


if __name__ == "__main__":
    main()
