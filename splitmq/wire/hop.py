"""An activation as a stage reads and forwards it, and a result as a client reads it:
the per-hop fast path.

A stage needs little of an activation: where it goes (route, callback, deadline), who
it is (request id, attempt), and its tensors. The rest, and most of what it reads, it
only forwards. :func:`read` therefore decodes an activation in three pieces, cut where
splitmq's own encoder puts them:

- the fields before ``tensors`` (kind ... deadline_ms), through cbor2's C decoder in
  one call, kept as the decoded map, so the next hop's map is that map with its stage
  changed (:func:`forward_parts`), encoded by cbor2 in one call again;
- the tensors, through the zero-copy reader (their bytes stay views of the payload);
- the fields after them (trace, client_id, source), through cbor2's C decoder; a
  trace written as :func:`trace_entry` writes it is kept as decoded.

Once a stream's first activation is read so, the head and the tensors' maps of the
ones after it are not decoded again: their layout is remembered
(:mod:`splitmq.wire.hop_layouts`), and only their request id, deadline and tensors'
bytes are read. :func:`read_result` does the same for a client's results.

Every field goes through the codec's own converter, so :func:`read` accepts exactly
what :func:`splitmq.wire.decode` accepts as an :class:`Activation`; a payload not laid
out the way splitmq encodes it (another encoder's key order, unknown fields) makes
:func:`read` return None, and the caller decodes it the general way
(:meth:`Hop.of`). The bytes :func:`forward_parts` and :func:`result_parts` give are
those :func:`splitmq.wire.encode_parts` gives for the same :class:`Activation` or
:class:`Result`, byte for byte (tests check it): no message object is built per hop.
"""

from __future__ import annotations

from typing import Any

import cbor2

from splitmq.errors import DecodeError
from splitmq.wire.cbor import _head as _item_head
from splitmq.wire.cbor import _Reader, loads_cbor2
from splitmq.wire.codec import _schema, encode_parts
from splitmq.wire.hop_layouts import _DEADLINE_KEY, Layouts, _prefix
from splitmq.wire.hop_layouts import TENSORS_KEY as _TENSORS_KEY
from splitmq.wire.hop_writer import encoded_message_parts, message_parts, text_item
from splitmq.wire.limits import DEFAULT_LIMITS, Limits
from splitmq.wire.messages import (
    REQUEST_ID_BYTES,
    Activation,
    Result,
    Route,
    TraceEntry,
    _check_request_id,
)
from splitmq.wire.tensors import Tensor

__all__ = [
    "Hop",
    "forward_parts",
    "read",
    "read_result",
    "request_parts",
    "result_parts",
    "trace_entry",
]

_ACTIVATION = _schema(Activation)
_FIELDS = {f.name: f for f in _ACTIVATION.fields}
_TRACE = _schema(TraceEntry)
_TRACE_NAMES = tuple(f.name for f in _TRACE.fields)
_TRACE_TYPES = tuple(type_ for f in _TRACE.fields for type_ in f.as_is)
"""A trace entry's fields as :func:`trace_entry` writes them, and the one type each
takes as it is (:attr:`splitmq.wire.codec._Field.as_is`: every field a scalar)."""
_HEAD: tuple[str, ...] = ("kind", "v", "request_id", "attempt", "deployment", "stage", "route")
_HEAD += ("callback", "deadline_ms")
"""The fields before ``tensors``, in the order the encoder writes them."""
_TAILS = {2: ("trace", "client_id"), 3: ("trace", "client_id", "source")}
"""The fields after ``tensors``, by how many there are."""
_MAP = 0xA0
"""A CBOR map's initial byte, less its count (below 24)."""
_TRIES = 4
"""Places tried for the ``tensors`` key before leaving a payload to the general decoder."""
_LAYOUTS = Layouts()
"""The layouts this process's stages have read (what their activations repeat)."""
_RESULTS = Layouts(Result)
"""The layouts of the results this process has read (a client's)."""
_RESULT_FIELDS = {f.name: f for f in _schema(Result).fields}
_RESULT_HEAD = ("kind", "v", "request_id", "attempt", "deployment")
"""A result's fields before ``tensors``, in the order the encoder writes them."""
_RESULT_TAILS = {2: ("trace", "agent_id"), 3: ("trace", "agent_id", "stage")}
"""A result's fields after ``tensors``, by how many there are."""


