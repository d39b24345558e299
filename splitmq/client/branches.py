"""The client's side of a stage graph (Plan 2): where a request's input goes, which
stages answer it, which stages are branches, and how the requester joins the outputs
of several branches.

A deployment whose stages carry no ``sources`` is a chain and has no :class:`StageGraph`:
the client sends stage 0 the whole input and the last stage answers, as ever.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from splitmq.wire import (
    REQUESTER,
    Activation,
    Deployment,
    Result,
    Route,
    Tensor,
    TensorSpec,
)
from splitmq.wire.traces import merged_trace


@dataclass(frozen=True)
class StageGraph:
    """A deployment's stages as a graph, seen from the requester.

    Attributes:
        entries: per stage that reads the request's input, the names it reads.
        finals: the stages that send the requester a share of the model's outputs.
        parents: per stage, the stages that feed it (not the requester).
        inputs: the model's input specs, as the entry stages read them (first seen).
        outputs: the names of the model's outputs, finals in order.
    """

    entries: dict[int, tuple[str, ...]]
    finals: tuple[int, ...]
    parents: dict[int, tuple[int, ...]]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[str, ...]
    branches: frozenset[int] = field(default=frozenset())

    def ancestors(self, stage: int) -> set[int]:
        found: set[int] = set()
        todo = list(self.parents.get(stage, ()))
        while todo:
            parent = todo.pop()
            if parent not in found:
                found.add(parent)
                todo.extend(self.parents.get(parent, ()))
        return found

    def entries_towards(self, stage: int) -> list[int]:
        """The entry stages a branch retry of ``stage`` is sent to: those on its path."""
        path = self.ancestors(stage) | {stage}
        return [entry for entry in self.entries if entry in path]


GRAPHS_REMEMBERED = 64
"""Deployment messages whose graph :func:`graph_of` keeps (all are forgotten when one
more comes)."""
_graphs: dict[int, tuple[Deployment, StageGraph | None]] = {}


def graph_of(deployment: Deployment) -> StageGraph | None:
    """The stage graph of ``deployment``; ``None`` for a chain.

    Worked out once per deployment message (a message is immutable; every request
    asks): a stored message is kept with its graph, so its id is not reused meanwhile.
    """
    known = _graphs.get(id(deployment))
    if known is not None and known[0] is deployment:
        return known[1]
    graph = _graph_of(deployment)
    if len(_graphs) >= GRAPHS_REMEMBERED:
        _graphs.clear()
    _graphs[id(deployment)] = (deployment, graph)
    return graph


def _graph_of(deployment: Deployment) -> StageGraph | None:
    stages = deployment.stages
    if not stages or all(s.sources is None and s.targets is None for s in stages):
        return None
    entries: dict[int, tuple[str, ...]] = {}
    parents: dict[int, tuple[int, ...]] = {}
    for spec in stages:
        sources = spec.sources or ()
        parents[spec.stage] = tuple(e.stage for e in sources if e.stage != REQUESTER)
        for edge in sources:
            if edge.stage == REQUESTER:
                entries[spec.stage] = edge.tensors
    finals: list[int] = []
    outputs: list[str] = []
    for spec in stages:
        for edge in spec.targets or ():
            if edge.stage == REQUESTER:
                finals.append(spec.stage)
                outputs.extend(edge.tensors)
    specs: dict[str, TensorSpec] = {}
    for spec in stages:
        for tensor in spec.inputs:
            if tensor.name in entries.get(spec.stage, ()):
                specs.setdefault(tensor.name, tensor)
    graph = StageGraph(entries, tuple(finals), parents, tuple(specs.values()), tuple(outputs))
    everyone = {s.stage for s in stages}
    related = {s: graph.ancestors(s) for s in everyone}
    branches = frozenset(
        s
        for s in everyone
        if any(t != s and t not in related[s] and s not in related[t] for t in everyone)
    )
    return replace(graph, branches=branches)


def entry_activations(
    graph: StageGraph,
    template: Activation,
    tensors: Sequence[Tensor],
    *,
    branch: int | None = None,
    retry: int | None = None,
) -> list[Activation]:
    """The request's input as activations of the entry stages (each its own tensors):
    all of them, or for a branch retry those on the branch's path."""
    by_name = {t.name: t for t in tensors}
    stages = list(graph.entries) if branch is None else graph.entries_towards(branch)
    return [
        replace(
            template,
            stage=stage,
            tensors=tuple(by_name[name] for name in graph.entries[stage] if name in by_name),
            source=REQUESTER,
            branch=branch,
            retry=retry,
        )
        for stage in stages
    ]


def fallback_route(route: Route, stage: int) -> Route | None:
    """``route`` with ``stage``'s next fallback first; ``None`` when it has none."""
    agents = route[stage]
    if len(agents) < 2:
        return None
    return (*route[:stage], (*agents[1:], agents[0]), *route[stage + 1 :])


@dataclass
class Fanin:
    """A request's outputs arriving from several final stages (the requester joins)."""

    parts: dict[int, dict[int, Result]] = field(default_factory=dict)  # attempt -> stage ->
    generation: int = 0
    """Bumped by every branch retry: an attempt's timeout armed before it is void."""
    retries: dict[int, int] = field(default_factory=dict)
    """Branch retries sent, per branch stage."""

    def add(self, graph: StageGraph, result: Result) -> Result | None:
        """Take one final stage's result; the joined result once every final is in."""
        parts = self.parts.setdefault(result.attempt, {})
        stage = result.stage if result.stage is not None else graph.finals[-1]
        parts.setdefault(stage, result)
        if any(final not in parts for final in graph.finals):
            return None
        ordered = [parts[final] for final in graph.finals]
        return join_results(ordered)


def join_results(parts: Sequence[Result]) -> Result:
    """One result from the finals' results: their tensors, and every trace entry once."""
    return replace(
        parts[-1],
        tensors=tuple(t for part in parts for t in part.tensors),
        trace=merged_trace(part.trace for part in parts),
        stage=None,
    )


def primaries_first(route: Route, deployment: Deployment) -> Route:
    """``route`` with each stage's deployment primary first: the optimizer gave the
    stages of a graph distinct primaries, so that the branches run side by side (a
    chain planner, which favours one agent for consecutive stages, would serialise them)."""
    ordered = []
    for stage, agents in enumerate(route):
        replicas = deployment.stages[stage].replicas if stage < len(deployment.stages) else ()
        primary = replicas[0] if replicas else None
        ordered.append(
            (primary, *(a for a in agents if a != primary)) if primary in agents else agents
        )
    return tuple(ordered)
