"""What a stream of messages repeats, remembered for the fast paths of
:func:`splitmq.wire.hop.read` (a stage's activations) and
:func:`splitmq.wire.hop.read_result` (a client's results).

The activations a stage reads one after another differ in their request id, their
deadline, their trace and their tensors' bytes. The rest repeats byte for byte: the
head's other fields (attempt, deployment, stage, route, callback) and each tensor's map
up to its bytes (name, shape, typed array, length, quantization). A client's results
repeat the same way (attempt, deployment, the tensors' maps). Decoding and checking
that again per message cost about 40 us of a 95 us ``hop.read`` run cold, after an
invoke, on the machine of ``docs/performance.md``.

So the fast paths decode a payload the general way once and give its layout to
:meth:`Layouts.remember`. A later payload whose head (request id and deadline aside)
and the bytes around its tensors' bytes equal a remembered layout's reads through
:meth:`Layouts.read`: the same bytes decode to the same fields and pass the same
checks, so only the request id, the deadline and the tensors' bytes are read. A bool
tensor's values are still checked (0 or 1). Anything else (another layout, a byte that
differs, a payload too short) is left to the general path, which says what is wrong.

The head's layout is splitmq's encoder's: the fields in order, the request id a 16-byte
string right after ``kind`` and ``v``, and in an activation the deadline, last, either
below 24 or an 8-byte integer (milliseconds since the epoch).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import numpy as np

from splitmq.wire.cbor import _head
from splitmq.wire.messages import REQUEST_ID_BYTES, Activation, Result, Route
from splitmq.wire.tensors import Tensor

__all__ = ["TENSORS_KEY", "Layout", "Layouts"]

TENSORS_KEY = b"\x67tensors"  # a 7-byte text string: "tensors"


def _prefix(kind: type[Activation | Result]) -> bytes:
    """A message's bytes after the map's initial byte, up to the request id's bytes."""
    prefix = b"\x64kind" + _head(3, len(kind.KIND)) + kind.KIND.encode()
    prefix += b"\x61v" + _head(0, kind.VERSION)
    return prefix + b"\x6arequest_id" + _head(2, REQUEST_ID_BYTES)


_DEADLINE_KEY = b"\x6bdeadline_ms"
_LONG_DEADLINE = 0x1B
"""An unsigned integer's initial byte with an 8-byte argument."""
_TRIES = 4
"""Places tried for the ``tensors`` key (a name before it may hold its bytes)."""
REMEMBERED = 64
"""Heads kept (all are forgotten when one more comes): a stage sees one per
deployment, stage, route and callback, so one per client and plan."""
TENSOR_LAYOUTS = 4
"""Layouts of the tensors kept per head: a client's results from the final stages of a
stage graph share their head and carry different tensors, one layout per stage."""


@dataclass(frozen=True, slots=True)
class _TensorLayout:
    name: str
    dtype: np.dtype[Any]
    """The typed array's dtype (uint8 for a bool tensor)."""
    shape: tuple[int, ...]
    nbytes: int
    scale: float | None
    zero_point: int | None
    is_bool: bool


@dataclass(frozen=True, slots=True)
class Layout:
    """What repeats: the head's fields but the request id and deadline (as
    :func:`splitmq.wire.hop.read` keeps them), the route, and the bytes around the
    tensors' bytes (``gaps``: before the first, between two, after the last)."""

    head: dict[str, Any]
    route: Route
    gaps: tuple[bytes, ...]
    tensors: tuple[_TensorLayout, ...]


def _deadline(
    payload: bytes | bytearray, view: memoryview, at: int, middle_at: int
) -> tuple[int, int] | None:
    """Where the deadline's key starts, and the deadline, when an activation's head ends
    with it before ``at`` as splitmq writes it, after ``middle_at``; else None."""
    long_at = at - 9 - len(_DEADLINE_KEY)
    if (
        long_at >= middle_at
        and payload[at - 9] == _LONG_DEADLINE
        and view[long_at : at - 9] == _DEADLINE_KEY
    ):
        return long_at, int.from_bytes(view[at - 8 : at], "big")
    short_at = at - 1 - len(_DEADLINE_KEY)
    if short_at >= middle_at and payload[at - 1] < 24 and view[short_at : at - 1] == _DEADLINE_KEY:
        return short_at, payload[at - 1]
    return None


def _no_deadline(
    _payload: bytes | bytearray, _view: memoryview, at: int, _middle_at: int
) -> tuple[int, int]:
    """A result's head ends at its tensors' key: it has no deadline."""
    return at, 0


