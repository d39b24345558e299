"""Reading a ``.tflite`` flatbuffer and analysing its graph: operators, frontiers, FLOPs.

Needs only the flatbuffer schema that ai-edge-litert ships, never TensorFlow, so the
coordinator can analyse and cut models on demand.

Vocabulary (see ``docs/converter.md``):

* An operator is *constant* when every input it reads is a weight (a tensor backed by
  a buffer) or the output of another constant operator -- the ``DEQUANTIZE`` ops of a
  float16 variant that turn float16 weights into float32 ones, for example. Constant
  operators are not a place to cut: the cutter copies each into the shards that use
  its output, so weights never cross a frontier. Every other operator is *live*.
* Cut point ``k`` (``0 < k < len(operators)``) is the boundary between operator
  ``k - 1`` and operator ``k``; a stage is the half-open operator range
  ``[start, end)``.
* The *frontier* of cut point ``k`` is the set of non-constant tensors alive across
  it: model inputs and tensors produced before ``k`` that a live operator at or after
  ``k`` reads, or that are model outputs.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from splitmq.converter.errors import ModelReadError, UncuttableGraphError
from splitmq.wire.messages import TensorSpec

__all__ = [
    "Graph",
    "OperatorInfo",
    "TensorSpec",
    "opcode_name",
    "read_model",
]

# Operators that reference other subgraphs or hold state across invocations: a
# contiguous range of them is not a self-contained computation.
UNCUTTABLE_OPS = frozenset(
    {
        "WHILE",
        "IF",
        "CALL",
        "CALL_ONCE",
        "VAR_HANDLE",
        "READ_VARIABLE",
        "ASSIGN_VARIABLE",
        "STABLEHLO_COMPOSITE",
        "STABLEHLO_WHILE",
        "STABLEHLO_CASE",
        "STABLEHLO_REDUCE",
        "STABLEHLO_REDUCE_WINDOW",
        "STABLEHLO_SCATTER",
        "STABLEHLO_SORT",
    }
)

# Operators that only move or reinterpret data: zero FLOPs.
_DATA_MOVEMENT_OPS = frozenset(
    {
        "RESHAPE",
        "SQUEEZE",
        "EXPAND_DIMS",
        "TRANSPOSE",
        "CONCATENATION",
        "PACK",
        "UNPACK",
        "SPLIT",
        "SPLIT_V",
        "SLICE",
        "STRIDED_SLICE",
        "GATHER",
        "GATHER_ND",
        "PAD",
        "PADV2",
        "MIRROR_PAD",
        "SHAPE",
        "TILE",
        "DEPTH_TO_SPACE",
        "SPACE_TO_DEPTH",
        "BROADCAST_TO",
    }
)
_REDUCE_OPS = frozenset(
    {"MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN", "REDUCE_PROD", "REDUCE_ANY", "REDUCE_ALL"}
)
_POOL_OPS = frozenset({"AVERAGE_POOL_2D", "MAX_POOL_2D", "L2_POOL_2D"})


def _schema() -> Any:
    from ai_edge_litert import schema_py_generated

    return schema_py_generated


def _enum_names(enum_class: type) -> dict[int, str]:
    return {
        value: key
        for key, value in vars(enum_class).items()
        if not key.startswith("_") and isinstance(value, int)
    }


_OPCODE_NAMES: dict[int, str] = {}
_TYPE_NAMES: dict[int, str] = {}

# numpy dtype names for TFLite tensor types; types without one get "" (bytes unknown).
_NUMPY_DTYPES = {
    "FLOAT32": "float32",
    "FLOAT16": "float16",
    "FLOAT64": "float64",
    "INT8": "int8",
    "UINT8": "uint8",
    "INT16": "int16",
    "UINT16": "uint16",
    "INT32": "int32",
    "UINT32": "uint32",
    "INT64": "int64",
    "UINT64": "uint64",
    "BOOL": "bool",
    "COMPLEX64": "complex64",
    "COMPLEX128": "complex128",
}


def opcode_name(builtin_code: int) -> str:
    """The schema name of a builtin operator code (``CONV_2D``), or ``BUILTIN_<n>``."""
    if not _OPCODE_NAMES:
        _OPCODE_NAMES.update(_enum_names(_schema().BuiltinOperator))
    return _OPCODE_NAMES.get(builtin_code, f"BUILTIN_{builtin_code}")


def tensor_type_name(tensor_type: int) -> str:
    """The schema name of a tensor type (``FLOAT32``, ``INT8``...)."""
    if not _TYPE_NAMES:
        _TYPE_NAMES.update(_enum_names(_schema().TensorType))
    return _TYPE_NAMES.get(tensor_type, f"TYPE_{tensor_type}")


def _decode_name(name: bytes | str | None) -> str:
    if name is None:
        return ""
    return name.decode("utf-8", errors="replace") if isinstance(name, bytes) else name


@dataclass(frozen=True)
class OperatorInfo:
    """One operator of the graph, in execution order.

    Attributes:
        index: position in execution order.
        type: builtin operator name (``CONV_2D``) or ``CUSTOM:<code>``.
        constant: reads only weights (see the module docstring); never a cut point.
        flops: estimated floating-point (or integer) operations, multiply-add = 2.
        param_bytes: bytes of the weights it reads, including those reached through
            constant operators.
        inputs: tensor indices read (``-1`` = optional input left out).
        outputs: tensor indices written.
    """

    index: int
    type: str
    constant: bool
    flops: int
    param_bytes: int
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]


def read_model(source: bytes | bytearray | str | Path) -> Any:
    """Parse ``.tflite`` bytes (or a file) into the schema's mutable object API (``ModelT``).

    Raises:
        ModelReadError: unreadable file, or bytes that are not a TFLite flatbuffer.
    """
    if isinstance(source, str | Path):
        path = Path(source)
        try:
            data: bytes | bytearray = path.read_bytes()
        except OSError as error:
            raise ModelReadError(
                f"cannot read {path}: {error.strerror or error}; check the path", path=path
            ) from error
    else:
        data = source
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ModelReadError(
            "not a TensorFlow Lite flatbuffer (no 'TFL3' identifier); pass a .tflite file "
            "written by the TFLite converter"
        )
    from ai_edge_litert.tools import flatbuffer_utils

    try:
        model = flatbuffer_utils.read_model_from_bytearray(bytearray(data))
    except (IndexError, ValueError, TypeError, AttributeError) as error:
        raise ModelReadError(f"corrupt TFLite flatbuffer: {error}") from error
    for buffer in model.buffers or []:
        if buffer.data is not None and not isinstance(buffer.data, np.ndarray):
            buffer.data = np.frombuffer(bytes(buffer.data), dtype=np.uint8)
    if not model.subgraphs:
        raise ModelReadError("the TFLite model has no subgraph")
    return model


class Graph:
    """The analysed main subgraph of a TFLite model.

    Build it with :meth:`from_model` (a parsed ``ModelT``) or :meth:`load`.
    """

    def __init__(self, model: Any) -> None:
        self.model = model
        self.subgraph = model.subgraphs[0]
        self.tensors: list[Any] = list(self.subgraph.tensors or [])
        self.model_inputs: tuple[int, ...] = tuple(int(i) for i in self.subgraph.inputs or [])
        self.model_outputs: tuple[int, ...] = tuple(int(i) for i in self.subgraph.outputs or [])
        raw_ops = list(self.subgraph.operators or [])
        self._raw_ops = raw_ops
        from ai_edge_litert.tools import flatbuffer_utils

        codes = model.operatorCodes or []
        self.op_types: list[str] = []
        for op in raw_ops:
            code = codes[op.opcodeIndex]
            builtin = flatbuffer_utils.get_builtin_code_from_operator_code(code)
            name = opcode_name(builtin)
            if name == "CUSTOM":
                name = f"CUSTOM:{_decode_name(code.customCode)}"
            self.op_types.append(name)

        buffers = model.buffers or []
        self.constant_tensors: set[int] = set()
        for index, tensor in enumerate(self.tensors):
            data = buffers[tensor.buffer].data if 0 <= tensor.buffer < len(buffers) else None
            if data is not None and len(data) > 0:
                self.constant_tensors.add(index)

        # Constant operators and the tensors they derive; per op, the weights it reaches.
        self.derived_constants: set[int] = set()
        self.constant_ops: set[int] = set()
        self.producer: dict[int, int] = {}
        self.weights_of: list[frozenset[int]] = []
        for index, op in enumerate(raw_ops):
            inputs = [int(i) for i in op.inputs if i >= 0]
            weights: set[int] = set()
            for tensor_index in inputs:
                if tensor_index in self.constant_tensors:
                    weights.add(tensor_index)
                elif tensor_index in self.derived_constants:
                    weights |= self.weights_of[self.producer[tensor_index]]
            self.weights_of.append(frozenset(weights))
            is_constant = (
                bool(inputs)
                and self.op_types[index] not in UNCUTTABLE_OPS
                and all(t in self.constant_tensors or t in self.derived_constants for t in inputs)
            )
            if is_constant:
                self.constant_ops.add(index)
            for tensor_index in op.outputs:
                self.producer[int(tensor_index)] = index
                if is_constant:
                    self.derived_constants.add(int(tensor_index))

        # Last live reader of every tensor; model outputs live to the end.
        n = len(raw_ops)
        self.last_use: dict[int, int] = {}
        for index, op in enumerate(raw_ops):
            if index in self.constant_ops:
                continue
            for tensor_index in op.inputs:
                if tensor_index >= 0:
                    self.last_use[int(tensor_index)] = index
        for tensor_index in self.model_outputs:
            self.last_use[tensor_index] = n

    @classmethod
    def load(cls, source: bytes | bytearray | str | Path) -> Graph:
        """Read and analyse a ``.tflite`` file or its bytes."""
        return cls(read_model(source))

    # -- basic facts ---------------------------------------------------------------

    @property
    def num_operators(self) -> int:
        return len(self._raw_ops)

    def is_live(self, op_index: int) -> bool:
        return op_index not in self.constant_ops

    def uncuttable_operator(self) -> tuple[int, str] | None:
        """The first operator that prevents cutting, as ``(index, type)``, or ``None``."""
        for index, name in enumerate(self.op_types):
            if name in UNCUTTABLE_OPS:
                return index, name
        for index in range(self.num_operators):
            for tensor_index in self._raw_ops[index].inputs:
                if tensor_index >= 0 and self.tensors[tensor_index].isVariable:
                    return index, self.op_types[index]
        return None

    def check_cuttable(self) -> None:
        """Raise :class:`UncuttableGraphError` unless this graph can be cut."""
        blocker = self.uncuttable_operator()
        if blocker is not None:
            index, name = blocker
            raise UncuttableGraphError(
                f"cannot cut this model: operator {index} is {name}, which "
                + (
                    "reads a variable tensor (state kept across invocations)"
                    if name not in UNCUTTABLE_OPS
                    else "refers to other subgraphs or to resource variables"
                )
                + "; deploy it whole (a single stage) or convert it without control flow",
                operator=name,
                op_index=index,
            )
        if len(self.model.subgraphs) > 1:
            raise UncuttableGraphError(
                f"cannot cut this model: it has {len(self.model.subgraphs)} subgraphs and the "
                "cutter handles single-subgraph models only; deploy it whole",
                operator=None,
                op_index=None,
            )

    def tensor_name(self, tensor_index: int) -> str:
        return _decode_name(self.tensors[tensor_index].name)

    def tensor_spec(self, tensor_index: int) -> TensorSpec:
        tensor = self.tensors[tensor_index]
        shape = tuple(int(d) for d in (tensor.shape if tensor.shape is not None else []))
        signature = tensor.shapeSignature
        if signature is not None and len(signature) == len(shape):
            shape = tuple(
                int(s) if int(s) < 0 else d for s, d in zip(signature, shape, strict=True)
            )
        type_name = tensor_type_name(tensor.type)
        dtype = _NUMPY_DTYPES.get(type_name, type_name.lower())
        scale: float | None = None
        zero_point: int | None = None
        quantization = tensor.quantization
        if quantization is not None and quantization.scale is not None:
            scales = np.asarray(quantization.scale).ravel()
            zero_points = np.asarray(
                quantization.zeroPoint if quantization.zeroPoint is not None else [0]
            ).ravel()
            if scales.size == 1:
                scale = float(scales[0])
                zero_point = int(zero_points[0]) if zero_points.size else 0
        return TensorSpec(
            name=self.tensor_name(tensor_index),
            shape=shape,
            dtype=dtype,
            scale=scale,
            zero_point=zero_point,
            size_bytes=self.tensor_bytes(tensor_index),
        )

    def tensor_bytes(self, tensor_index: int) -> int:
        tensor = self.tensors[tensor_index]
        type_name = tensor_type_name(tensor.type)
        dtype = _NUMPY_DTYPES.get(type_name)
        shape = [int(d) for d in (tensor.shape if tensor.shape is not None else [])]
        if dtype is None:
            return 0
        return int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize

    def _elements(self, tensor_index: int) -> int:
        shape = self.tensors[tensor_index].shape
        return int(np.prod([int(d) for d in shape], dtype=np.int64)) if shape is not None else 0

    def _shape(self, tensor_index: int) -> list[int]:
        shape = self.tensors[tensor_index].shape
        return [int(d) for d in shape] if shape is not None else []

    # -- operators -----------------------------------------------------------------

    def _flops(self, index: int) -> int:
        op = self._raw_ops[index]
        name = self.op_types[index]
        inputs = [int(i) for i in op.inputs]
        outputs = [int(i) for i in op.outputs if i >= 0]
        out_elements = sum(self._elements(t) for t in outputs)
        if index in self.constant_ops or name in _DATA_MOVEMENT_OPS:
            return 0
        if name in {"CONV_2D", "CONV_3D"} and len(inputs) > 1:
            filter_shape = self._shape(inputs[1])
            return 2 * out_elements * int(np.prod(filter_shape[1:], dtype=np.int64))
        if name == "DEPTHWISE_CONV_2D" and len(inputs) > 1:
            filter_shape = self._shape(inputs[1])
            return 2 * out_elements * int(np.prod(filter_shape[1:3], dtype=np.int64))
        if name == "TRANSPOSE_CONV" and len(inputs) > 2:
            filter_shape = self._shape(inputs[1])  # [out_channels, kh, kw, in_channels]
            return 2 * self._elements(inputs[2]) * int(np.prod(filter_shape[:3], dtype=np.int64))
        if name == "FULLY_CONNECTED" and len(inputs) > 1:
            filter_shape = self._shape(inputs[1])
            return 2 * out_elements * (filter_shape[-1] if filter_shape else 1)
        if name == "BATCH_MATMUL" and inputs:
            shape = self._shape(inputs[0])
            return 2 * out_elements * (shape[-1] if shape else 1)
        if name in _POOL_OPS:
            options = op.builtinOptions
            window = 1
            if options is not None and hasattr(options, "filterHeight"):
                window = int(options.filterHeight) * int(options.filterWidth)
            return out_elements * window
        if name in _REDUCE_OPS and inputs:
            return self._elements(inputs[0])
        return out_elements

    def operators(self) -> list[OperatorInfo]:
        """Every operator in execution order, with FLOPs and parameter bytes."""
        result = []
        for index, op in enumerate(self._raw_ops):
            param_bytes = 0
            if index not in self.constant_ops:
                param_bytes = sum(self.tensor_bytes(t) for t in self.weights_of[index])
            result.append(
                OperatorInfo(
                    index=index,
                    type=self.op_types[index],
                    constant=index in self.constant_ops,
                    flops=self._flops(index),
                    param_bytes=param_bytes,
                    inputs=tuple(int(i) for i in op.inputs),
                    outputs=tuple(int(i) for i in op.outputs),
                )
            )
        return result

    # -- cut points and frontiers ----------------------------------------------------

    def candidate_cut_points(self) -> list[int]:
        """Boundaries right after a live operator with a live operator still to come."""
        live = [i for i in range(self.num_operators) if self.is_live(i)]
        if len(live) < 2:
            return []
        last_live = live[-1]
        return [i + 1 for i in live if i < last_live]

    def frontier(self, cut_point: int) -> list[int]:
        """Tensor indices alive across cut point ``cut_point`` (see the module docstring).

        Ordered: model inputs in model order, then by producing operator.
        """
        n = self.num_operators
        if not 0 < cut_point < n:
            raise_cut_point_range(cut_point, n)
        crossing = [t for t in self.model_inputs if self.last_use.get(t, -1) >= cut_point]
        for index in range(cut_point):
            if index in self.constant_ops:
                continue
            for raw in self._raw_ops[index].outputs:
                t = int(raw)
                if t >= 0 and self.last_use.get(t, -1) >= cut_point and t not in crossing:
                    crossing.append(t)
        return crossing

    def all_frontiers(self) -> dict[int, list[int]]:
        """Frontiers of every candidate cut point, computed in one sweep."""
        result: dict[int, list[int]] = {}
        alive: list[int] = [t for t in self.model_inputs]
        candidates = set(self.candidate_cut_points())
        for index in range(self.num_operators):
            if index not in self.constant_ops:
                for t in self._raw_ops[index].outputs:
                    if t >= 0 and int(t) not in alive:
                        alive.append(int(t))
            cut_point = index + 1
            alive = [t for t in alive if self.last_use.get(t, -1) >= cut_point]
            if cut_point in candidates:
                result[cut_point] = list(alive)
        return result

    def layer_after(self, cut_point: int, layer_names: Sequence[str]) -> str | None:
        """The Keras layer the cut point falls after, matched from tensor names.

        TFLite names a fused op's output after every TF op fused into it
        (``model_1/block_1/conv/Conv2D;model_1/block_1/bn/FusedBatchNormV3``); the
        latest Keras layer named in operator ``cut_point - 1``'s outputs wins.
        """
        if not layer_names or cut_point <= 0:
            return None
        order = {name: i for i, name in enumerate(layer_names)}
        best: tuple[int, str] | None = None
        for t in self._raw_ops[cut_point - 1].outputs:
            for part in re.split(r"[;/]", self.tensor_name(int(t))):
                name = _match_layer(part, order)
                if name is not None and (best is None or order[name] > best[0]):
                    best = (order[name], name)
        return None if best is None else best[1]


def _match_layer(part: str, order: dict[str, int]) -> str | None:
    """A name-scope component (``re_lu_3_1``) to a layer name (``re_lu_3``), if any.

    Keras 3 exports every layer call under a scope ``<layer>_<n>``, so one stripped
    numeric suffix is tried first, then the component itself, then shorter prefixes.
    """
    once = re.sub(r"_\d+$", "", part)
    if once != part and once in order:
        return once
    candidate = part
    while candidate:
        if candidate in order:
            return candidate
        stripped = re.sub(r"_\d+$", "", candidate)
        if stripped == candidate:
            return None
        candidate = stripped
    return None


def raise_cut_point_range(cut_point: int, num_operators: int) -> None:
    from splitmq.converter.errors import CutPointError

    raise CutPointError(
        f"cut point {cut_point} is out of range: this model has {num_operators} operators, "
        f"so a cut point must be between 1 and {num_operators - 1} "
        "(cut point k falls between operator k-1 and operator k); "
        "`splitmq inspect` lists the candidates",
        cut_point=cut_point,
        num_operators=num_operators,
    )
