"""Golden vectors for the browser agent: every message kind and every tensor dtype,
written by the Python codec into ``web/test/golden/`` for node's tests to decode and
re-encode byte for byte.

Run ``python -m tests.web.golden`` after a change to the wire format; ``test_golden.py``
fails while the committed files differ from what the codec writes now.

Each vector is ``NAME.cbor``; ``manifest.json`` gives, per name, the message as plain
JSON (see :func:`plain`), so the JavaScript side checks what it decoded, not only that
it writes the same bytes back.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from splitmq.wire import (
    Activation,
    Battery,
    ErrorCode,
    ErrorMessage,
    Message,
    Result,
    Telemetry,
    Tensor,
    TraceEntry,
    encode,
)
from tests.unit.samples import REQUEST_ID, sample_messages

GOLDEN_DIR = Path(__file__).resolve().parents[2] / "web" / "test" / "golden"
MAX_SAFE_INTEGER = 2**53 - 1

DTYPES = (
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "int8",
    "int16",
    "int32",
    "int64",
    "float16",
    "float32",
    "float64",
    "bool",
)


def _tensor_of(dtype: str, rng: np.random.Generator) -> Tensor:
    shape = (1, 3, 5)  # odd sizes: the bytes land at odd offsets of the payload
    if dtype == "bool":
        return Tensor("mask", rng.integers(0, 2, shape).astype(np.bool_))
    kind = np.dtype(dtype)
    if kind.kind == "f":
        values = rng.standard_normal(shape).astype(kind)
        values.flat[0] = -0.0
        return Tensor(f"t_{dtype}", values)
    info = np.iinfo(kind)
    values = rng.integers(info.min, info.max, shape, dtype=kind, endpoint=True)
    values.flat[0], values.flat[1] = info.min, info.max
    if dtype in ("int8", "uint8"):
        return Tensor(f"t_{dtype}", values, scale=0.0235, zero_point=int(info.min) + 1)
    return Tensor(f"t_{dtype}", values)


def golden_messages() -> dict[str, Message]:
    """The vectors by file name: the unit tests' samples, every dtype, and edge cases."""
    vectors: dict[str, Message] = {}
    kinds: dict[str, int] = {}
    for message in sample_messages():
        count = kinds.get(message.KIND, 0)
        kinds[message.KIND] = count + 1
        vectors[f"{message.KIND.replace('.', '_')}_{count}"] = message
    rng = np.random.default_rng(18)
    for dtype in DTYPES:
        vectors[f"tensor_{dtype}"] = Result(
            REQUEST_ID, 2, "d-dtypes", (_tensor_of(dtype, rng),), (), "py-agent"
        )
    vectors["activation_big_numbers"] = Activation(
        request_id=bytes([255] * 16),
        attempt=300,
        deployment="d1",
        stage=70000,
        route=(("a",), ("b",)),
        callback="splitmq/v1/clients/c/result",
        deadline_ms=2**32 + 5,  # integers of 2^32 and above stay integers
        tensors=(Tensor("empty", np.zeros((0, 4), np.float32)),),
        trace=(TraceEntry(0, "a", 0.0, -1.5, 1e300, 2**53 + 1, 2**31, 2**40, 1e-300),),
        client_id="ünïcödé ✓",
    )
    vectors["telemetry_floats"] = Telemetry(
        agent_id="browser-1",
        ts_ms=1_700_000_000_000,
        period_s=2.0,
        cpu_pct=float("nan"),
        mem_free_bytes=0,
        battery=Battery(pct=100.0, plugged=True, simulated=False),
        temperature_c=float("inf"),
        broker_rtt_ms=float("-inf"),
        compute_ms={"d/0": 0.1, "d/1": 3.0},
        queue_depth={f"d/{i}": i for i in range(30)},  # a map past 23 entries
    )
    vectors["telemetry_joins"] = Telemetry(
        agent_id="join-1",
        ts_ms=1_700_000_000_000,
        period_s=1.0,
        cpu_pct=12.5,
        mem_free_bytes=1 << 30,
        battery=Battery(pct=50.0, plugged=False, simulated=True),
        joins={"duplicates": 1, "late": 2, "missing": 3, "refused_full": 0},
    )
    vectors["error_long_message"] = ErrorMessage(
        REQUEST_ID, 0, 0, "a", ErrorCode.INTERNAL, "x" * 300, "d"
    )
    for code in ErrorCode:
        vectors[f"error_{code.value}"] = ErrorMessage(
            REQUEST_ID, 1, 2, "browser-1", code, f"a {code.value} error", "d1"
        )
    return vectors


def plain(value: Any) -> Any:
    """``value`` as JSON both sides agree on: bytes as {"$bytes": hex}, tensors as
    {"name", "dtype", "shape", "hex", "scale", "zero_point"}, non-finite floats and
    integers past 2^53 as strings."""
    if isinstance(value, Tensor):
        array = np.ascontiguousarray(value.array)
        wire = array.astype(array.dtype.newbyteorder("<")) if array.dtype.kind != "b" else array
        return {
            "name": value.name,
            "dtype": array.dtype.name,
            "shape": list(array.shape),
            "hex": wire.tobytes().hex(),
            "scale": value.scale,
            "zero_point": value.zero_point,
        }
    if isinstance(value, Message):
        return {"kind": value.KIND, **_fields(value)}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _fields(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, bytes):
        return {"$bytes": value.hex()}
    if isinstance(value, tuple | list):
        return [plain(item) for item in value]
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value) if abs(value) > MAX_SAFE_INTEGER else value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    raise TypeError(f"no plain form for {type(value).__name__}")


def _fields(value: Any) -> dict[str, Any]:
    return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}


def write(directory: Path = GOLDEN_DIR) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    manifest = {}
    for name, message in golden_messages().items():
        (directory / f"{name}.cbor").write_bytes(encode(message))
        manifest[name] = plain(message)
    text = json.dumps(manifest, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
    (directory / "manifest.json").write_text(text, encoding="utf-8")


if __name__ == "__main__":
    write(Path(sys.argv[1]) if len(sys.argv) > 1 else GOLDEN_DIR)