class Hop:
    """An activation on its way through a stage: its fields as :class:`Activation` has
    them, its trace as the maps the wire carries (already checked), and the decoded
    map of its fields before the tensors (``head``), which the next hop's message reuses.
    """

    __slots__ = (
        "attempt",
        "callback",
        "client_id",
        "deadline_ms",
        "deployment",
        "head",
        "request_id",
        "route",
        "source",
        "stage",
        "tensors",
        "trace",
    )

    def __init__(
        self,
        head: dict[str, Any],
        route: Route,
        tensors: tuple[Tensor, ...],
        *,
        trace: list[dict[str, Any]],
        client_id: str,
        source: int | None,
    ):
        self.head = head
        self.request_id: bytes = head["request_id"]
        self.attempt: int = head["attempt"]
        self.deployment: str = head["deployment"]
        self.stage: int = head["stage"]
        self.callback: str = head["callback"]
        self.deadline_ms: int = head["deadline_ms"]
        self.route = route
        self.tensors = tensors
        self.trace = trace
        self.client_id = client_id
        self.source = source

    @classmethod
    def of(cls, activation: Activation) -> Hop:
        """The hop of an activation decoded the general way."""
        wire = _ACTIVATION.to_wire(activation)
        head = {name: wire[name] for name in _HEAD}
        return cls(
            head,
            activation.route,
            activation.tensors,
            trace=wire["trace"],
            client_id=activation.client_id,
            source=activation.source,
        )

    def following(self, tensors: tuple[Tensor, ...], entry: dict[str, Any]) -> Hop:
        """The activation this stage hands the next stage in-process (no bytes)."""
        head = {**self.head, "stage": self.stage + 1}
        trace = [*self.trace, entry]
        return Hop(
            head, self.route, tensors, trace=trace, client_id=self.client_id, source=self.source
        )

    def activation(self) -> Activation:
        """The whole message (for what the fast path does not serve)."""
        trace = tuple(_TRACE.from_wire(e, DEFAULT_LIMITS, "trace") for e in self.trace)
        return Activation(
            request_id=self.request_id,
            attempt=self.attempt,
            deployment=self.deployment,
            stage=self.stage,
            route=self.route,
            callback=self.callback,
            deadline_ms=self.deadline_ms,
            tensors=self.tensors,
            trace=trace,
            client_id=self.client_id,
            source=self.source,
        )


def trace_entry(
    *,
    stage: int,
    agent_id: str,
    received_ms: float,
    started_ms: float,
    finished_ms: float,
    bytes_in: int,
    attempt: int,
    bytes_out: int,
    energy_j: float,
) -> dict[str, Any]:
    """A :class:`TraceEntry` as the wire carries it (its fields in their order)."""
    return {
        "stage": stage,
        "agent_id": agent_id,
        "received_ms": float(received_ms),
        "started_ms": float(started_ms),
        "finished_ms": float(finished_ms),
        "bytes_in": bytes_in,
        "attempt": attempt,
        "bytes_out": bytes_out,
        "energy_j": float(energy_j),
    }


def read(payload: bytes | bytearray | memoryview, limits: Limits = DEFAULT_LIMITS) -> Hop | None:
    """The activation in ``payload`` if splitmq's encoder laid it out, else None.

    Raises:
        DecodeError: it is laid out so, and a field is wrong (the message says which).
    """
    tail_names = _tail_names(payload, limits, len(_HEAD), _TAILS)
    if tail_names is None:
        return None
    assert isinstance(payload, bytes | bytearray)  # as _tail_names found
    view = memoryview(payload)
    known = _LAYOUTS.read(payload, view) if limits is DEFAULT_LIMITS else None
    if known is not None:
        head, route, tensors, tail_at = known
    else:
        read = _read_head_and_tensors(payload, view, limits)
        if read is None:
            return None
        head, route, tensors, tail_at = read
    tail = loads_cbor2(
        bytes((_MAP + len(tail_names),)) + view[tail_at:], max_depth=limits.max_depth
    )
    if not isinstance(tail, dict) or tuple(tail) != tail_names:
        return None
    trace = tail["trace"]
    if not _as_written(trace, limits):
        checked = _FIELDS["trace"].from_wire(trace, limits, "trace")
        trace = [_TRACE.to_wire(entry) for entry in checked]
    client_id = _FIELDS["client_id"].from_wire(tail["client_id"], limits, "client_id")
    source = tail.get("source")
    if source is not None:
        source = _FIELDS["source"].from_wire(source, limits, "source")
    return Hop(
        head,
        route,
        tensors,
        trace=trace,
        client_id=client_id,
        source=source,
    )


