"""The converter's fidelity figures say where they were measured: another architecture's
kernels give other last bits (splitmq.client.equality)."""

from __future__ import annotations

import platform
from pathlib import Path

from splitmq.converter.fidelity import measure_fidelity
from splitmq.converter.runner import make_interpreter
from splitmq.wire.manifest import Fidelity
from tests.data import digits_test

POOL = Path(__file__).parents[1] / "data" / "pool" / "digits"


def test_fidelity_names_the_architecture_runtime_and_kernels_it_was_measured_with() -> None:
    (version,) = [p for p in POOL.iterdir() if p.is_dir()]
    models = {v: (version / f"model-{v}.tflite").read_bytes() for v in ("float32", "int8")}
    images = digits_test()[0][:4]
    interpreter = make_interpreter(models["float32"])
    (source,) = [d["name"] for d in interpreter.get_input_details()]
    outputs = [d["name"] for d in interpreter.get_output_details()]
    figures = measure_fidelity(models, {source: images}, outputs)
    for fidelity in figures.values():
        assert fidelity.measured_on is not None
        machine, runtime, _version, kernels = fidelity.measured_on.split()
        assert (machine, runtime, kernels) == (platform.machine(), "litert", "builtin")
        assert Fidelity.from_json(fidelity.to_json()) == fidelity


def test_a_manifest_that_predates_it_reads_as_unknown() -> None:
    old = {"samples": 8, "top1_agreement": 1.0, "accuracy": None, "max_abs_diff": 0.0}
    assert Fidelity.from_json(old).measured_on is None
    assert "measured_on" not in Fidelity.from_json(old).to_json()
