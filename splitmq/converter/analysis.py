"""From a ``.tflite`` to its manifest entry: operators, cut points, cross-variant alignment.

No TensorFlow.
"""

from __future__ import annotations

import difflib
import hashlib
from collections.abc import Mapping, Sequence

from splitmq.converter.branches import parallel_sections
from splitmq.converter.errors import UncuttableGraphError
from splitmq.converter.graph import Graph
from splitmq.wire.manifest import (
    AlignedCutPoint,
    Branch,
    CutPoint,
    Fidelity,
    Operator,
    ParallelSection,
    Variant,
)

__all__ = ["align_cut_points", "describe_variant"]


def describe_variant(
    name: str,
    file: str,
    data: bytes,
    *,
    layer_names: Sequence[str] = (),
    fidelity: Fidelity | None = None,
    graph: Graph | None = None,
) -> Variant:
    """The manifest entry of one variant: operators, every candidate cut point, the
    parallel sections (see :mod:`splitmq.converter.branches`), digests."""
    graph = graph or Graph.load(data)
    operators = graph.operators()
    cuttable = True
    reason: str | None = None
    try:
        graph.check_cuttable()
    except UncuttableGraphError as error:
        cuttable, reason = False, str(error)
    cut_points: list[CutPoint] = []
    sections: list[ParallelSection] = []
    if cuttable:
        sections = [
            ParallelSection(
                start=section.start,
                end=section.end,
                branches=tuple(
                    Branch(b.operators, b.flops, b.param_bytes, b.input_bytes, b.output_bytes)
                    for b in section.branches
                ),
            )
            for section in parallel_sections(graph)
        ]
        cumulative = [0]
        for op in operators:
            cumulative.append(cumulative[-1] + op.flops)
        for position, tensors in graph.all_frontiers().items():
            specs = tuple(graph.tensor_spec(t) for t in tensors)
            cut_points.append(
                CutPoint(
                    position=position,
                    frontier=specs,
                    frontier_bytes=sum(s.size_bytes for s in specs),
                    cumulative_flops=cumulative[position],
                    after_layer=graph.layer_after(position, layer_names),
                )
            )
    return Variant(
        name=name,
        file=file,
        size_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        inputs=tuple(graph.tensor_spec(t) for t in graph.model_inputs),
        outputs=tuple(graph.tensor_spec(t) for t in graph.model_outputs),
        operators=tuple(
            Operator(op.index, op.type, op.constant, op.flops, op.param_bytes, op.subgraphs)
            for op in operators
        ),
        cut_points=tuple(cut_points),
        cuttable=cuttable,
        uncuttable_reason=reason,
        fidelity=fidelity,
        parallel_sections=tuple(sections),
    )


def _live_tokens(variant: Variant) -> tuple[list[int], list[str]]:
    """Live operators (and their types), dropping the int8 boundary QUANTIZE/DEQUANTIZE."""
    indices = [op.index for op in variant.operators if not op.constant]
    types = [variant.operators[i].type for i in indices]
    return indices, types


def align_cut_points(
    reference: Variant, others: Mapping[str, Variant]
) -> tuple[AlignedCutPoint, ...]:
    """Map the reference variant's cut points to the equivalent ones of other variants.

    Live operator sequences are aligned (``difflib``); a reference cut point after live
    operator ``a`` maps to the variant cut point after the matching operator ``b`` when
    their frontiers have the same shapes.
    """
    ref_indices, ref_types = _live_tokens(reference)
    mapping: dict[str, dict[int, int]] = {}
    for name, variant in others.items():
        indices, types = _live_tokens(variant)
        matcher = difflib.SequenceMatcher(a=ref_types, b=types, autojunk=False)
        position_map: dict[int, int] = {}
        for block in matcher.get_matching_blocks():
            for offset in range(block.size):
                ref_op = ref_indices[block.a + offset]
                var_op = indices[block.b + offset]
                position_map[ref_op + 1] = var_op + 1
        mapping[name] = position_map
    aligned = []
    for point in reference.cut_points:
        positions: dict[str, int | None] = {reference.name: point.position}
        sizes: dict[str, int | None] = {reference.name: point.frontier_bytes}
        for name, variant in others.items():
            target = mapping[name].get(point.position)
            other = variant.cut_point(target) if target is not None else None
            if other is not None and [t.shape for t in other.frontier] != [
                t.shape for t in point.frontier
            ]:
                other = None
            positions[name] = None if other is None else other.position
            sizes[name] = None if other is None else other.frontier_bytes
        aligned.append(
            AlignedCutPoint(
                position=point.position,
                after_layer=point.after_layer,
                cumulative_flops=point.cumulative_flops,
                positions=positions,
                frontier_bytes=sizes,
            )
        )
    return tuple(aligned)
