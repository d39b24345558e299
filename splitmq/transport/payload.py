"""What a transport publishes: one payload, as bytes or as its parts in order.

Compiled (``splitmq.compiled``): an agent's stage sizes each message it sends."""

from __future__ import annotations

__all__ = ["Buffer", "Payload", "payload_bytes", "payload_size"]

Buffer = bytes | bytearray | memoryview
Payload = bytes | bytearray | list[Buffer]
"""What ``publish`` sends: bytes, or the parts of one payload in order (a list), which
a transport writes out without joining them first (``splitmq.wire.encode_parts``)."""


def payload_size(payload: Payload) -> int:
    """The number of bytes ``payload`` holds."""
    if isinstance(payload, list):
        return sum(memoryview(part).nbytes for part in payload)
    return len(payload)


def payload_bytes(payload: Payload) -> bytes:
    """``payload`` as one bytes object (parts joined)."""
    return b"".join(payload) if isinstance(payload, list) else bytes(payload)