def _tail_names(
    payload: bytes | bytearray | memoryview,
    limits: Limits,
    head: int,
    tails: dict[int, tuple[str, ...]],
) -> tuple[str, ...] | None:
    """The names of the fields after the tensors, by how many fields the map of
    ``payload`` has (``head`` of them before the tensors); None when ``payload`` is not
    bytes within the limits, or its map has no count ``tails`` knows."""
    if not isinstance(payload, bytes | bytearray):
        return None
    size = len(payload)
    if size > limits.max_message_bytes or size < 2:
        return None
    return tails.get(payload[0] - _MAP - head - 1)


def _as_written(trace: Any, limits: Limits) -> bool:
    """Whether ``trace`` is a list of maps exactly as :func:`trace_entry` writes them:
    every field, in order, each of its own type. Such a trace is what checking and
    converting it would give back, so it is kept as it is (no entry object per hop)."""
    if type(trace) is not list or len(trace) > limits.max_items:
        return False
    for entry in trace:
        if type(entry) is not dict or tuple(entry) != _TRACE_NAMES:
            return False
        if tuple(map(type, entry.values())) != _TRACE_TYPES:
            return False
    return True


def _trace_entries(trace: Any, limits: Limits) -> tuple[TraceEntry, ...]:
    """A result's trace as :class:`TraceEntry` objects. One written as :func:`trace_entry`
    writes it (:func:`_as_written`) is what the codec would make of it field by field,
    so its entries are made from the decoded maps as they are."""
    if _TRACE.plain and _as_written(trace, limits):
        return tuple(map(_TRACE.filled, trace))
    entries: tuple[TraceEntry, ...] = _RESULT_FIELDS["trace"].from_wire(trace, limits, "trace")
    return entries


def _read_head_and_tensors(
    payload: bytes | bytearray, view: memoryview, limits: Limits
) -> tuple[dict[str, Any], Route, tuple[Tensor, ...], int] | None:
    """An activation's head fields, route, tensors, and where the fields after the
    tensors start, read the general way (:func:`_general_read`); its layout is
    remembered (:class:`Layouts`) for the payloads after it."""
    read = _general_read(payload, view, limits, Activation, names=_HEAD, fields=_FIELDS)
    if read is None:
        return None
    head, tensors, at, tail_at = read
    if limits is DEFAULT_LIMITS:
        _LAYOUTS.remember(
            payload, view, at, head=head, route=head["route"], tensors=tensors, tail_at=tail_at
        )
    return head, head["route"], tensors, tail_at


def _general_read(
    payload: bytes | bytearray,
    view: memoryview,
    limits: Limits,
    kind: type[Activation | Result],
    *,
    names: tuple[str, ...],
    fields: dict[str, Any],
) -> tuple[dict[str, Any], tuple[Tensor, ...], int, int] | None:
    """The fields before the tensors (``names``, each through the codec's converter,
    the request id checked), the tensors, where their key starts and where the fields
    after them start; None when ``payload`` is not a ``kind`` laid out as splitmq's
    encoder lays it out."""
    head, at = _head(payload, view, limits, names)
    if head is None or head["kind"] != kind.KIND:
        return None
    version = head["v"]
    if type(version) is not int or not 1 <= version <= kind.VERSION:
        return None
    converted = {name: fields[name].from_wire(head[name], limits, name) for name in names[2:]}
    try:
        _check_request_id(converted["request_id"])
    except ValueError as error:
        raise DecodeError(str(error)) from None
    head.update(converted)
    reader = _Reader(view, limits.max_depth)
    reader.pos = at + len(_TENSORS_KEY)
    tensors = fields["tensors"].from_wire(reader.item(1), limits, "tensors")
    return head, tensors, at, reader.pos