def _tensors(
    payload: bytes | bytearray, view: memoryview, pos: int, layout: Layout
) -> tuple[tuple[Tensor, ...], int] | None:
    """The tensors from ``pos`` on, and where the fields after them start, when the
    bytes around their bytes are ``layout``'s; else None."""
    tensors = []
    for gap, tensor in zip(layout.gaps, layout.tensors, strict=False):
        start = pos + len(gap)
        pos = start + tensor.nbytes
        if view[start - len(gap) : start] != gap or pos > len(payload):
            return None
        array = np.frombuffer(view, tensor.dtype, tensor.nbytes // tensor.dtype.itemsize, start)
        array = array.reshape(tensor.shape)
        if tensor.is_bool:
            if array.size and int(array.max()) > 1:
                return None  # the general path says so
            array = array.view(np.bool_)
        tensors.append(Tensor(tensor.name, array, tensor.scale, tensor.zero_point))
    last = layout.gaps[-1]
    if view[pos : pos + len(last)] != last:
        return None
    return tuple(tensors), pos + len(last)


class Layouts:
    """The layouts of one kind of message remembered (see the module docstring):
    activations (shared by a process's stages) or results (a client's).

    A dict read and a dict store are each atomic, so threads share it unlocked.
    """

    def __init__(self, kind: type[Activation | Result] = Activation) -> None:
        self._known: dict[bytes, tuple[Layout, ...]] = {}
        """By the head's bytes from the request id to the deadline: the layouts of the
        tensors that came with it, the latest first."""
        self._prefix = _prefix(kind)
        self._request_id_at = 1 + len(self._prefix)
        self._middle_at = self._request_id_at + REQUEST_ID_BYTES
        """Where the fields after the request id start (the layout's key): from
        ``attempt`` to ``callback`` in an activation, ``attempt`` and ``deployment`` in a
        result."""
        self._head_end = _deadline if kind is Activation else _no_deadline

    def read(
        self, payload: bytes | bytearray, view: memoryview
    ) -> tuple[dict[str, Any], Route, tuple[Tensor, ...], int] | None:
        """The head's fields, the route, the tensors, and where the fields after the
        tensors start, when ``payload`` has a remembered layout; else None."""
        if view[1 : self._request_id_at] != self._prefix:
            return None
        at = payload.find(TENSORS_KEY, self._middle_at)
        for _ in range(_TRIES):
            if at < 0:
                return None
            cut = self._head_end(payload, view, at, self._middle_at)
            if cut is not None:
                layouts = self._known.get(bytes(view[self._middle_at : cut[0]]))
                if layouts is not None:
                    break
            at = payload.find(TENSORS_KEY, at + 1)
        else:
            return None
        for layout in layouts:  # the latest first
            read = _tensors(payload, view, at + len(TENSORS_KEY), layout)
            if read is not None:
                break
        else:
            return None
        tensors, tail_at = read
        head = {**layout.head, "request_id": bytes(view[self._request_id_at : self._middle_at])}
        if self._head_end is _deadline:
            head["deadline_ms"] = cut[1]
        return head, layout.route, tensors, tail_at

    def remember(
        self,
        payload: bytes | bytearray,
        view: memoryview,
        at: int,
        *,
        head: dict[str, Any],
        route: Route,
        tensors: tuple[Tensor, ...],
        tail_at: int,
    ) -> None:
        """Remember the layout of ``payload``, which the general path has read and
        checked: ``at`` is where its ``tensors`` key starts, ``tail_at`` where the fields
        after the tensors do. A layout this module cannot reuse is not remembered."""
        if view[1 : self._request_id_at] != self._prefix or sys.byteorder != "little":
            return
        cut = self._head_end(payload, view, at, self._middle_at)
        if cut is None:
            return
        origin = np.frombuffer(view, np.uint8).__array_interface__["data"][0]
        gaps: list[bytes] = []
        layouts: list[_TensorLayout] = []
        pos = at + len(TENSORS_KEY)
        for tensor in tensors:
            array = tensor.array
            start = array.__array_interface__["data"][0] - origin
            if array.nbytes == 0 or not array.flags.c_contiguous:
                return
            if not pos <= start <= tail_at - array.nbytes:
                return  # not a view of the payload's bytes
            is_bool = array.dtype.kind == "b"
            dtype = np.dtype("u1") if is_bool else array.dtype
            gaps.append(bytes(view[pos:start]))
            layouts.append(
                _TensorLayout(
                    tensor.name,
                    dtype,
                    array.shape,
                    array.nbytes,
                    tensor.scale,
                    tensor.zero_point,
                    is_bool,
                )
            )
            pos = start + array.nbytes
        gaps.append(bytes(view[pos:tail_at]))
        layout = Layout(dict(head), route, tuple(gaps), tuple(layouts))
        key = bytes(view[self._middle_at : cut[0]])
        known = tuple(other for other in self._known.get(key, ()) if other != layout)
        if len(self._known) >= REMEMBERED and key not in self._known:
            self._known = {}
        self._known[key] = (layout, *known[: TENSOR_LAYOUTS - 1])
