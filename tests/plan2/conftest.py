"""Fixtures of the Plan 2 tests: the ``fork`` and ``heads`` models (kept converted in
tests/data/pool, see :mod:`tests.plan2.models`) cut into stage graphs, and the
in-memory fleet of the agent tests."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from splitmq.wire import LoadShard, StageEdge
from tests.agent.conftest import fleet  # noqa: F401  (the in-memory fleet fixture)
from tests.plan2.models import POOL, WIDTH


@dataclass(frozen=True)
class GraphModel:
    """A model cut around its parallel section, with one input and the exact outputs."""

    model: bytes
    shards: tuple[object, ...]  # splitmq.converter.Shard, stage graph order
    edges: tuple[tuple[tuple[StageEdge, ...], tuple[StageEdge, ...]], ...]
    inputs: dict[str, np.ndarray]
    expected: dict[str, np.ndarray]

    def load(self, stage: int, deployment: str, command_id: str) -> LoadShard:
        shard = self.shards[stage]
        sources, targets = self.edges[stage]
        return LoadShard(
            command_id=command_id,
            issuer="coordinator",
            deployment=deployment,
            stage=stage,
            digest=shard.sha256,  # type: ignore[attr-defined]
            size_bytes=shard.size_bytes,  # type: ignore[attr-defined]
            inputs=shard.inputs,  # type: ignore[attr-defined]
            outputs=shard.outputs,  # type: ignore[attr-defined]
            threads=1,
            sources=sources,
            targets=targets,
        )


def graph_model(name: str) -> GraphModel:
    from splitmq.converter import Graph, open_entry, run_model
    from splitmq.converter.branches import stage_graph
    from splitmq.converter.cutter import cut_stages, stage_edges

    entry = open_entry(POOL, name)
    model = entry.variant_path("float32").read_bytes()
    graph = Graph.load(model)
    sections = entry.manifest.variants["float32"].parallel_sections
    shards = cut_stages(graph, stage_graph(graph, sections))
    outputs = [graph.tensor_name(t) for t in graph.model_outputs]
    x = np.random.default_rng(11).uniform(0, 1, (1, WIDTH)).astype(np.float32)
    inputs = {graph.tensor_name(graph.model_inputs[0]): x}
    edges = stage_edges(shards, outputs)
    return GraphModel(model, tuple(shards), tuple(edges), inputs, run_model(model, inputs))


@pytest.fixture(scope="session")
def fork() -> GraphModel:
    """trunk -> (left, right) -> join on an agent: four stages."""
    return graph_model("fork")


@pytest.fixture(scope="session")
def heads() -> GraphModel:
    """trunk -> (age, kind), the requester joins: three stages."""
    return graph_model("heads")
