"""Every kind of source converts: .h5, a SavedModel directory and a .tflite file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from splitmq.converter import Graph, PoolEntry, convert, cut_graph, run_chain, run_model
from splitmq.errors import ConversionError

from .conftest import build_two_io_model

pytestmark = [pytest.mark.slow, pytest.mark.tensorflow]


def inputs_for(graph: Graph, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    specs = [graph.tensor_spec(t) for t in graph.model_inputs]
    # A SavedModel may leave the batch dynamic (-1 in the spec): run it with batch 1.
    return {
        spec.name: rng.uniform(0, 1, [max(d, 1) for d in spec.shape]).astype(spec.dtype)
        for spec in specs
    }


def assert_cuts_exactly(entry: PoolEntry, variant: str) -> None:
    model = entry.variant_path(variant).read_bytes()
    graph = Graph.load(model)
    feeds = inputs_for(graph)
    whole = run_model(model, feeds)
    candidates = graph.candidate_cut_points()
    middle = candidates[len(candidates) // 2]
    shards = cut_graph(graph, [middle])
    chained = run_chain(shards, feeds)
    for name, value in whole.items():
        assert np.array_equal(chained[name], value), name


def test_h5_file(tmp_path: Path) -> None:
    path = tmp_path / "two_io.h5"
    build_two_io_model().save(path)  # type: ignore[attr-defined]
    entry = convert(path, name="two-io-h5", pool_dir=tmp_path / "pool", variants=["float32"])
    assert entry.manifest.variants["float32"].sha256
    assert_cuts_exactly(entry, "float32")


def test_saved_model_directory(tmp_path: Path) -> None:
    directory = tmp_path / "saved"
    build_two_io_model().export(directory)  # type: ignore[attr-defined]
    entry = convert(
        directory, name="two-io-saved", pool_dir=tmp_path / "pool", variants=["float32"]
    )
    assert_cuts_exactly(entry, "float32")


def test_tflite_file_is_one_variant(two_io_entry: PoolEntry, tmp_path: Path) -> None:
    source = two_io_entry.variant_path("int8")
    entry = convert(source, name="from-tflite", pool_dir=tmp_path / "pool", variants=["int8"])
    assert entry.variant_path("int8").read_bytes() == source.read_bytes()
    assert_cuts_exactly(entry, "int8")
    with pytest.raises(ConversionError, match="single variant"):
        convert(source, name="x", pool_dir=tmp_path / "pool", variants=["float32", "int8"])
