"""Stage graphs on the shipped digits model: no TensorFlow, fast tier.

The digits classifier is a plain chain (no parallel section), so these check what a
stage graph has in common with a chain -- the same shards, the same edges -- and how a
bad stage graph is refused (a constant operator named in a stage: ``test_stage_graph.py``,
on a float16 variant).
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from splitmq.converter import Graph, PoolEntry, cut_graph, run_model
from splitmq.converter.branches import branches, parallel_sections, section_stages
from splitmq.converter.cutter import cut_stages, stage_edges
from splitmq.converter.errors import StageGraphError
from splitmq.converter.runner import run_stage_graph
from splitmq.wire import REQUESTER, StageEdge
from tests.data import digits_pool


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> PoolEntry:
    return digits_pool(tmp_path_factory.mktemp("digits"))


def live_ranges(graph: Graph, points: list[int]) -> list[list[int]]:
    bounds = [0, *points, graph.num_operators]
    return [[i for i in range(a, b) if graph.is_live(i)] for a, b in itertools.pairwise(bounds)]


@pytest.mark.parametrize("variant", ["float32", "int8"])
def test_a_chain_cut_as_a_stage_graph_is_the_same_chain(digits: PoolEntry, variant: str) -> None:
    model = Path(digits.variant_path(variant)).read_bytes()
    graph = Graph.load(model)
    assert parallel_sections(graph) == []
    points = graph.candidate_cut_points()[::3]
    chain = cut_graph(graph, points)
    shards = cut_stages(graph, live_ranges(graph, points))
    assert [s.data for s in shards] == [s.data for s in chain]
    rng = np.random.default_rng(4)
    spec = graph.tensor_spec(graph.model_inputs[0])
    inputs = {spec.name: rng.uniform(0, 16, spec.shape).astype(spec.dtype)}
    produced = run_stage_graph(list(reversed(shards)), inputs)  # run in arrival order
    for name, value in run_model(model, inputs).items():
        assert np.array_equal(produced[name], value)
    outputs = [graph.tensor_name(t) for t in graph.model_outputs]
    edges = stage_edges(shards, outputs)
    last = len(shards) - 1
    for stage, (sources, targets) in enumerate(edges):
        names_in = tuple(s.name for s in shards[stage].inputs)
        names_out = tuple(s.name for s in shards[stage].outputs)
        assert sources == (StageEdge(stage - 1 if stage else REQUESTER, names_in),)
        assert targets == (StageEdge(stage + 1 if stage < last else REQUESTER, names_out),)


def test_a_chain_has_one_branch_per_range(digits: PoolEntry) -> None:
    graph = Graph.load(Path(digits.variant_path("float32")).read_bytes())
    (only,) = branches(graph, 0, graph.num_operators)
    assert list(only.operators) == [i for i in range(graph.num_operators) if graph.is_live(i)]
    assert only.output_bytes == sum(graph.tensor_bytes(t) for t in graph.model_outputs)
    assert section_stages(graph, 2, 4) == live_ranges(graph, [2, 4])


def test_bad_stage_graphs_are_refused(digits: PoolEntry) -> None:
    graph = Graph.load(Path(digits.variant_path("int8")).read_bytes())
    first, second, third = live_ranges(graph, graph.candidate_cut_points()[1:3])
    cases = {
        "in stage 0 and in stage 1": [first, [*first, *second], third],
        "in no stage": [first, third],
        "produces later": [second, first, third],
    }
    for reason, stages in cases.items():
        with pytest.raises(StageGraphError, match=reason):
            cut_stages(graph, stages)
