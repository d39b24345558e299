"""Where a model's parallelism is: independent branches between two cut points. No TensorFlow.

Between boundaries ``a < c`` (``0``, a candidate cut point or ``n``) the live operators
of ``[a, c)`` fall into *branches*: the connected components of their data-flow graph
once the tensors crossing ``a`` are taken as given. Two operators are joined when one
reads what the other writes; two operators that only read the same frontier tensor are
not (that is a fan-out). The branches of an Inception block, the towers of a two-input
model, the heads of a multi-task model are such components.

A *parallel section* is a range ``[a, c)`` with two branches or more. From each
boundary ``a`` the end ``c`` kept is the one where running the branches side by side
saves the most: the largest sum of the branches' FLOPs but the dearest (the work taken
off the critical path, were each branch on a device of its own); the latest such ``c``
on a tie. A section is dropped when a section containing it saves as much. A range
whose branches save nothing (all but one without FLOPs) is not a section. These are
what a planner needs: run the operators before ``a`` as one stage (or a chain), each
branch as a stage of its own in parallel, and the operators from ``c`` on as the stage
that joins them (or let the requester be the join when ``c`` is the end of the
model). Listing every pair of cut points instead would grow with the square of the
model's size. (The longest range with two branches would not do: in a NASNet cell the
next cell's shortcut from the cell's input keeps a second branch alive far past the
cell's own concatenation, and hides the five branches inside it.)

Scanning from ``a`` stops once no tensor of ``a``'s frontier is alive any more: from
there on no new branch can start, so the branch count only falls.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from splitmq.converter.errors import StageGraphError
from splitmq.converter.graph import Graph, OperatorInfo

__all__ = [
    "Branch",
    "Section",
    "branches",
    "parallel_sections",
    "section_stages",
    "stage_graph",
]


@dataclass(frozen=True)
class Branch:
    """One branch of a range.

    Attributes:
        operators: its live operators, in execution order.
        inputs: frontier tensors it reads (tensor indices).
        outputs: tensors it writes that operators outside it, or the model's
            outputs, read (tensor indices).
        flops, param_bytes: sums over its operators.
        input_bytes, output_bytes: sizes of ``inputs`` and ``outputs``.
    """

    operators: tuple[int, ...]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    flops: int
    param_bytes: int
    input_bytes: int
    output_bytes: int


@dataclass(frozen=True)
class Section:
    """A parallel section ``[start, end)`` and its branches (two or more)."""

    start: int
    end: int
    branches: tuple[Branch, ...]


class _Components:
    """Union-find over operator indices, counting components and summing their FLOPs."""

    def __init__(self) -> None:
        self.parent: dict[int, int] = {}
        self.flops: dict[int, int] = {}  # per root
        self.count = 0

    def add(self, item: int, flops: int = 0) -> None:
        self.parent[item] = item
        self.flops[item] = flops
        self.count += 1

    def find(self, item: int) -> int:
        root = item
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[item] != root:
            self.parent[item], item = root, self.parent[item]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[rb] = ra
            self.flops[ra] += self.flops.pop(rb)
            self.count -= 1

    def saving(self) -> int:
        """FLOPs off the critical path if every component ran on its own device: all
        of them but the dearest."""
        return sum(self.flops.values()) - max(self.flops.values(), default=0)


def _boundaries(graph: Graph) -> list[int]:
    return [0, *graph.candidate_cut_points(), graph.num_operators]


def _frontier_at(graph: Graph, frontiers: dict[int, list[int]], position: int) -> list[int]:
    if position == 0:
        return list(graph.model_inputs)
    if position >= graph.num_operators:
        return list(graph.model_outputs)
    return frontiers[position]


def branches(graph: Graph, start: int, end: int) -> list[Branch]:
    """The branches of operator range ``[start, end)``, ordered by first operator."""
    infos = graph.operators()
    return [_describe(graph, g, infos) for g in _groups(graph, start, end)]


def _describe(graph: Graph, members: Sequence[int], infos: Sequence[OperatorInfo]) -> Branch:
    """A branch of operators ``members``: its tensors in and out, FLOPs, weights."""
    readers = graph.readers
    ops = graph.subgraph.operators or []
    inside = set(members)
    produced: list[int] = []
    for index in members:
        produced.extend(int(t) for t in ops[index].outputs if t >= 0)
    produced_set = set(produced)
    inputs: list[int] = []
    for index in members:
        for raw in ops[index].inputs:
            t = int(raw)
            if (
                t >= 0
                and t not in produced_set
                and t not in graph.constant_tensors
                and t not in graph.derived_constants
                and t not in inputs
            ):
                inputs.append(t)
    model_outputs = set(graph.model_outputs)
    outputs = [
        t
        for t in produced
        if t in model_outputs or any(r not in inside for r in readers.get(t, ()))
    ]
    return Branch(
        operators=tuple(members),
        inputs=tuple(inputs),
        outputs=tuple(outputs),
        flops=sum(infos[i].flops for i in members),
        param_bytes=sum(infos[i].param_bytes for i in members),
        input_bytes=sum(graph.tensor_bytes(t) for t in inputs),
        output_bytes=sum(graph.tensor_bytes(t) for t in outputs),
    )


def parallel_sections(graph: Graph) -> list[Section]:
    """Every parallel section of the model (see the module docstring), by start."""
    ops = graph.subgraph.operators or []
    flops = [op.flops for op in graph.operators()]
    boundaries = _boundaries(graph)
    boundary_set = set(boundaries)
    frontiers = graph.all_frontiers()
    n = graph.num_operators
    found: list[tuple[int, int, int]] = []  # start, end, saving
    for start in boundaries[:-1]:
        given = set(_frontier_at(graph, frontiers, start))
        components = _Components()
        produced_by: dict[int, int] = {}
        best: tuple[int, int] | None = None  # saving, end
        for index in range(start, n):
            if graph.is_live(index):
                components.add(index, flops[index])
                for raw in ops[index].inputs:
                    producer = produced_by.get(int(raw))
                    if producer is not None:
                        components.union(producer, index)
                for raw in ops[index].outputs:
                    if raw >= 0:
                        produced_by[int(raw)] = index
            end = index + 1
            if end not in boundary_set:
                continue
            saving = components.saving()
            if components.count >= 2 and saving > 0 and (best is None or saving >= best[0]):
                best = (saving, end)
            alive = given & set(_frontier_at(graph, frontiers, end)) if end < n else given
            if not alive and components.count < 2:
                break
        if best is not None:
            found.append((start, best[1], best[0]))
    # Keep the sections no section containing them matches in saving.
    maximal = [
        (start, end)
        for start, end, saving in found
        if not any(
            s <= start and end <= e and (s, e) != (start, end) and other >= saving
            for s, e, other in found
        )
    ]
    infos = graph.operators()
    sections = []
    for start, end in maximal:
        groups = _groups(graph, start, end)
        sections.append(
            Section(
                start=start,
                end=end,
                branches=tuple(_describe(graph, g, infos) for g in groups),
            )
        )
    return sections


def _groups(graph: Graph, start: int, end: int) -> list[list[int]]:
    ops = graph.subgraph.operators or []
    components = _Components()
    produced_by: dict[int, int] = {}
    live = [i for i in range(start, end) if graph.is_live(i)]
    for index in live:
        components.add(index)
        for raw in ops[index].inputs:
            producer = produced_by.get(int(raw))
            if producer is not None:
                components.union(producer, index)
        for raw in ops[index].outputs:
            if raw >= 0:
                produced_by[int(raw)] = index
    groups: dict[int, list[int]] = {}
    for index in live:
        groups.setdefault(components.find(index), []).append(index)
    return list(groups.values())


def section_stages(graph: Graph, start: int, end: int) -> list[list[int]]:
    """A stage graph around ``[start, end)``: the live operators before ``start`` (if
    any), one stage per branch, then the live operators from ``end`` on (if any) -- the
    fan-out, the branches in parallel, the fan-in."""
    before = [i for i in range(start) if graph.is_live(i)]
    after = [i for i in range(end, graph.num_operators) if graph.is_live(i)]
    stages = [before] if before else []
    stages.extend(_groups(graph, start, end))
    if after:
        stages.append(after)
    return stages


class _HasOperators(Protocol):
    @property
    def operators(self) -> tuple[int, ...]: ...


class _SectionLike(Protocol):
    """A :class:`Section` here, or a manifest's ``ParallelSection``."""

    @property
    def start(self) -> int: ...

    @property
    def end(self) -> int: ...

    @property
    def branches(self) -> Sequence[_HasOperators]: ...