def _head(
    payload: bytes | bytearray, view: memoryview, limits: Limits, names: tuple[str, ...] = _HEAD
) -> tuple[dict[str, Any] | None, int]:
    """The fields before ``tensors``, and where the ``tensors`` key starts.

    The first place the key's bytes occur may be inside a string before it (a
    deployment named ``gtensors``): such a cut does not decode, and the next is tried.
    """
    at = payload.find(_TENSORS_KEY)
    for _ in range(_TRIES):
        if at < 0:
            return None, at
        try:
            head = loads_cbor2(bytes((_MAP + len(names),)) + view[1:at], max_depth=limits.max_depth)
        except DecodeError:
            at = payload.find(_TENSORS_KEY, at + 1)
            continue
        if isinstance(head, dict) and tuple(head) == names:
            return head, at
        return None, at
    return None, at


def read_result(payload: bytes | bytearray | memoryview) -> Result | None:
    """The :class:`Result` in ``payload`` if splitmq's encoder laid it out, else None
    (it may still be a result, or an error message: the general decoder says).

    A client's stream of results repeats its head and its tensors' maps as a stage's
    activations do: they are read through the layouts remembered (:class:`Layouts`).

    Raises:
        DecodeError: it is laid out so, and a field is wrong (the message says which).
    """
    tail_names = _tail_names(payload, DEFAULT_LIMITS, len(_RESULT_HEAD), _RESULT_TAILS)
    if tail_names is None:
        return None
    assert isinstance(payload, bytes | bytearray)  # as _tail_names found
    view = memoryview(payload)
    known = _RESULTS.read(payload, view)
    if known is not None:
        head, _, tensors, tail_at = known
    else:
        general = _result_head_and_tensors(payload, view)
        if general is None:
            return None
        head, tensors, tail_at = general
    limits = DEFAULT_LIMITS
    tail = loads_cbor2(
        bytes((_MAP + len(tail_names),)) + view[tail_at:], max_depth=limits.max_depth
    )
    if not isinstance(tail, dict) or tuple(tail) != tail_names:
        return None
    stage = tail.get("stage")
    return Result(
        request_id=head["request_id"],
        attempt=head["attempt"],
        deployment=head["deployment"],
        tensors=tensors,
        trace=_trace_entries(tail["trace"], limits),
        agent_id=_RESULT_FIELDS["agent_id"].from_wire(tail["agent_id"], limits, "agent_id"),
        stage=None if stage is None else _RESULT_FIELDS["stage"].from_wire(stage, limits, "stage"),
    )


def _result_head_and_tensors(
    payload: bytes | bytearray, view: memoryview
) -> tuple[dict[str, Any], tuple[Tensor, ...], int] | None:
    """A result's head fields, tensors, and where the fields after them start, read the
    general way (:func:`_general_read`); its layout is remembered."""
    read = _general_read(
        payload, view, DEFAULT_LIMITS, Result, names=_RESULT_HEAD, fields=_RESULT_FIELDS
    )
    if read is None:
        return None
    head, tensors, at, tail_at = read
    _RESULTS.remember(payload, view, at, head=head, route=(), tensors=tensors, tail_at=tail_at)
    return head, tensors, tail_at


def request_parts(activation: Activation) -> list[bytes | bytearray | memoryview]:
    """A request's first activation on a chain (no trace yet, no stage graph's fields),
    as :func:`splitmq.wire.encode_parts` would encode it, without the schema's walk
    over every field; any other activation is encoded the general way."""
    if (
        activation.trace
        or activation.source is not None
        or activation.branch is not None
        or activation.retry is not None
    ):
        return encode_parts(activation)
    head = {
        "kind": Activation.KIND,
        "v": Activation.VERSION,
        "request_id": activation.request_id,
        "attempt": activation.attempt,
        "deployment": activation.deployment,
        "stage": activation.stage,
        "route": [list(agents) for agents in activation.route],
        "callback": activation.callback,
        "deadline_ms": activation.deadline_ms,
    }
    tail = {"trace": [], "client_id": activation.client_id}
    return message_parts(head, activation.tensors, tail)


