"""Limits the decoder enforces on every message, so hostile bytes cannot exhaust memory."""

from __future__ import annotations

from dataclasses import dataclass

MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Limits:
    """What a single decoded message may hold.

    Attributes:
        max_message_bytes: the largest encoded message accepted (checked before decoding).
        max_depth: the deepest nesting of CBOR arrays and maps.
        max_rank: the largest number of dimensions of a tensor.
        max_tensor_elements: the most elements a single tensor may have.
        max_tensors: the most tensors one message may carry.
        max_items: the most entries of any array or map in the message's schema fields.
    """

    max_message_bytes: int = 64 * MiB
    max_depth: int = 32
    max_rank: int = 8
    max_tensor_elements: int = 64 * MiB
    max_tensors: int = 256
    max_items: int = 65536


DEFAULT_LIMITS = Limits()
