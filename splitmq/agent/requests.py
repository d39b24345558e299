"""What a request meets at a stage, apart from any agent: the failure that becomes its
error message, the memory of requests already seen (QoS 1 may deliver twice), the
checks of its tensors against the shard's, and what can be salvaged of a malformed one
to answer it."""

from __future__ import annotations

import functools
import threading
import time
from collections import OrderedDict
from typing import Any, NamedTuple

import numpy as np

from splitmq.errors import SplitMQError
from splitmq.transport import InboundMessage
from splitmq.wire import (
    REQUEST_ID_BYTES,
    Activation,
    ErrorCode,
    ErrorMessage,
    Tensor,
    TensorSpec,
)
from splitmq.wire.codec import decode_fields
from splitmq.wire.hop import Hop
from splitmq.wire.topics import RESULTS


def now_ms() -> float:
    """Wall-clock milliseconds: what deadlines and traces are written in."""
    return time.time() * 1000.0


def stage_key(deployment: str, stage: int) -> str:
    """How a hosted stage is named in telemetry (``queue_depth``, ``compute_ms``)."""
    return f"{deployment}/{stage}"


class Job(NamedTuple):
    """A request waiting in a stage's queue, and when it arrived (a tuple: one is made
    per request on the network thread)."""

    message: InboundMessage
    received_ms: float


class Arrival(NamedTuple):
    """How a request reached a stage: when, its size (0 from a stage in this process),
    and the MQTT QoS it came at, which its next hop and its result keep (the client
    chose it: ``ClientConfig.hop_qos``)."""

    received_ms: float
    bytes_in: int
    qos: int


class RequestFailed(SplitMQError):
    """A request cannot go on at this stage (becomes an ErrorMessage on its callback)."""

    def __init__(self, code: ErrorCode, message: str):
        self.code = code
        super().__init__(message)


class SeenRequests:
    """A bounded memory of (request id, stage, attempt): QoS 1 may deliver twice."""

    def __init__(self, size: int):
        self._size = size
        self._seen: OrderedDict[tuple[bytes, int, int], None] = OrderedDict()
        self._lock = threading.Lock()

    def first_time(self, key: tuple[bytes, int, int]) -> bool:
        with self._lock:
            if key in self._seen:
                return False
            self._seen[key] = None
            if len(self._seen) > self._size:
                self._seen.popitem(last=False)
            return True


def boundary(specs: tuple[TensorSpec, ...]) -> list[tuple[str, tuple[int, ...], str]]:
    return [(s.name, tuple(s.shape), s.dtype) for s in specs]


def is_callback(topic: str, namespace: str) -> bool:
    """Results go only to a ``clients/{client}/result`` topic: never anywhere a message says."""
    return (
        isinstance(topic, str)
        and RESULTS.parse(topic, namespace) is not None
        and all(c not in topic for c in "+#\x00")
    )


@functools.lru_cache(maxsize=64)
def dtype_name(dtype: np.dtype[Any]) -> str:
    """``dtype.name``, remembered: numpy works it out in Python on each call (several
    calls, string handling), which run cold costs a request tens of microseconds."""
    return dtype.name


def checked_inputs(
    specs: tuple[TensorSpec, ...], tensors: tuple[Tensor, ...]
) -> dict[str, np.ndarray[Any, Any]]:
    """The arrays by name, once names, shapes, dtypes and quantization match the shard."""
    if len(specs) == 1 and len(tensors) == 1:  # the common case in a few steps
        spec, tensor = specs[0], tensors[0]
        array = tensor.array
        if (
            tensor.name == spec.name
            and array.shape == tuple(spec.shape)
            and dtype_name(array.dtype) == spec.dtype
            and (spec.scale is None or tensor.scale is None)
        ):
            return {spec.name: array}
    by_name = {t.name: t for t in tensors}
    wanted = [s.name for s in specs]
    if sorted(by_name) != sorted(wanted) or len(by_name) != len(tensors):
        raise RequestFailed(
            ErrorCode.SHAPE_MISMATCH,
            f"the shard reads tensors {wanted}, the message carries {[t.name for t in tensors]}",
        )
    arrays = {}
    for spec in specs:
        tensor = by_name[spec.name]
        shape = tuple(tensor.array.shape)
        if len(shape) != len(spec.shape) or any(
            want not in (-1, got) for want, got in zip(spec.shape, shape, strict=True)
        ):
            raise RequestFailed(
                ErrorCode.SHAPE_MISMATCH,
                f"tensor {spec.name!r} has shape {list(shape)}, the shard needs {list(spec.shape)}",
            )
        if dtype_name(tensor.array.dtype) != spec.dtype:
            raise RequestFailed(
                ErrorCode.SHAPE_MISMATCH,
                f"tensor {spec.name!r} is {tensor.array.dtype.name}, the shard needs {spec.dtype}",
            )
        if (
            spec.scale is not None
            and tensor.scale is not None
            and (
                not np.isclose(tensor.scale, spec.scale, rtol=1e-6)
                or tensor.zero_point != spec.zero_point
            )
        ):
            raise RequestFailed(
                ErrorCode.SHAPE_MISMATCH,
                f"tensor {spec.name!r} is quantized with scale {tensor.scale} and zero point "
                f"{tensor.zero_point}, the shard needs {spec.scale} and {spec.zero_point}",
            )
        arrays[spec.name] = tensor.array
    return arrays


def error_for(
    activation: Activation | Hop, agent_id: str, code: ErrorCode, reason: str
) -> ErrorMessage:
    return ErrorMessage(
        request_id=activation.request_id,
        attempt=activation.attempt,
        stage=activation.stage,
        agent_id=agent_id,
        code=code,
        message=reason,
        deployment=activation.deployment,
    )


SALVAGED = ("request_id", "callback", "attempt", "deployment", "stage")
"""The fields of a malformed activation read to answer it."""


def salvage(payload: bytes | bytearray) -> Activation | None:
    """Enough of a malformed activation to answer it: request id, attempt, stage, callback."""
    found = decode_fields(payload, Activation, SALVAGED)
    request_id, callback = found.get("request_id"), found.get("callback")
    if not (isinstance(request_id, bytes) and len(request_id) == REQUEST_ID_BYTES):
        return None
    if not isinstance(callback, str):
        return None
    return Activation(
        request_id=request_id,
        attempt=found.get("attempt", 0),
        deployment=found.get("deployment", ""),
        stage=found.get("stage", 0),
        route=(),
        callback=callback,
        deadline_ms=0,
        tensors=(),
    )