def stage_graph(
    graph: Graph, sections: Sequence[_SectionLike], cut_points: Sequence[int] = ()
) -> list[list[int]]:
    """The stages of a plan that fans out at ``sections`` and is a chain elsewhere, cut
    at ``cut_points``, as operator sets for :func:`splitmq.converter.cutter.cut_stages`:
    in execution order, each section's branches one stage each, the operators between
    them split at the cut points. A section may come from a manifest (its branches'
    ``operators``), so a planner needs no analysis of its own.

    Raises:
        StageGraphError: sections that overlap, or a cut point inside a section.
    """
    ordered = sorted(sections, key=lambda s: s.start)
    for previous, section in itertools.pairwise(ordered):
        if section.start < previous.end:
            raise StageGraphError(
                f"sections [{previous.start}, {previous.end}) and [{section.start}, "
                f"{section.end}) overlap; fan out at one of them",
                stage=0,
            )
    for point in cut_points:
        for section in ordered:
            if section.start < point < section.end:
                raise StageGraphError(
                    f"cut point {point} falls inside the section [{section.start}, "
                    f"{section.end}); its branches are stages already",
                    stage=0,
                )
    by_start = {s.start: s for s in ordered}
    bounds = {0, graph.num_operators, *cut_points} | {s.end for s in ordered} | set(by_start)
    stages: list[list[int]] = []
    for start, end in itertools.pairwise(sorted(bounds)):
        fan_out = by_start.get(start)
        if fan_out is not None:
            stages.extend(list(b.operators) for b in fan_out.branches)
            continue
        live = [i for i in range(start, end) if graph.is_live(i)]
        if live:
            stages.append(live)
    return stages
