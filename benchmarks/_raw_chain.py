"""The floor of any split over processes: shards chained with bare TCP sockets.

Each stage is a process with one thread and blocking sockets: it reads a frame from the
stage before it, runs its shard (same runtime and thread count as the agents), and
writes its outputs to the next stage, or, from the last stage, straight back to the
caller. A frame is ``[u32 request number][u32 byte count]`` and the tensors framed as in
``_grpc_chain.pack``. No broker, no protocol, no thread hand-off, no retry, no check
beyond the shapes: what is left of a split's cost once every feature of a framework is
gone, on this machine. The benchmarks set splitmq beside it.

    python benchmarks/_raw_chain.py SHARD.tflite PORT NEXT_HOST:PORT [--threads 1]
"""

from __future__ import annotations

import argparse
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from _grpc_chain import pack, unpack

_HEADER = struct.Struct("<II")


def _connect(address: str) -> socket.socket:
    host, port = address.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _read_exactly(sock: socket.socket, view: memoryview) -> bool:
    """Fill ``view``; False if the peer closed before the first byte."""
    have = 0
    while have < len(view):
        count = sock.recv_into(view[have:])
        if count == 0:
            if have == 0:
                return False
            raise ConnectionError("the peer closed mid-frame")
        have += count
    return True


def read_frame(sock: socket.socket) -> tuple[int, bytearray] | None:
    """The next ``(request number, payload)``; None at the end of the stream."""
    header = bytearray(_HEADER.size)
    if not _read_exactly(sock, memoryview(header)):
        return None
    number, size = _HEADER.unpack(header)
    payload = bytearray(size)
    _read_exactly(sock, memoryview(payload))
    return number, payload


def write_frame(sock: socket.socket, number: int, payload: bytes) -> None:
    """Header and payload in one ``sendmsg`` (more if the socket takes part of it)."""
    parts = [memoryview(_HEADER.pack(number, len(payload))), memoryview(payload)]
    while parts:
        sent = sock.sendmsg(parts)
        while parts and sent >= len(parts[0]):
            sent -= len(parts[0])
            parts.pop(0)
        if parts:
            parts[0] = parts[0][sent:]


def serve(shard_path: str, port: int, next_address: str, threads: int) -> None:
    from splitmq.agent import find_runtime

    shard = find_runtime().load(Path(shard_path).read_bytes(), threads=threads)
    specs = {s.name: (tuple(s.shape), np.dtype(s.dtype)) for s in shard.inputs}
    listener = socket.create_server(("127.0.0.1", port))
    downstream = _connect(next_address)
    print("ready", flush=True)
    upstream, _ = listener.accept()
    upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while (frame := read_frame(upstream)) is not None:
        number, payload = frame
        outputs, _seconds = shard.run(unpack(payload, specs))
        write_frame(downstream, number, pack({t.name: t.array for t in outputs}))
    downstream.close()


class RawChain:
    """The caller's side: stage processes started here, frames sent to the first stage,
    answers read from the last."""

    def __init__(
        self,
        shard_paths: list[Path],
        ports: list[int],
        output_specs: Mapping[str, tuple[tuple[int, ...], np.dtype[Any]]],
        threads: int = 1,
    ):
        self._specs = output_specs
        results = socket.create_server(("127.0.0.1", 0))
        next_address = f"127.0.0.1:{results.getsockname()[1]}"
        self._processes: list[subprocess.Popen[str]] = []
        script = Path(__file__)
        stages = list(zip(shard_paths, ports, strict=True))
        for index, (path, port) in enumerate(reversed(stages)):  # the last stage first
            command = [sys.executable, str(script), str(path), str(port), next_address]
            process = subprocess.Popen(
                [*command, "--threads", str(threads)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                text=True,
            )
            self._processes.append(process)
            assert process.stdout is not None
            if process.stdout.readline().strip() != "ready":
                raise SystemExit("a raw stage server did not start")
            if index == 0:
                self._answers, _ = results.accept()  # the last stage connected back
            next_address = f"127.0.0.1:{port}"
        results.close()
        self._first = _connect(next_address)
        self._number = 0

    def infer(self, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One request, nothing else in flight."""
        self._number += 1
        write_frame(self._first, self._number, pack(arrays))
        frame = read_frame(self._answers)
        if frame is None or frame[0] != self._number:
            raise ConnectionError("the chain answered out of turn")
        return unpack(frame[1], self._specs)

    def stream(
        self, inputs: Iterable[Mapping[str, np.ndarray]], in_flight: int
    ) -> list[dict[str, np.ndarray]]:
        """Every input's outputs, in order, with up to ``in_flight`` sent ahead."""
        payloads = [pack(arrays) for arrays in inputs]
        window = threading.Semaphore(in_flight)
        first = self._number + 1

        def send() -> None:
            for payload in payloads:
                window.acquire()
                self._number += 1
                write_frame(self._first, self._number, payload)

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        out = []
        for expected in range(first, first + len(payloads)):
            frame = read_frame(self._answers)
            if frame is None or frame[0] != expected:
                raise ConnectionError("the chain answered out of order")
            window.release()
            out.append(unpack(frame[1], self._specs))
        sender.join()
        return out

    def close(self) -> None:
        self._first.close()
        for process in self._processes:
            process.wait(10)
        self._answers.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("shard")
    parser.add_argument("port", type=int)
    parser.add_argument("next")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    serve(args.shard, args.port, args.next, args.threads)


if __name__ == "__main__":
    main()
