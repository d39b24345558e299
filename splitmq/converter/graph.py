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
* Operators, cut points and frontiers are those of the main subgraph (subgraph 0).
  A control-flow operator (``WHILE``, ``IF``) is one step of it; the subgraphs it runs
  (cond and body, then and else, and those they run in turn) go with it into a shard,
  and its FLOPs and parameter bytes include theirs.
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

# Control flow: operators that run other subgraphs, with the option fields naming
# them. Cuts fall between top-level operators; a shard holding one of these carries
# the subgraphs it runs (and those they run in turn), so a loop is never split.
CONTROL_FLOW_OPS: dict[str, tuple[str, ...]] = {
    "WHILE": ("condSubgraphIndex", "bodySubgraphIndex"),
    "IF": ("thenSubgraphIndex", "elseSubgraphIndex"),
}

# Operators that hold state across invocations (resource variables) or whose bodies
# the cutter does not follow: a model holding one, at the top level or inside a
# subgraph it runs, is not cut.
UNCUTTABLE_OPS = frozenset(
    {
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
        subgraphs: subgraphs it runs, directly or in turn (``WHILE``, ``IF``), sorted.
    """

    index: int
    type: str
    constant: bool
    flops: int
    param_bytes: int
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    subgraphs: tuple[int, ...] = ()


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

        def type_of(op: Any) -> str:
            code = codes[op.opcodeIndex]
            name = opcode_name(flatbuffer_utils.get_builtin_code_from_operator_code(code))
            return f"CUSTOM:{_decode_name(code.customCode)}" if name == "CUSTOM" else name

        # Operator types of every subgraph; subgraph 0 is the main one.
        self.subgraph_op_types: list[list[str]] = [
            [type_of(op) for op in subgraph.operators or []] for subgraph in model.subgraphs
        ]
        self.op_types: list[str] = self.subgraph_op_types[0]

        # Constant operators and the tensors they derive; per op, the weights it reaches.
        facts = _constant_facts(self.tensors, raw_ops, self.op_types, model.buffers or [])
        self.constant_tensors: set[int] = facts.constant_tensors
        self.derived_constants: set[int] = facts.derived_constants
        self.constant_ops: set[int] = facts.constant_ops
        self.producer: dict[int, int] = facts.producer
        self.weights_of: list[frozenset[int]] = facts.weights_of
        self._facts: dict[int, _ConstantFacts] = {0: facts}

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

        # Live readers of every tensor, in execution order.
        self.readers: dict[int, list[int]] = {}
        for index, op in enumerate(raw_ops):
            if index in self.constant_ops:
                continue
            for tensor_index in op.inputs:
                if tensor_index < 0:
                    continue
                readers = self.readers.setdefault(int(tensor_index), [])
                if index not in readers:
                    readers.append(index)

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

    # -- subgraphs run by control flow ------------------------------------------------

    def called_subgraphs(self, op_index: int, subgraph: int = 0) -> tuple[int, ...]:
        """Subgraphs operator ``op_index`` of ``subgraph`` runs directly (``WHILE``: cond,
        body; ``IF``: then, else); empty for other operators."""
        fields = CONTROL_FLOW_OPS.get(self.subgraph_op_types[subgraph][op_index], ())
        options = (self.model.subgraphs[subgraph].operators or [])[op_index].builtinOptions
        called = tuple(int(getattr(options, f)) for f in fields) if options is not None else ()
        for index in called:
            if not 0 < index < len(self.model.subgraphs):
                raise ModelReadError(
                    f"corrupt TFLite model: operator {op_index} of subgraph {subgraph} runs "
                    f"subgraph {index}, but the model has {len(self.model.subgraphs)} subgraphs"
                )
        return called

    def reached_subgraphs(self, op_indices: Sequence[int]) -> list[int]:
        """Subgraphs the given main operators run, directly or in turn, sorted."""
        seen: set[int] = set()
        pending = [(0, i) for i in op_indices]
        while pending:
            subgraph, index = pending.pop()
            for called in self.called_subgraphs(index, subgraph):
                if called not in seen:
                    seen.add(called)
                    count = len(self.subgraph_op_types[called])
                    pending.extend((called, j) for j in range(count))
        return sorted(seen)

    def subgraph_name(self, subgraph: int) -> str:
        return _decode_name(self.model.subgraphs[subgraph].name)

    def _blocker(self) -> tuple[int, str, str] | None:
        """``(top-level operator, blamed operator type, why)`` of the first thing that
        prevents cutting, or ``None``."""
        for index, name in enumerate(self.op_types):
            if name in UNCUTTABLE_OPS:
                return index, name, "refers to resource variables or to subgraphs it may not own"
            for tensor_index in self._raw_ops[index].inputs:
                if tensor_index >= 0 and self.tensors[tensor_index].isVariable:
                    return index, name, "reads a variable tensor (state kept across invocations)"
        for index in range(self.num_operators):
            for subgraph in self.reached_subgraphs([index]):
                source = self.model.subgraphs[subgraph]
                tensors = source.tensors or []
                for j, op in enumerate(source.operators or []):
                    name = self.subgraph_op_types[subgraph][j]
                    variable = any(t >= 0 and tensors[t].isVariable for t in op.inputs)
                    if name in UNCUTTABLE_OPS or variable:
                        return (
                            index,
                            name,
                            f"runs subgraph {subgraph} ({self.subgraph_name(subgraph)!r}) whose "
                            f"operator {j} is {name}, which "
                            + (
                                "reads a variable tensor (state kept across invocations)"
                                if variable
                                else "refers to resource variables or to other subgraphs"
                            ),
                        )
        return None

    def uncuttable_operator(self) -> tuple[int, str] | None:
        """The first operator that prevents cutting, as ``(index, type)``, or ``None``.

        ``index`` is the top-level operator; ``type`` the operator to blame, which may
        sit inside a subgraph that operator runs."""
        blocker = self._blocker()
        return None if blocker is None else blocker[:2]

    def check_cuttable(self) -> None:
        """Raise :class:`UncuttableGraphError` unless this graph can be cut.

        Control flow (``WHILE``, ``IF``) is cuttable: cuts fall between top-level
        operators and a shard carries the subgraphs its operators run.
        """
        blocker = self._blocker()
        if blocker is not None:
            index, name, why = blocker
            top = self.op_types[index]
            raise UncuttableGraphError(
                f"cannot cut this model: operator {index} is {top}, which {why}; deploy it "
                "whole (a single stage) or convert it without resource variables",
                operator=name,
                op_index=index,
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
        return _tensor_bytes(self.tensors[tensor_index])

    # -- operators -----------------------------------------------------------------

    def _flops(self, subgraph: int, index: int, active: frozenset[int] = frozenset()) -> int:
        """FLOPs of operator ``index`` of ``subgraph``; control flow counts the subgraphs
        it runs (a ``WHILE`` its body times the trip count, an ``IF`` its dearer branch)."""
        source = self.model.subgraphs[subgraph]
        op = source.operators[index]
        name = self.subgraph_op_types[subgraph][index]
        tensors = source.tensors or []
        if name in CONTROL_FLOW_OPS:
            called = [c for c in self.called_subgraphs(index, subgraph) if c not in active]
            inner = active | {subgraph}
            costs = [self._subgraph_flops(c, inner) for c in called]
            if name == "WHILE" and len(costs) == 2:
                trips = self.trip_count(index, subgraph)
                return (trips + 1) * costs[0] + trips * costs[1]
            return max(costs, default=0)
        constant_ops = (
            self.constant_ops if subgraph == 0 else self._nested_facts(subgraph).constant_ops
        )
        if index in constant_ops:
            return 0
        return _operator_flops(name, op, tensors)

    def _subgraph_flops(self, subgraph: int, active: frozenset[int]) -> int:
        count = len(self.subgraph_op_types[subgraph])
        return sum(self._flops(subgraph, j, active) for j in range(count))

    def _nested_facts(self, subgraph: int) -> _ConstantFacts:
        if subgraph not in self._facts:
            source = self.model.subgraphs[subgraph]
            self._facts[subgraph] = _constant_facts(
                source.tensors or [],
                source.operators or [],
                self.subgraph_op_types[subgraph],
                self.model.buffers or [],
            )
        return self._facts[subgraph]

    def trip_count(self, op_index: int, subgraph: int = 0) -> int:
        """Iterations a ``WHILE`` is estimated to run, for its FLOPs.

        Read from its condition: ``LESS(x, limit)`` with a constant scalar ``limit`` and
        ``x`` a loop variable whose initial value is a constant (0 if unknown) -- the
        counters Keras RNN loops test. The smallest such bound wins; 1 when there is none.
        """
        cond_index = self.called_subgraphs(op_index, subgraph)[0]
        caller = self.model.subgraphs[subgraph]
        cond = self.model.subgraphs[cond_index]
        buffers = self.model.buffers or []
        cond_inputs = [int(t) for t in cond.inputs or []]
        loop_inputs = [int(t) for t in caller.operators[op_index].inputs]
        bounds = []
        for j, op in enumerate(cond.operators or []):
            if self.subgraph_op_types[cond_index][j] != "LESS" or len(op.inputs) != 2:
                continue
            limit = _scalar_int(cond.tensors[int(op.inputs[1])], buffers)
            if limit is None:
                continue
            start = 0
            if int(op.inputs[0]) in cond_inputs:
                position = cond_inputs.index(int(op.inputs[0]))
                if position < len(loop_inputs) and loop_inputs[position] >= 0:
                    initial = _scalar_int(caller.tensors[loop_inputs[position]], buffers)
                    start = initial if initial is not None else 0
            bounds.append(max(limit - start, 0))
        return min(bounds) if bounds else 1

    def _subgraph_param_bytes(self, subgraphs: Sequence[int]) -> int:
        """Bytes of the weights held by ``subgraphs``, each buffer counted once."""
        buffers = self.model.buffers or []
        seen: set[int] = set()
        total = 0
        for subgraph in subgraphs:
            for tensor in self.model.subgraphs[subgraph].tensors or []:
                data = buffers[tensor.buffer].data if 0 <= tensor.buffer < len(buffers) else None
                if data is not None and len(data) > 0 and tensor.buffer not in seen:
                    seen.add(tensor.buffer)
                    total += _tensor_bytes(tensor)
        return total

    def operators(self) -> list[OperatorInfo]:
        """Every top-level operator in execution order, with FLOPs and parameter bytes.

        A control-flow operator's figures include the subgraphs it runs (see
        :meth:`trip_count`), so sums over a stage account for everything it computes.
        """
        result = []
        for index, op in enumerate(self._raw_ops):
            param_bytes = 0
            reached: list[int] = []
            if index not in self.constant_ops:
                param_bytes = sum(self.tensor_bytes(t) for t in self.weights_of[index])
                reached = self.reached_subgraphs([index])
                param_bytes += self._subgraph_param_bytes(reached)
            result.append(
                OperatorInfo(
                    index=index,
                    type=self.op_types[index],
                    constant=index in self.constant_ops,
                    flops=self._flops(0, index),
                    param_bytes=param_bytes,
                    inputs=tuple(int(i) for i in op.inputs),
                    outputs=tuple(int(i) for i in op.outputs),
                    subgraphs=tuple(reached),
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


def _tensor_bytes(tensor: Any) -> int:
    dtype = _NUMPY_DTYPES.get(tensor_type_name(tensor.type))
    if dtype is None:
        return 0
    shape = [int(d) for d in (tensor.shape if tensor.shape is not None else [])]
    return int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize


def _scalar_int(tensor: Any, buffers: Sequence[Any]) -> int | None:
    """The value of a constant one-element int32/int64 tensor, else ``None``."""
    data = buffers[tensor.buffer].data if 0 <= tensor.buffer < len(buffers) else None
    dtype = {"INT32": np.int32, "INT64": np.int64}.get(tensor_type_name(tensor.type))
    if data is None or dtype is None:
        return None
    values = np.frombuffer(bytes(np.asarray(data, dtype=np.uint8)), dtype=dtype)
    return int(values[0]) if values.size == 1 else None


def _operator_flops(name: str, op: Any, tensors: Sequence[Any]) -> int:
    """FLOPs of one plain (not control-flow, not constant) operator."""

    def shape(t: int) -> list[int]:
        s = tensors[t].shape
        return [int(d) for d in s] if s is not None else []

    def elements(t: int) -> int:
        return int(np.prod(shape(t), dtype=np.int64)) if tensors[t].shape is not None else 0

    inputs = [int(i) for i in op.inputs]
    out_elements = sum(elements(int(t)) for t in op.outputs if t >= 0)
    if name in _DATA_MOVEMENT_OPS:
        return 0
    if name in {"CONV_2D", "CONV_3D"} and len(inputs) > 1:
        return 2 * out_elements * int(np.prod(shape(inputs[1])[1:], dtype=np.int64))
    if name == "DEPTHWISE_CONV_2D" and len(inputs) > 1:
        return 2 * out_elements * int(np.prod(shape(inputs[1])[1:3], dtype=np.int64))
    if name == "TRANSPOSE_CONV" and len(inputs) > 2:
        filter_shape = shape(inputs[1])  # [out_channels, kh, kw, in_channels]
        return 2 * elements(inputs[2]) * int(np.prod(filter_shape[:3], dtype=np.int64))
    if name == "FULLY_CONNECTED" and len(inputs) > 1:
        filter_shape = shape(inputs[1])
        return 2 * out_elements * (filter_shape[-1] if filter_shape else 1)
    if name == "BATCH_MATMUL" and inputs:
        first = shape(inputs[0])
        return 2 * out_elements * (first[-1] if first else 1)
    if name in _POOL_OPS:
        options = op.builtinOptions
        window = 1
        if options is not None and hasattr(options, "filterHeight"):
            window = int(options.filterHeight) * int(options.filterWidth)
        return out_elements * window
    if name in _REDUCE_OPS and inputs:
        return elements(inputs[0])
    return out_elements


@dataclass
class _ConstantFacts:
    """Which tensors and operators of one subgraph are constant (see the module docstring).

    Attributes:
        constant_tensors: tensors backed by a non-empty buffer (weights).
        derived_constants: outputs of constant operators.
        constant_ops: operators reading only weights and derived constants.
        producer: the operator writing each tensor.
        weights_of: per operator, the weights it reaches (through constant operators too).
    """

    constant_tensors: set[int]
    derived_constants: set[int]
    constant_ops: set[int]
    producer: dict[int, int]
    weights_of: list[frozenset[int]]


def _constant_facts(
    tensors: Sequence[Any], ops: Sequence[Any], op_types: Sequence[str], buffers: Sequence[Any]
) -> _ConstantFacts:
    facts = _ConstantFacts(set(), set(), set(), {}, [])
    for index, tensor in enumerate(tensors):
        data = buffers[tensor.buffer].data if 0 <= tensor.buffer < len(buffers) else None
        if data is not None and len(data) > 0:
            facts.constant_tensors.add(index)
    for index, op in enumerate(ops):
        inputs = [int(i) for i in op.inputs if i >= 0]
        weights: set[int] = set()
        for tensor_index in inputs:
            if tensor_index in facts.constant_tensors:
                weights.add(tensor_index)
            elif tensor_index in facts.derived_constants:
                weights |= facts.weights_of[facts.producer[tensor_index]]
        facts.weights_of.append(frozenset(weights))
        is_constant = (
            bool(inputs)
            and op_types[index] not in UNCUTTABLE_OPS
            and op_types[index] not in CONTROL_FLOW_OPS
            and all(t in facts.constant_tensors or t in facts.derived_constants for t in inputs)
        )
        if is_constant:
            facts.constant_ops.add(index)
        for tensor_index in op.outputs:
            facts.producer[int(tensor_index)] = index
            if is_constant:
                facts.derived_constants.add(int(tensor_index))
    return facts


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
