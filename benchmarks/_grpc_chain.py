"""The seeds' transport: shards chained with gRPC calls, one minimal server per stage.

Each stage is a process serving one unary method on raw bytes (a generic handler, no
protobuf code generation). A request carries the stage's input tensors framed as
``[u16 name length][name][u32 byte count][raw bytes]`` each; the server runs its shard
with the same runtime and thread count as the agents, then calls the next stage with
its outputs and returns that stage's answer -- the last stage returns the model's
outputs. The same number of activation transfers as splitmq's chain, with the leanest
encoding there is, and no broker.

    python benchmarks/_grpc_chain.py SHARD.tflite PORT [NEXT_ADDRESS] [--threads 1]
"""

from __future__ import annotations

import argparse
import struct
import sys
from collections.abc import Mapping
from concurrent import futures
from typing import Any

import numpy as np

SERVICE = "splitmq.bench.Stage"
METHOD = "Run"
PATH = f"/{SERVICE}/{METHOD}"
_NAME = struct.Struct("<H")
_SIZE = struct.Struct("<I")


def pack(arrays: Mapping[str, np.ndarray]) -> bytes:
    """Tensors as raw bytes, each behind its name and byte count."""
    parts: list[bytes | memoryview] = []
    for name, array in arrays.items():
        encoded = name.encode()
        data = np.ascontiguousarray(array).data.cast("B")
        parts += [_NAME.pack(len(encoded)), encoded, _SIZE.pack(data.nbytes), data]
    return b"".join(parts)


def unpack(
    payload: bytes | bytearray | memoryview,
    specs: Mapping[str, tuple[tuple[int, ...], np.dtype[Any]]],
) -> dict[str, np.ndarray]:
    """The named tensors in ``payload``, as read-only views, shaped by ``specs``."""
    out: dict[str, np.ndarray] = {}
    view = memoryview(payload)
    offset = 0
    while offset < len(view):
        (length,) = _NAME.unpack_from(view, offset)
        offset += _NAME.size
        name = bytes(view[offset : offset + length]).decode()
        offset += length
        (size,) = _SIZE.unpack_from(view, offset)
        offset += _SIZE.size
        shape, dtype = specs[name]
        out[name] = np.frombuffer(view[offset : offset + size], dtype=dtype).reshape(shape)
        offset += size
    return out


def serve(shard_path: str, port: int, next_address: str | None, threads: int) -> None:
    import grpc

    from splitmq.agent import find_runtime

    shard = find_runtime().load(open(shard_path, "rb").read(), threads=threads)  # noqa: SIM115
    specs = {s.name: (tuple(s.shape), np.dtype(s.dtype)) for s in shard.inputs}
    forward = None
    if next_address:
        channel = grpc.insecure_channel(
            next_address,
            options=[("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)],
        )
        forward = channel.unary_unary(PATH)

    def run(request: bytes, _context: Any) -> bytes:
        outputs, _seconds = shard.run(unpack(request, specs))
        payload = pack({t.name: t.array for t in outputs})
        return forward(payload) if forward is not None else payload

    handler = grpc.method_handlers_generic_handler(
        SERVICE, {METHOD: grpc.unary_unary_rpc_method_handler(run)}
    )
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=1),
        handlers=[handler],
        options=[("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)],
    )
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print("ready", flush=True)
    sys.stdin.read()  # until the parent closes our stdin
    server.stop(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("shard")
    parser.add_argument("port", type=int)
    parser.add_argument("next", nargs="?")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    serve(args.shard, args.port, args.next, args.threads)


if __name__ == "__main__":
    main()