def forward_parts(
    hop: Hop, tensors: tuple[Tensor, ...], entry: dict[str, Any]
) -> list[bytes | bytearray | memoryview]:
    """The next stage's activation: ``hop``'s, at the next stage, carrying ``tensors``,
    with ``entry`` (:func:`trace_entry`) added to its trace; as :func:`encode_parts`
    would encode it."""
    tail: dict[str, Any] = {"trace": [*hop.trace, entry], "client_id": hop.client_id}
    if hop.source is not None:
        tail["source"] = hop.source
    head = _forward_head(hop)
    if head is None:
        fields = {**hop.head, "v": Activation.VERSION, "stage": hop.stage + 1}
        return message_parts(fields, tensors, tail)
    return encoded_message_parts(len(_HEAD), head, tensors, tail)


def result_parts(
    hop: Hop, tensors: tuple[Tensor, ...], entry: dict[str, Any], agent_id: str
) -> list[bytes | bytearray | memoryview]:
    """The :class:`Result` of ``hop``'s request (its last stage's outputs), as
    :func:`encode_parts` would encode it."""
    tail = {"trace": [*hop.trace, entry], "agent_id": agent_id}
    attempt, deployment = hop.attempt, hop.deployment
    if _plain_request(hop) and _plain(attempt) and deployment.isascii():
        head = _RESULT_START + hop.request_id + _ATTEMPT_KEY + _item_head(0, attempt)
        head += _DEPLOYMENT_KEY + text_item(deployment)
        return encoded_message_parts(len(_RESULT_HEAD), head, tensors, tail)
    fields = {
        "kind": Result.KIND,
        "v": Result.VERSION,
        "request_id": hop.request_id,
        "attempt": attempt,
        "deployment": deployment,
    }
    return message_parts(fields, tensors, tail)


# -- the heads of the messages a stage sends, from what a stream repeats ----------------

_FORWARD_START = _prefix(Activation)
_RESULT_START = _prefix(Result)
"""A message's bytes after its map's head, up to its request id's bytes."""
_ATTEMPT_KEY, _DEPLOYMENT_KEY = text_item("attempt"), text_item("deployment")
_MIDDLES_REMEMBERED = 64
_middles: dict[tuple[Any, ...], bytes] = {}
"""By attempt, deployment, stage, route and callback (the fields between a forwarded
activation's request id and its deadline, which a stream repeats): their bytes."""


def _plain(value: object) -> bool:
    """An int CBOR writes as an unsigned integer (not a bool, not a bignum)."""
    return type(value) is int and 0 <= value < 1 << 64


def _plain_request(hop: Hop) -> bool:
    return type(hop.request_id) is bytes and len(hop.request_id) == REQUEST_ID_BYTES


def _forward_head(hop: Hop) -> bytes | None:
    """The fields before the tensors of ``hop``'s activation at the next stage, as
    ``cbor2.dumps`` writes them in its map (without the map's head): the fields a stream
    repeats are encoded once and remembered, and cbor2 does not ask each tuple of the
    route whether it is a mapping per hop. None for what this path does not write
    (the caller encodes the fields the general way)."""
    deadline, attempt, stage = hop.deadline_ms, hop.attempt, hop.stage + 1
    if not (_plain_request(hop) and _plain(deadline) and _plain(attempt) and _plain(stage)):
        return None
    key = (attempt, hop.deployment, stage, hop.route, hop.callback)
    try:
        middle = _middles.get(key)
    except TypeError:  # a route of lists: not one this path remembers
        return None
    if middle is None:
        fields = {
            "attempt": attempt,
            "deployment": hop.deployment,
            "stage": stage,
            "route": hop.route,
            "callback": hop.callback,
        }
        middle = bytes(memoryview(cbor2.dumps(fields))[1:])
        if len(_middles) >= _MIDDLES_REMEMBERED:
            _middles.clear()
        _middles[key] = middle
    return _FORWARD_START + hop.request_id + middle + _DEADLINE_KEY + _item_head(0, deadline)
