"""Keras recurrent models (Conv1D, LSTM, bidirectional GRU, GRU): WHILE loops.

* float32 and float16 variants are cut into 2-4 stages between top-level operators;
  the chained shards give the unsplit model's bits (LiteRT, builtin kernels);
* the manifest counts what the loops compute;
* int8 crashes TensorFlow 2.21's converter (SIGSEGV while calibrating): the crash is a
  clear error naming the variant and the signal, and the other variants are written.
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from splitmq.converter import (
    ConversionError,
    Graph,
    PoolEntry,
    convert,
    cut_graph,
    open_entry,
    run_chain,
    run_model,
)
from splitmq.converter.errors import ConverterCrashError

pytestmark = pytest.mark.slow

# Lines TensorFlow writes on its own: absl/C++ (``I0000 00:00:...``, ``W0000``), its
# pre-init notice, Python warnings, the SavedModel and MLIR chatter.
TENSORFLOW_LINE = re.compile(
    r"^[IWEF]\d{4} |absl::|oneDNN|tensorflow/|tensorflow:|UserWarning|warnings\.warn|"
    r"Interpreter is deprecated|Assets written|Reading SavedModel|SavedModel load|mlir",
    re.MULTILINE,
)


def test_tensorflow_line_pattern_matches_what_it_prints() -> None:
    """The pattern the CLI tests rely on catches the lines users complained about."""
    printed = [
        "I0000 00:00:1796410424.984220    8405 port.cc:153] oneDNN custom operations are on.",
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
        "  warnings.warn(_INTERPRETER_DELETION_WARNING)",
        "W0000 00:00:1796410429.1 8405 tf_tfl_flatbuffer_helpers.cc:364] Ignored output_format.",
    ]
    assert all(TENSORFLOW_LINE.search(line) for line in printed)
    ours = ["splitmq: exporting the Keras model to a SavedModel", "see TensorFlow's own output"]
    assert not any(TENSORFLOW_LINE.search(line) for line in ours)


@pytest.mark.parametrize("variant", ["float32", "float16"])
def test_recurrent_chain_bit_exact(recurrent_entry: PoolEntry, variant: str) -> None:
    model = recurrent_entry.variant_path(variant).read_bytes()
    graph = Graph.load(model)
    loops = [i for i, name in enumerate(graph.op_types) if name == "WHILE"]
    assert len(loops) == 4, graph.op_types
    rng = np.random.default_rng(6)
    name = graph.tensor_name(graph.model_inputs[0])
    inputs = {name: rng.uniform(0, 1, (1, 12, 3)).astype(np.float32)}
    expected = run_model(model, inputs)
    candidates = graph.candidate_cut_points()
    # Cuts right before and after every loop, then random sets of 1..3 cuts (2-4 stages).
    cut_sets = [[k] for k in candidates if k in loops or k - 1 in loops]
    choose = random.Random(8)
    cut_sets += [sorted(choose.sample(candidates, choose.randint(1, 3))) for _ in range(12)]
    for points in cut_sets:
        shards = cut_graph(graph, points)
        produced = run_chain(shards, inputs)
        for key, value in expected.items():
            assert np.array_equal(produced[key], value), f"{key} differs for cuts {points}"
        carried = [len(Graph.load(s.data).model.subgraphs) - 1 for s in shards]
        assert sum(carried) == 2 * len(loops), "each loop's cond and body, once"


def test_recurrent_manifest_counts_the_loops(recurrent_entry: PoolEntry) -> None:
    for name, variant in recurrent_entry.manifest.variants.items():
        assert variant.cuttable, variant.uncuttable_reason
        loops = [op for op in variant.operators if op.type == "WHILE"]
        assert loops and all(len(op.subgraphs) == 2 for op in loops), name
        # Each LSTM/GRU step multiplies by its kernels 12 times: far more than one step.
        assert all(op.flops > 12 * 2 * 8 * 8 and op.param_bytes > 0 for op in loops)
        total = sum(op.flops for op in variant.operators)
        assert sum(op.flops for op in loops) > total / 2
        last = max(variant.cut_points, key=lambda c: c.position)
        assert last.cumulative_flops >= sum(op.flops for op in loops)


# a crashed child's pipes are closed, not left to the garbage collector
@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
def test_an_int8_crash_names_the_variant_and_keeps_the_others(
    recurrent_model_path: Path, tmp_path: Path
) -> None:
    environment = dict(os.environ)
    with pytest.raises(ConverterCrashError) as caught:
        convert(recurrent_model_path, name="rnn", pool_dir=tmp_path, variants=("float32", "int8"))
    error = caught.value
    assert isinstance(error, ConversionError)
    assert error.crashes == {"int8": -11}
    assert error.converted == ("float32",)
    message = str(error)
    assert "int8" in message and "SIGSEGV, signal 11" in message
    assert "--variants float32 " in message
    entry = open_entry(tmp_path, "rnn")
    assert entry.path == error.path
    assert set(entry.manifest.variants) == {"float32"}
    assert entry.variant_path("float32").is_file()
    assert dict(os.environ) == environment, "the caller's environment is left as it was"


# Runs ``splitmq convert ARGS`` as the console script does, then says whether the
# caller's process imported TensorFlow (it should not: the child does).
CLI = (
    "import sys\n"
    "from splitmq.cli import main\n"
    "status = main(sys.argv[1:])\n"
    "print('tensorflow in the caller:', 'tensorflow' in sys.modules)\n"
    "sys.exit(status)\n"
)


def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("TF_")}
    return subprocess.run(
        [sys.executable, "-c", CLI, "convert", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=environment,
        check=False,
    )


def test_cli_shows_progress_not_tensorflow_logs(recurrent_model_path: Path, tmp_path: Path) -> None:
    result = _run_cli(
        str(recurrent_model_path), "--name", "rnn", "--pool", str(tmp_path), "--variants",
        "float32,int8",
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert [line for line in lines if not line.startswith("splitmq")] == []
    assert not TENSORFLOW_LINE.search(result.stdout + result.stderr)
    assert "splitmq: converting to float32" in lines
    assert any(line.startswith("splitmq: calibrating: sample 1/") for line in lines)
    assert lines[-1].startswith("splitmq convert: error: TensorFlow's converter crashed")
    assert "int8 variant (SIGSEGV, signal 11)" in lines[-1]
    assert open_entry(tmp_path, "rnn").manifest.variants.keys() == {"float32"}
    assert "tensorflow in the caller: False" in result.stdout


def test_cli_verbose_shows_tensorflow_logs(recurrent_model_path: Path, tmp_path: Path) -> None:
    result = _run_cli(
        str(recurrent_model_path), "--name", "rnn", "--pool", str(tmp_path), "--variants",
        "float32", "--verbose",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert TENSORFLOW_LINE.search(result.stderr)
    assert "splitmq: converting to float32" in result.stderr
    assert "tensorflow in the caller: False" in result.stdout


def test_a_crash_while_loading_writes_nothing(recurrent_model_path: Path, tmp_path: Path) -> None:
    """The child killed by a real signal before the model is loaded: a clear error."""
    import signal

    from splitmq.converter.isolated import FrontEndProcess

    with FrontEndProcess() as front_end:
        os.kill(front_end.ping(), signal.SIGSEGV)
        with pytest.raises(ConverterCrashError, match="SIGSEGV, signal 11") as caught:
            convert(recurrent_model_path, name="rnn", pool_dir=tmp_path, front_end=front_end)
        assert caught.value.crashes == {"loading the model": -11}
        assert "nothing was written" in str(caught.value)
        assert not any(tmp_path.iterdir())
        # The next request starts a fresh child.
        assert front_end.ping() > 0
