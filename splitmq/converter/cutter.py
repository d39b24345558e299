"""Cutting a ``.tflite`` model into shards, one per stage. No TensorFlow.

A stage is the half-open operator range ``[start, end)`` of the model's execution
order; cut points ``[k1, k2, ...]`` (strictly increasing, each in ``1..n-1``) give the
stages ``[0, k1), [k1, k2), ..., [km, n)``. Each shard is a complete TFLite model:

* its operators are the stage's live operators plus every constant operator they
  depend on (float16 ``DEQUANTIZE`` of weights, say), in the original order;
* its inputs are the non-constant tensors its operators read that it does not produce
  (model inputs or earlier stages' outputs); its outputs are the tensors it produces
  that a later stage reads or that are model outputs -- both keep their original names;
* tensors, buffers and operator codes it does not use are left out, so a shard carries
  only its own weights; weight buffers are 16-byte aligned like the converter's;
* a control-flow operator (``WHILE``, ``IF``) comes with the subgraphs it runs, and the
  subgraphs those run in turn, whole: their tensors, weights and operators, subgraph
  and operator-code indices renumbered. Cuts fall between top-level operators only.

Running the shards in order, feeding each the named tensors the earlier ones produced,
gives bit for bit the output of the unsplit model (see ``run_chain``).

A chain is the special case of a *stage graph* (:func:`cut_stages`): a stage is then
any set of live operators, the stages together running each once, and each reading only
model inputs and what stages listed before it produce -- the branches of a fan-out
(``splitmq.converter.branches``) each as a stage, and the stage that joins them. Inputs
and outputs follow the same rule (what it reads that others produce; what it produces
that others or the model's outputs read); ``run_stage_graph`` runs such a graph.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from splitmq.converter.errors import CutPointError, StageGraphError, UncuttableGraphError
from splitmq.converter.graph import (
    CONTROL_FLOW_OPS,
    Graph,
    TensorSpec,
    raise_cut_point_range,
    read_model,
)
from splitmq.wire.messages import REQUESTER, StageEdge

__all__ = [
    "CutPointSpec",
    "Shard",
    "cut",
    "cut_graph",
    "cut_stages",
    "stage_edges",
    "validate_cut_points",
]

_BUFFER_ALIGNMENT = 16


@dataclass(frozen=True)
class Shard:
    """One stage's model.

    Attributes:
        stage: position in the chain, from 0.
        start: first operator of the stage (inclusive).
        end: end of the stage's operator range (exclusive): ``[start, end)``.
        data: the shard's ``.tflite`` bytes.
        sha256: hex digest of ``data`` (shards are content-addressed).
        inputs: tensors the shard reads, named as in the original graph, in the
            order of the shard's own input list.
        outputs: tensors the shard writes, same conventions.
        path: where the shard was written, when ``cut`` was given ``out_dir``.
        operators: the live operators it runs (for a chain stage, those of
            ``[start, end)``; for a stage of a stage graph, any closed set of them).
    """

    stage: int
    start: int
    end: int
    data: bytes = field(repr=False)
    sha256: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    path: Path | None = None
    operators: tuple[int, ...] = ()

    @property
    def size_bytes(self) -> int:
        return len(self.data)


# A cut point: ``k`` (between top-level operators ``k - 1`` and ``k``), or
# ``(subgraph, k)`` to address a boundary inside a subgraph -- only subgraph 0 (the
# main one) can be cut; a boundary inside a loop body or branch is refused.
CutPointSpec = int | tuple[int, int]


def validate_cut_points(cut_points: Sequence[CutPointSpec], graph: Graph) -> list[tuple[int, int]]:
    """Check cut points and return the stages' ``[start, end)`` ranges.

    Raises:
        CutPointError: a cut point out of ``1..n-1``, not strictly increasing, or a
            stage without a single live operator.
        UncuttableGraphError: a cut point inside a subgraph a ``WHILE`` or ``IF`` runs.
    """
    n = graph.num_operators
    points = [_top_level(k, graph) for k in cut_points]
    for k in points:
        if not 0 < k < n:
            raise_cut_point_range(k, n)
    for previous, k in itertools.pairwise(points):
        if k <= previous:
            raise CutPointError(
                f"cut points must be strictly increasing, got {points}; sort them and drop "
                "duplicates",
                cut_point=k,
                num_operators=n,
            )
    bounds = [0, *points, n]
    stages = list(itertools.pairwise(bounds))
    for start, end in stages:
        if not any(graph.is_live(i) for i in range(start, end)):
            raise CutPointError(
                f"stage [{start}, {end}) holds only constant operators (weights "
                "preparation) and no computation; move the cut point past operator "
                f"{end} (`splitmq inspect` lists the candidates)",
                cut_point=start if start > 0 else end,
                num_operators=n,
            )
    return stages


def _top_level(point: CutPointSpec, graph: Graph) -> int:
    """The top-level position of a cut point, refusing one inside a subgraph."""
    if isinstance(point, tuple):
        subgraph, position = (int(v) for v in point)
        if subgraph == 0:
            return position
        runner = next(
            (i for i in range(graph.num_operators) if subgraph in graph.reached_subgraphs([i])),
            None,
        )
        if runner is None or subgraph >= len(graph.model.subgraphs):
            raise CutPointError(
                f"cut point {point} names subgraph {subgraph}, which no operator of the main "
                "subgraph runs; cut between top-level operators (`splitmq inspect` lists "
                "the candidates)",
                cut_point=position,
                num_operators=graph.num_operators,
            )
        kind = graph.op_types[runner]
        raise UncuttableGraphError(
            f"cannot cut inside subgraph {subgraph} ({graph.subgraph_name(subgraph)!r}): "
            f"operator {runner} ({kind}) runs it and is one indivisible step of the main "
            f"graph; cut before it ({runner}) or after it ({runner + 1}) instead",
            operator=kind,
            op_index=runner,
        )
    return int(point)


def cut(
    model: bytes | bytearray | str | Path,
    cut_points: Sequence[CutPointSpec],
    out_dir: str | Path | None = None,
) -> list[Shard]:
    """Cut a ``.tflite`` model (bytes or file) at ``cut_points`` into ``len+1`` shards.

    With ``out_dir`` each shard is also written as ``stage-<i>-<sha256[:12]>.tflite``.

    Raises:
        ModelReadError: not a TFLite model.
        UncuttableGraphError: resource variables or variable tensors, or a cut point
            inside a subgraph that a ``WHILE`` or ``IF`` runs.
        CutPointError: bad cut points.
    """
    graph = Graph(read_model(model))
    return cut_graph(graph, cut_points, out_dir)


def cut_graph(
    graph: Graph, cut_points: Sequence[CutPointSpec], out_dir: str | Path | None = None
) -> list[Shard]:
    """:func:`cut` for an already analysed graph (saves parsing when cutting often)."""
    graph.check_cuttable()
    stages = validate_cut_points(cut_points, graph)
    shards = []
    for stage, (start, end) in enumerate(stages):
        live = [i for i in range(start, end) if graph.is_live(i)]
        shards.append(_make_shard(graph, stage, live, out_dir))
    return shards


def cut_stages(
    graph: Graph, stages: Sequence[Collection[int]], out_dir: str | Path | None = None
) -> list[Shard]:
    """Cut a stage graph: one shard per set of live operators, not only per range.

    Every live operator of the main subgraph must be in exactly one stage, and a stage
    may read only model inputs and what stages listed before it produce (so the list is
    an execution order of the graph: fan-out, branches, fan-in). A shard's inputs are
    the tensors it reads that others produce, its outputs the tensors it produces that
    other stages read or that are model outputs; constant operators are copied into
    every shard that needs them, as for a chain. :func:`cut_graph` is the special case
    of contiguous ranges.

    Raises:
        StageGraphError: the stages do not partition the live operators, a stage names
            a constant operator, or a stage reads what a later stage produces.
        UncuttableGraphError: resource variables or variable tensors.
    """
    graph.check_cuttable()
    ordered = _check_stages(graph, stages)
    return [_make_shard(graph, i, live, out_dir) for i, live in enumerate(ordered)]


def _check_stages(graph: Graph, stages: Sequence[Collection[int]]) -> list[list[int]]:
    n = graph.num_operators
    owner: dict[int, int] = {}
    ordered: list[list[int]] = []
    for stage, members in enumerate(stages):
        live = sorted({int(i) for i in members})
        if not live:
            raise StageGraphError(f"stage {stage} has no operator", stage=stage)
        for index in live:
            if not 0 <= index < n:
                raise StageGraphError(
                    f"stage {stage} names operator {index}; this model has operators 0..{n - 1}",
                    stage=stage,
                    op_index=index,
                )
            if not graph.is_live(index):
                raise StageGraphError(
                    f"stage {stage} names operator {index} ({graph.op_types[index]}), a "
                    "constant operator (weights preparation): leave it out, the cutter "
                    "copies it into every shard that needs it",
                    stage=stage,
                    op_index=index,
                )
            if index in owner:
                raise StageGraphError(
                    f"operator {index} is in stage {owner[index]} and in stage {stage}; "
                    "each operator runs in exactly one stage",
                    stage=stage,
                    op_index=index,
                )
            owner[index] = stage
        ordered.append(live)
    missing = [i for i in range(n) if graph.is_live(i) and i not in owner]
    if missing:
        raise StageGraphError(
            f"operators {missing[:10]}{'...' if len(missing) > 10 else ''} are in no stage; "
            "every live operator must run in one",
            stage=len(ordered),
            op_index=missing[0],
        )
    ops = graph.subgraph.operators or []
    for stage, live in enumerate(ordered):
        for index in live:
            for raw in ops[index].inputs:
                producer = graph.producer.get(int(raw)) if raw >= 0 else None
                if producer is None or not graph.is_live(producer):
                    continue
                if owner[producer] > stage:
                    raise StageGraphError(
                        f"stage {stage} (operator {index}) reads "
                        f"{graph.tensor_name(int(raw))!r}, which stage {owner[producer]} "
                        "produces later; list the stages in an order where each reads only "
                        "model inputs and earlier stages (fan-out, branches, fan-in)",
                        stage=stage,
                        op_index=index,
                    )
    return ordered


def stage_edges(
    shards: Sequence[Shard], model_outputs: Sequence[str]
) -> list[tuple[tuple[StageEdge, ...], tuple[StageEdge, ...]]]:
    """Per shard of a stage graph, its ``(sources, targets)``: which stage sends it which
    of its inputs (:data:`REQUESTER` for the model's inputs) and which of its outputs
    go to which stage (:data:`REQUESTER` for the model's outputs, ``model_outputs``
    by name), stages ascending -- the edges a deployment's stages carry on the wire."""
    producer: dict[str, int] = {}
    for shard in shards:
        for spec in shard.outputs:
            producer.setdefault(spec.name, shard.stage)
    wanted = set(model_outputs)
    edges = []
    for shard in shards:
        by_source: dict[int, list[str]] = {}
        for spec in shard.inputs:
            by_source.setdefault(producer.get(spec.name, REQUESTER), []).append(spec.name)
        made = {spec.name for spec in shard.outputs}
        by_target: dict[int, list[str]] = {}
        returned = [spec.name for spec in shard.outputs if spec.name in wanted]
        if returned:
            by_target[REQUESTER] = returned
        for other in shards:
            sent = [spec.name for spec in other.inputs if spec.name in made]
            if sent and other.stage != shard.stage:
                by_target[other.stage] = sent
        edges.append(
            (
                tuple(StageEdge(k, tuple(v)) for k, v in sorted(by_source.items())),
                tuple(StageEdge(k, tuple(v)) for k, v in sorted(by_target.items())),
            )
        )
    return edges


def _make_shard(graph: Graph, stage: int, live: Sequence[int], out_dir: str | Path | None) -> Shard:
    data, inputs, outputs = _build_shard(graph, live)
    digest = hashlib.sha256(data).hexdigest()
    path: Path | None = None
    if out_dir is not None:
        directory = Path(out_dir)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"stage-{stage}-{digest[:12]}.tflite"
        path.write_bytes(data)
    return Shard(
        stage=stage,
        start=min(live),
        end=max(live) + 1,
        data=data,
        sha256=digest,
        inputs=tuple(graph.tensor_spec(t) for t in inputs),
        outputs=tuple(graph.tensor_spec(t) for t in outputs),
        path=path,
        operators=tuple(live),
    )


def _stage_operators(graph: Graph, live: Sequence[int]) -> list[int]:
    """The stage's live operators plus the constant operators they depend on."""
    needed: set[int] = set(live)
    pending = list(live)
    ops = graph.subgraph.operators
    while pending:
        index = pending.pop()
        for t in ops[index].inputs:
            producer = graph.producer.get(int(t)) if t >= 0 else None
            if producer is not None and producer in graph.constant_ops and producer not in needed:
                needed.add(producer)
                pending.append(producer)
    return sorted(needed)


def _build_shard(graph: Graph, live: Sequence[int]) -> tuple[bytes, list[int], list[int]]:
    """A shard running the live operators ``live`` (and the constant ones they need)."""
    from ai_edge_litert import schema_py_generated as schema

    model = graph.model
    ops = graph.subgraph.operators
    op_indices = _stage_operators(graph, live)
    members = set(live)

    produced: set[int] = set()
    read: list[int] = []
    for index in op_indices:
        for t in ops[index].inputs:
            if t >= 0 and int(t) not in read:
                read.append(int(t))
        produced.update(int(t) for t in ops[index].outputs if t >= 0)

    constant = graph.constant_tensors
    inputs = [t for t in read if t not in produced and t not in constant]
    model_input_order = {t: i for i, t in enumerate(graph.model_inputs)}
    inputs.sort(
        key=lambda t: (
            (0, model_input_order[t]) if t in model_input_order else (1, graph.producer[t])
        )
    )

    model_outputs = set(graph.model_outputs)
    outputs = [t for t in graph.model_outputs if t in produced]
    for index in op_indices:
        if not graph.is_live(index):
            continue
        for raw in ops[index].outputs:
            t = int(raw)
            if t < 0 or t in model_outputs:
                continue
            read_elsewhere = any(r not in members for r in graph.readers.get(t, ()))
            if read_elsewhere and t not in outputs:
                outputs.append(t)

    # Every tensor the shard refers to, in original order, and the remapping.
    used: set[int] = set(inputs) | set(outputs)
    for index in op_indices:
        op = ops[index]
        for group in (op.inputs, op.outputs, op.intermediates or []):
            used.update(int(t) for t in group if t >= 0)
    tensor_order = sorted(used)
    new_tensor = {old: new for new, old in enumerate(tensor_order)}

    # The subgraphs the stage's control flow runs, renumbered after the main one.
    carried = graph.reached_subgraphs(op_indices)
    new_subgraph = {old: new for new, old in enumerate(carried, start=1)}

    buffers = model.buffers or []
    new_buffers: list[Any] = [schema.BufferT()]
    new_buffer_of: dict[int, int] = {}

    def place(tensor: Any) -> Any:
        """A copy of ``tensor`` pointing at the shard's copy of its weights, if any."""
        tensor = copy.copy(tensor)
        data = buffers[tensor.buffer].data if 0 <= tensor.buffer < len(buffers) else None
        if data is not None and len(data) > 0:
            if tensor.buffer not in new_buffer_of:
                new_buffer_of[tensor.buffer] = len(new_buffers)
                new_buffers.append(_AlignedBuffer(data))
            tensor.buffer = new_buffer_of[tensor.buffer]
        else:
            tensor.buffer = 0
        return tensor

    tensors = [place(graph.tensors[old]) for old in tensor_order]

    metadata = []
    for entry in model.metadata or []:
        data = buffers[entry.buffer].data if 0 <= entry.buffer < len(buffers) else None
        new_entry = copy.copy(entry)
        new_entry.buffer = len(new_buffers)
        new_buffers.append(_AlignedBuffer(data))
        metadata.append(new_entry)

    new_opcode: dict[int, int] = {}

    def renumber(op: Any, op_type: str) -> Any:
        """A copy of ``op`` with the shard's operator code and subgraph indices."""
        op = copy.copy(op)
        if op.opcodeIndex not in new_opcode:
            new_opcode[op.opcodeIndex] = len(new_opcode)
        op.opcodeIndex = new_opcode[op.opcodeIndex]
        fields = CONTROL_FLOW_OPS.get(op_type, ())
        if fields and op.builtinOptions is not None:
            options = op.builtinOptions = copy.copy(op.builtinOptions)
            for name in fields:
                setattr(options, name, new_subgraph[int(getattr(options, name))])
        return op

    operators = []
    for index in op_indices:
        op = renumber(ops[index], graph.op_types[index])
        op.inputs = [new_tensor[int(t)] if t >= 0 else -1 for t in op.inputs]
        op.outputs = [new_tensor[int(t)] if t >= 0 else -1 for t in op.outputs]
        if op.intermediates is not None:
            op.intermediates = [new_tensor[int(t)] for t in op.intermediates if t >= 0]
        operators.append(op)

    subgraph = schema.SubGraphT()
    subgraph.tensors = tensors
    subgraph.inputs = [new_tensor[t] for t in inputs]
    subgraph.outputs = [new_tensor[t] for t in outputs]
    subgraph.operators = operators
    subgraph.name = graph.subgraph.name

    # Carried subgraphs are copied whole: their tensor indices stay as they are.
    subgraphs = [subgraph]
    for old in carried:
        source = model.subgraphs[old]
        copied = copy.copy(source)
        copied.tensors = [place(t) for t in source.tensors or []]
        types = graph.subgraph_op_types[old]
        copied.operators = [renumber(op, types[j]) for j, op in enumerate(source.operators or [])]
        subgraphs.append(copied)

    operator_codes = [None] * len(new_opcode)
    for old_code, new_code in new_opcode.items():
        operator_codes[new_code] = (model.operatorCodes or [])[old_code]

    signature = schema.SignatureDefT()
    signature.signatureKey = b"serving_default"
    signature.subgraphIndex = 0
    signature.inputs = [_tensor_map(schema, graph, t, new_tensor) for t in inputs]
    signature.outputs = [_tensor_map(schema, graph, t, new_tensor) for t in outputs]

    shard = schema.ModelT()
    shard.version = model.version
    shard.description = model.description
    shard.operatorCodes = operator_codes
    shard.subgraphs = subgraphs
    shard.buffers = new_buffers
    shard.metadata = metadata or None
    shard.signatureDefs = [signature]

    import flatbuffers  # type: ignore[import-untyped]

    weight_bytes = sum(len(b.data) for b in new_buffers if b.data is not None)
    builder = flatbuffers.Builder(weight_bytes + 64 * 1024)
    builder.Finish(shard.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output()), inputs, outputs


def _tensor_map(schema: Any, graph: Graph, old: int, new_tensor: dict[int, int]) -> Any:
    entry = schema.TensorMapT()
    entry.name = graph.tensor_name(old).encode("utf-8")
    entry.tensorIndex = new_tensor[old]
    return entry


class _AlignedBuffer:
    """A ``BufferT`` whose data vector is packed 16-byte aligned (``force_align: 16``)."""

    def __init__(self, data: Any) -> None:
        self.data = data

    def Pack(self, builder: Any) -> int:  # noqa: N802 (flatbuffers object API)
        from ai_edge_litert import schema_py_generated as schema

        data_offset = None
        if self.data is not None:
            payload = bytes(memoryview(self.data).cast("B"))
            builder.StartVector(1, len(payload), _BUFFER_ALIGNMENT)
            builder.head = builder.head - len(payload)
            builder.Bytes[builder.head : builder.head + len(payload)] = payload
            data_offset = builder.EndVector()
        schema.BufferStart(builder)
        if data_offset is not None:
            schema.BufferAddData(builder, data_offset)
        return int(schema.BufferEnd(builder))
