"""Chained shards reproduce the unsplit .tflite bit for bit (float32 and int8)."""

from __future__ import annotations

import random
from collections.abc import Callable

import numpy as np
import pytest

from splitmq.converter import Graph, PoolEntry, cut_graph, run_chain, run_model

pytestmark = [pytest.mark.slow, pytest.mark.tensorflow]

# (architecture, input side): different topologies -- inverted residuals with
# squeeze-excite and hard-swish (MobileNetV3), plain residuals (ResNet50, MobileNetV2),
# dense concatenation (DenseNet121), swish + SE (EfficientNetB0).
ARCHITECTURES = [
    ("MobileNetV3Large", 224),
    ("MobileNetV3Small", 96),
    ("ResNet50", 96),
    ("MobileNetV2", 96),
    ("DenseNet121", 96),
    ("EfficientNetB0", 96),
]
CUT_SETS_PER_MODEL = 4


def random_inputs(graph: Graph, seed: int, high: float = 255.0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    inputs = {}
    for t in graph.model_inputs:
        spec = graph.tensor_spec(t)
        inputs[spec.name] = rng.uniform(0, high, spec.shape).astype(spec.dtype)
    return inputs


def cut_sets(graph: Graph, seed: int, count: int) -> list[list[int]]:
    """``count`` random cut sets of 1..5 cut points (2..6 stages); at least one set
    uses only multi-tensor frontiers and one only single-tensor frontiers."""
    rng = random.Random(seed)
    frontiers = graph.all_frontiers()
    candidates = sorted(frontiers)
    multi = [k for k in candidates if len(frontiers[k]) > 1]
    single = [k for k in candidates if len(frontiers[k]) == 1]
    sets = []
    if multi:
        sets.append(sorted(rng.sample(multi, min(len(multi), rng.randint(1, 5)))))
    if single:
        sets.append(sorted(rng.sample(single, min(len(single), rng.randint(1, 5)))))
    while len(sets) < count:
        sets.append(sorted(rng.sample(candidates, min(len(candidates), rng.randint(1, 5)))))
    return sets


def assert_chain_exact(model: bytes, inputs: dict[str, np.ndarray], seed: int) -> int:
    graph = Graph.load(model)
    expected = run_model(model, inputs)
    multi_frontiers = 0
    for points in cut_sets(graph, seed, CUT_SETS_PER_MODEL):
        shards = cut_graph(graph, points)
        assert len(shards) == len(points) + 1
        multi_frontiers += sum(len(s.inputs) > 1 for s in shards)
        produced = run_chain(shards, inputs)
        for name, value in expected.items():
            assert np.array_equal(produced[name], value), f"{name} differs for cuts {points}"
        # Shards carry only their own weights.
        assert sum(s.size_bytes for s in shards) < len(model) * 1.05 + 64 * 1024 * len(shards)
    return multi_frontiers


@pytest.mark.parametrize(("architecture", "size"), ARCHITECTURES)
@pytest.mark.parametrize("variant", ["float32", "int8"])
def test_keras_applications_chain_bit_exact(
    application_entry: Callable[[str, int], PoolEntry], architecture: str, size: int, variant: str
) -> None:
    entry = application_entry(architecture, size)
    model = entry.variant_path(variant).read_bytes()
    graph = Graph.load(model)
    multi = assert_chain_exact(
        model, random_inputs(graph, seed=size), seed=hash(architecture) % 1000
    )
    assert multi > 0, "no cut set exercised a multi-tensor frontier"


@pytest.mark.parametrize("variant", ["float32", "float16", "int8"])
def test_two_inputs_two_outputs_chain_bit_exact(two_io_entry: PoolEntry, variant: str) -> None:
    model = two_io_entry.variant_path(variant).read_bytes()
    graph = Graph.load(model)
    assert len(graph.model_inputs) == 2 and len(graph.model_outputs) == 2
    inputs = random_inputs(graph, seed=5, high=1.0)
    assert_chain_exact(model, inputs, seed=7)
    # Every possible single cut, too: the model is small.
    expected = run_model(model, inputs)
    for point in graph.candidate_cut_points():
        produced = run_chain(cut_graph(graph, [point]), inputs)
        for name, value in expected.items():
            assert np.array_equal(produced[name], value), f"{name} differs at cut {point}"


def test_xnnpack_chain_matches_xnnpack_unsplit(
    application_entry: Callable[[str, int], PoolEntry],
) -> None:
    """With the XNNPACK delegate on both sides the chain is bit-exact as well."""
    entry = application_entry("MobileNetV3Small", 96)
    for variant in ("float32", "int8"):
        model = entry.variant_path(variant).read_bytes()
        graph = Graph.load(model)
        inputs = random_inputs(graph, seed=11)
        expected = run_model(model, inputs, xnnpack=True)
        for points in cut_sets(graph, 3, 3):
            produced = run_chain(cut_graph(graph, points), inputs, xnnpack=True)
            for name, value in expected.items():
                assert np.array_equal(produced[name], value)


def test_shards_keep_names_and_prune(application_entry: Callable[[str, int], PoolEntry]) -> None:
    from splitmq.converter.graph import read_model

    entry: PoolEntry = application_entry("MobileNetV3Small", 96)
    model = entry.variant_path("float32").read_bytes()
    graph = Graph.load(model)
    frontiers = graph.all_frontiers()
    multi = next(k for k in sorted(frontiers) if len(frontiers[k]) > 1)
    shards = cut_graph(graph, [multi])
    assert [t.name for t in shards[0].outputs] == [graph.tensor_name(t) for t in frontiers[multi]]
    assert {t.name for t in shards[1].inputs} == {graph.tensor_name(t) for t in frontiers[multi]}
    assert shards[0].inputs[0].name == graph.tensor_name(graph.model_inputs[0])
    original = read_model(model)
    for shard in shards:
        parsed = read_model(shard.data)
        sub = parsed.subgraphs[0]
        assert len(sub.operators) == shard.end - shard.start
        assert len(parsed.operatorCodes) <= len(original.operatorCodes)
        used_buffers = {t.buffer for t in sub.tensors} | {m.buffer for m in parsed.metadata}
        assert used_buffers | {0} == set(range(len(parsed.buffers)))
        referenced = set(sub.inputs) | set(sub.outputs)
        for op in sub.operators:
            referenced |= {t for t in op.inputs if t >= 0} | set(op.outputs)
        assert referenced == set(range(len(sub.tensors)))
    assert shards[0].size_bytes + shards[1].size_bytes < len(model) + 64 * 1024
