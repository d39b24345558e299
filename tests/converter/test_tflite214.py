"""Shards load and run in tflite-runtime 2.14 (its own numpy<2 environment)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from splitmq.converter import Graph, PoolEntry, cut_graph, run_chain, run_model

pytestmark = [pytest.mark.slow, pytest.mark.tensorflow]

SCRIPT = r"""
import sys, json
from pathlib import Path
import numpy as np
from tflite_runtime import interpreter as tfl

def run(path, tensors):
    it = tfl.Interpreter(model_path=str(path), num_threads=1,
        experimental_op_resolver_type=tfl.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    it.allocate_tensors()
    for d in it.get_input_details():
        it.set_tensor(d["index"], tensors[d["name"]])
    it.invoke()
    return {d["name"]: it.get_tensor(d["index"]).copy() for d in it.get_output_details()}

work = Path(sys.argv[1])
inputs = dict(np.load(work / "inputs.npz"))
names = json.loads((work / "names.json").read_text())
whole = run(work / "model.tflite", {names[k]: v for k, v in inputs.items()})
tensors = {names[k]: v for k, v in inputs.items()}
for shard in sorted(work.glob("stage-*.tflite"), key=lambda p: int(p.name.split("-")[1])):
    tensors.update(run(shard, tensors))
np.savez(work / "whole.npz", **{f"o{i}": whole[k] for i, k in enumerate(sorted(whole))})
np.savez(work / "chain.npz", **{f"o{i}": tensors[k] for i, k in enumerate(sorted(whole))})
"""


def run_in_tflite214(python: str, model: bytes, cuts: list[int], work: Path) -> None:
    import json

    graph = Graph.load(model)
    cut_graph(graph, cuts, out_dir=work)
    (work / "model.tflite").write_bytes(model)
    names = {f"i{i}": graph.tensor_name(t) for i, t in enumerate(graph.model_inputs)}
    (work / "names.json").write_text(json.dumps(names))
    (work / "run.py").write_text(SCRIPT)
    subprocess.run([python, str(work / "run.py"), str(work)], check=True, timeout=240)


@pytest.mark.parametrize("variant", ["float32", "int8"])
def test_shards_run_in_tflite_runtime_214(
    application_entry: Callable[[str, int], PoolEntry], tmp_path: Path, variant: str
) -> None:
    python = os.environ.get("SPLITMQ_TFLITE214_PYTHON")
    if not python:
        pytest.skip("SPLITMQ_TFLITE214_PYTHON is not set (make test sets it to .venv-tflite214)")
    entry = application_entry("MobileNetV3Small", 96)
    model = entry.variant_path(variant).read_bytes()
    graph = Graph.load(model)
    frontiers = graph.all_frontiers()
    multi = [k for k in sorted(frontiers) if len(frontiers[k]) > 1]
    cuts = sorted({multi[len(multi) // 3], sorted(frontiers)[len(frontiers) // 2], multi[-1]})
    rng = np.random.default_rng(4)
    spec = graph.tensor_spec(graph.model_inputs[0])
    image = rng.uniform(0, 255, spec.shape).astype(np.float32)
    np.savez(tmp_path / "inputs.npz", i0=image)
    run_in_tflite214(python, model, cuts, tmp_path)
    whole = np.load(tmp_path / "whole.npz")
    chain = np.load(tmp_path / "chain.npz")
    for key in whole.files:
        assert np.array_equal(whole[key], chain[key]), "2.14 chain differs from 2.14 unsplit"
    # Against LiteRT: the same kernels give the same numbers.
    litert = run_model(model, {spec.name: image})
    litert_chain = run_chain(cut_graph(graph, cuts), {spec.name: image})
    for index, name in enumerate(sorted(litert)):
        assert np.array_equal(litert[name], litert_chain[name])
        np.testing.assert_allclose(chain[f"o{index}"], litert[name], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("variant", ["float32", "float16"])
def test_recurrent_shards_run_in_tflite_runtime_214(
    recurrent_entry: PoolEntry, tmp_path: Path, variant: str
) -> None:
    """Shards carrying WHILE loops (LSTM, GRU) and their subgraphs load in 2.14 too."""
    python = os.environ.get("SPLITMQ_TFLITE214_PYTHON")
    if not python:
        pytest.skip("SPLITMQ_TFLITE214_PYTHON is not set (make test sets it to .venv-tflite214)")
    model = recurrent_entry.variant_path(variant).read_bytes()
    graph = Graph.load(model)
    loops = [i for i, name in enumerate(graph.op_types) if name == "WHILE"]
    cuts = [loops[0], loops[1] + 1, loops[-1]]  # a stage of two loops, one of a loop alone
    spec = graph.tensor_spec(graph.model_inputs[0])
    series = np.random.default_rng(5).uniform(0, 1, spec.shape).astype(np.float32)
    np.savez(tmp_path / "inputs.npz", i0=series)
    run_in_tflite214(python, model, cuts, tmp_path)
    whole = np.load(tmp_path / "whole.npz")
    chain = np.load(tmp_path / "chain.npz")
    litert = run_model(model, {spec.name: series})
    for index, name in enumerate(sorted(litert)):
        assert np.array_equal(whole[f"o{index}"], chain[f"o{index}"])
        np.testing.assert_allclose(chain[f"o{index}"], litert[name], rtol=1e-5, atol=1e-5)
