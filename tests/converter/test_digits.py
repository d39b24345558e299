"""The trained digits example: real fidelity and accuracy numbers."""

from __future__ import annotations

import numpy as np
import pytest

from splitmq.converter import Graph, PoolEntry, cut_graph, run_chain, run_model
from splitmq.converter.digits import load_split

pytestmark = [pytest.mark.slow, pytest.mark.tensorflow]


def test_digits_accuracy_and_fidelity(digits_entry: PoolEntry) -> None:
    manifest = digits_entry.manifest
    assert manifest.labels and manifest.calibration.source == "file"
    float32 = manifest.variants["float32"].fidelity
    int8 = manifest.variants["int8"].fidelity
    assert float32 is not None and int8 is not None
    assert float32.accuracy is not None and float32.accuracy > 0.9
    assert int8.accuracy is not None and int8.accuracy > 0.85
    assert int8.top1_agreement > 0.9


def test_digits_shards_chain_exactly(digits_entry: PoolEntry) -> None:
    _, _, x_test, _ = load_split()
    for variant in ("float32", "int8"):
        model = digits_entry.variant_path(variant).read_bytes()
        graph = Graph.load(model)
        name = graph.tensor_name(graph.model_inputs[0])
        points = graph.candidate_cut_points()
        shards = cut_graph(graph, points[:: max(1, len(points) // 3)][:3])
        for image in x_test[:5]:
            inputs = {name: image[None].astype(np.float32)}
            expected = run_model(model, inputs)
            produced = run_chain(shards, inputs)
            for key, value in expected.items():
                assert np.array_equal(produced[key], value)
