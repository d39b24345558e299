"""Parallel branches and stage graphs: fan-out, branches in parallel, fan-in.

The branchy model (``build_branchy_model``) has one section of each kind: two input
towers joined by a concatenation, an Inception-style block of four branches, and three
heads that the requester joins (the model's outputs). A stage graph cut around any of
them -- or around all three at once -- and run shard by shard, each fed only its named
inputs, gives bit for bit what the unsplit model gives, in float32 and int8.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable

import numpy as np
import pytest

from splitmq.converter import Graph, PoolEntry, cut_graph, run_model
from splitmq.converter.branches import branches, parallel_sections, section_stages, stage_graph
from splitmq.converter.cutter import cut_stages, stage_edges
from splitmq.converter.errors import StageGraphError
from splitmq.converter.manifest import load_manifest
from splitmq.converter.report import parallel_table
from splitmq.converter.runner import run_stage_graph
from splitmq.wire import REQUESTER, StageEdge
from splitmq.wire.manifest import Manifest

pytestmark = [pytest.mark.slow, pytest.mark.tensorflow]

VARIANTS = ("float32", "int8")


def random_inputs(graph: Graph, seed: int, high: float = 1.0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    inputs = {}
    for t in graph.model_inputs:
        spec = graph.tensor_spec(t)
        inputs[spec.name] = rng.uniform(0, high, spec.shape).astype(spec.dtype)
    return inputs


def assert_exact(
    model: bytes, graph: Graph, stages: list[list[int]], seed: int, samples: int = 2
) -> None:
    shards = cut_stages(graph, stages)
    for sample in range(samples):
        inputs = random_inputs(graph, seed + sample, high=255.0 if seed >= 100 else 1.0)
        expected = run_model(model, inputs)
        produced = run_stage_graph(shards, inputs)
        for name, value in expected.items():
            assert np.array_equal(produced[name], value), f"{name} differs for {stages}"


@pytest.mark.parametrize("variant", VARIANTS)
def test_branchy_sections_are_found_and_in_the_manifest(
    branchy_entry: PoolEntry, variant: str
) -> None:
    model = branchy_entry.variant_path(variant).read_bytes()
    graph = Graph.load(model)
    sections = parallel_sections(graph)
    # Towers (2), the Inception block (4), the heads (3) -- in that order.
    assert [len(s.branches) for s in sections] == [2, 4, 3]
    towers, inception, heads = sections
    assert towers.start == 0 and heads.end == graph.num_operators
    # Towers and heads are built alike: equal FLOPs per branch.
    assert towers.branches[0].flops == towers.branches[1].flops > 0
    assert len({b.flops for b in heads.branches}) <= 3 and min(b.flops for b in heads.branches) > 0
    # Each head's outputs are one of the model's outputs (the requester joins them).
    outputs = {graph.tensor_name(t) for t in graph.model_outputs}
    for branch in heads.branches:
        assert {graph.tensor_name(t) for t in branch.outputs} <= outputs
    # The Inception branches all read the block's input and feed its concatenation.
    frontier = set(graph.frontier(inception.start))
    for branch in inception.branches:
        assert set(branch.inputs) == frontier
        assert branch.output_bytes == sum(graph.tensor_bytes(t) for t in branch.outputs)
    infos = graph.operators()
    for section in sections:
        ops = [i for b in section.branches for i in b.operators]
        assert sorted(ops) == [i for i in range(section.start, section.end) if graph.is_live(i)]
        for branch in section.branches:
            assert branch.flops == sum(infos[i].flops for i in branch.operators)
            assert branch.param_bytes == sum(infos[i].param_bytes for i in branch.operators)
        assert branches(graph, section.start, section.end) == list(section.branches)
    # The manifest lists the same, and reads back the same.
    recorded = branchy_entry.manifest.variants[variant].parallel_sections
    assert [(s.start, s.end) for s in recorded] == [(s.start, s.end) for s in sections]
    assert [[b.operators for b in s.branches] for s in recorded] == [
        [b.operators for b in s.branches] for s in sections
    ]
    assert load_manifest(branchy_entry.path) == branchy_entry.manifest


@pytest.mark.parametrize("variant", VARIANTS)
def test_branchy_stage_graphs_bit_exact(branchy_entry: PoolEntry, variant: str) -> None:
    model = branchy_entry.variant_path(variant).read_bytes()
    graph = Graph.load(model)
    sections = parallel_sections(graph)
    for number, section in enumerate(sections):
        assert_exact(model, graph, section_stages(graph, section.start, section.end), number)
    stages = stage_graph(graph, sections)
    assert len(stages) == 2 + 1 + 4 + 1 + 3
    assert_exact(model, graph, stages, seed=7)
    # The same from the manifest's sections, with the chain between them cut too.
    recorded = branchy_entry.manifest.variants[variant].parallel_sections
    between = [p for p in graph.candidate_cut_points() if sections[0].end < p < sections[1].start]
    stages = stage_graph(graph, recorded, between[:1])
    assert len(stages) == 2 + 2 + 4 + 1 + 3
    assert_exact(model, graph, stages, seed=8)
    with pytest.raises(StageGraphError, match="inside the section"):
        stage_graph(graph, recorded, [sections[1].start + 1])
    # Shards carry only their own weights.
    shards = cut_stages(graph, stages)
    assert sum(s.size_bytes for s in shards) < len(model) + 16 * 1024 * len(shards)


def test_stage_edges_describe_fan_out_and_fan_in(branchy_entry: PoolEntry) -> None:
    model = branchy_entry.variant_path("float32").read_bytes()
    graph = Graph.load(model)
    inception = parallel_sections(graph)[1]
    shards = cut_stages(graph, section_stages(graph, inception.start, inception.end))
    outputs = [graph.tensor_name(t) for t in graph.model_outputs]
    edges = stage_edges(shards, outputs)
    trunk, *middle, join = range(len(shards))
    block_input = [s.name for s in shards[trunk].outputs]
    assert len(block_input) == 1
    # The trunk reads both model inputs from the requester and fans out to 4 branches.
    assert edges[trunk][0] == (StageEdge(REQUESTER, tuple(s.name for s in shards[0].inputs)),)
    assert edges[trunk][1] == tuple(StageEdge(b, tuple(block_input)) for b in middle)
    for b in middle:
        assert edges[b][0] == (StageEdge(trunk, tuple(block_input)),)
        assert edges[b][1] == (StageEdge(join, tuple(s.name for s in shards[b].outputs)),)
    # The join reads one tensor from each branch and returns the model's outputs.
    assert [e.stage for e in edges[join][0]] == middle
    assert {name for e in edges[join][0] for name in e.tensors} == {
        s.name for s in shards[join].inputs
    }
    assert edges[join][1] == (StageEdge(REQUESTER, tuple(s.name for s in shards[join].outputs)),)
    assert set(shards[join].outputs[i].name for i in range(3)) == set(outputs)


def test_a_chain_is_the_contiguous_special_case(branchy_entry: PoolEntry) -> None:
    graph = Graph.load(branchy_entry.variant_path("int8").read_bytes())
    points = [5, 17]
    chain = cut_graph(graph, points)
    bounds = [0, *points, graph.num_operators]
    ranges = [[i for i in range(a, b) if graph.is_live(i)] for a, b in itertools.pairwise(bounds)]
    for shard, same in zip(chain, cut_stages(graph, ranges), strict=True):
        assert shard.data == same.data and shard.inputs == same.inputs


def test_bad_stage_graphs_are_refused_with_the_reason(branchy_entry: PoolEntry) -> None:
    graph = Graph.load(branchy_entry.variant_path("int8").read_bytes())
    live = [i for i in range(graph.num_operators) if graph.is_live(i)]
    towers = parallel_sections(graph)[0]
    left, right = (list(b.operators) for b in towers.branches)
    rest = [i for i in live if i not in left + right]
    cases = {
        "in stage 0 and in stage 1": [left, left + right, rest],
        "are in no stage": [left, rest],
        "produces later": [rest, left, right],
        "has no operator": [left, [], right, rest],
        "this model has operators": [left, right, [*rest, 10_000]],
    }
    for reason, stages in cases.items():
        with pytest.raises(StageGraphError, match=reason):
            cut_stages(graph, stages)


def test_float16_branches_each_get_the_weights_they_unpack(two_io_entry: PoolEntry) -> None:
    """float16 weights are unpacked by constant DEQUANTIZE operators: each branch's
    shard gets its own copies, and a stage may not name one."""
    from splitmq.converter.graph import read_model

    model = two_io_entry.variant_path("float16").read_bytes()
    graph = Graph.load(model)
    towers = parallel_sections(graph)[0]
    stages = section_stages(graph, towers.start, towers.end)
    assert_exact(model, graph, stages, seed=11)
    shards = cut_stages(graph, stages)
    for shard in shards:
        parsed = read_model(shard.data)
        assert len(parsed.subgraphs[0].operators) > len(shard.operators)  # + DEQUANTIZE
    constant = sorted(graph.constant_ops)
    with pytest.raises(StageGraphError, match="constant operator"):
        cut_stages(graph, [*stages[:-1], [*stages[-1], constant[0]]])


def test_recurrent_towers_carry_their_loops(recurrent_towers_entry: PoolEntry) -> None:
    from splitmq.converter.graph import read_model

    model = recurrent_towers_entry.variant_path("float32").read_bytes()
    graph = Graph.load(model)
    (section,) = parallel_sections(graph)
    assert len(section.branches) == 2
    stages = section_stages(graph, section.start, section.end)
    assert_exact(model, graph, stages, seed=3)
    loops = [
        s for s in cut_stages(graph, stages) if "WHILE" in {graph.op_types[i] for i in s.operators}
    ]
    assert len(loops) == 2
    for shard in loops:
        assert len(read_model(shard.data).subgraphs) == 3  # main, cond, body


def test_inspect_shows_the_parallel_sections(
    branchy_entry: PoolEntry, capsys: pytest.CaptureFixture[str]
) -> None:
    from splitmq.cli import main

    table = parallel_table(branchy_entry.manifest)
    lines = table.splitlines()
    assert "section" in lines[1] and "MFLOPs" in lines[1]
    assert len(lines) == 3 + 2 + 4 + 3
    assert main(["inspect", str(branchy_entry.path)]) == 0
    assert table in capsys.readouterr().out


def test_manifests_without_sections_still_read(branchy_entry: PoolEntry) -> None:
    data = branchy_entry.manifest.to_json()
    assert all("parallel_sections" in v for v in data["variants"].values())
    for variant in data["variants"].values():
        del variant["parallel_sections"]
    older = Manifest.from_json(json.loads(json.dumps(data)))
    assert all(v.parallel_sections == () for v in older.variants.values())
    assert "parallel_sections" not in older.to_json()["variants"]["float32"]
    assert parallel_table(older) == ""


@pytest.mark.parametrize("variant", VARIANTS)
def test_inception_v3_blocks_bit_exact(
    application_entry: Callable[[str, int], PoolEntry], variant: str
) -> None:
    entry = application_entry("InceptionV3", 75)
    model = entry.variant_path(variant).read_bytes()
    graph = Graph.load(model)
    sections = parallel_sections(graph)
    wide = [s for s in sections if len(s.branches) >= 3]
    assert len(wide) >= 9, [len(s.branches) for s in sections]  # the mixed blocks
    # The first and last blocks and the two grid reductions (three branches each).
    checked = {0, len(wide) - 1} | {i for i, s in enumerate(wide) if len(s.branches) == 3}
    for number in sorted(checked):
        section = wide[number]
        stages = section_stages(graph, section.start, section.end)
        assert_exact(model, graph, stages, 100 + number, samples=1)
