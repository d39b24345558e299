"""Bad input gives a clear error that says what to do."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from splitmq.converter import (
    CalibrationError,
    CutPointError,
    ModelReadError,
    PoolEntry,
    convert,
    cut,
    load_manifest,
)
from splitmq.errors import ConversionError
from tests.converter.conftest import build_accumulator


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ModelReadError, match="cannot read"):
        cut(tmp_path / "missing.tflite", [1])
    garbage = tmp_path / "garbage.tflite"
    garbage.write_bytes(b"not a model at all")
    with pytest.raises(ModelReadError, match="TFL3"):
        cut(garbage, [1])
    with pytest.raises(ModelReadError, match="cannot read the manifest"):
        load_manifest(tmp_path)


@pytest.mark.tensorflow  # the keras.applications names it lists
def test_unsupported_format(tmp_path: Path) -> None:
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"\x08\x01")
    with pytest.raises(ModelReadError, match=r"unsupported model format '\.onnx'"):
        convert(onnx, name="m", pool_dir=tmp_path)
    with pytest.raises(ModelReadError, match=r"neither a file nor a keras\.applications"):
        convert("NoSuchNet", name="m", pool_dir=tmp_path)
    with pytest.raises(ConversionError, match="unknown variants"):
        convert(onnx, name="m", pool_dir=tmp_path, variants=("int4",))


@pytest.mark.slow
@pytest.mark.tensorflow
def test_calibration_of_the_wrong_shape(two_io_entry: PoolEntry, tmp_path: Path) -> None:
    tflite = two_io_entry.variant_path("float32")
    with pytest.raises(CalibrationError, match="2 inputs"):
        convert(tflite, name="x", pool_dir=tmp_path, calibration=np.zeros((4, 16, 16, 3)))
    bad = {"image": np.zeros((4, 15, 16, 3)), "meta": np.zeros((4, 5))}
    with pytest.raises(
        CalibrationError, match=r"has shape \(4, 15, 16, 3\).*needs \(N, 16, 16, 3\)"
    ):
        convert(tflite, name="x", pool_dir=tmp_path, calibration=bad)
    path = tmp_path / "calibration.npy"
    np.save(path, np.zeros((4, 3)))
    with pytest.raises(CalibrationError):
        convert(tflite, name="x", pool_dir=tmp_path, calibration=path)


@pytest.mark.slow
@pytest.mark.tensorflow
def test_cut_points_out_of_range(two_io_entry: PoolEntry) -> None:
    model = two_io_entry.variant_path("float32").read_bytes()
    n = len(two_io_entry.manifest.variants["float32"].operators)
    with pytest.raises(CutPointError, match=f"between 1 and {n - 1}"):
        cut(model, [n])
    with pytest.raises(CutPointError, match="out of range"):
        cut(model, [0])
    with pytest.raises(CutPointError, match="strictly increasing"):
        cut(model, [3, 2])


@pytest.mark.slow
@pytest.mark.tensorflow
def test_float16_cut_inside_weight_preparation_is_refused(two_io_entry: PoolEntry) -> None:
    variant = two_io_entry.manifest.variants["float16"]
    constant = [op.index for op in variant.operators if op.constant]
    assert constant, "a float16 variant dequantizes its weights"
    model = two_io_entry.variant_path("float16").read_bytes()
    if constant[0] == 0 and len(constant) > 1:
        with pytest.raises(CutPointError, match="only constant operators"):
            cut(model, [1])


@pytest.mark.slow
@pytest.mark.tensorflow
def test_an_uncuttable_model_still_converts_marked_so(tmp_path: Path) -> None:
    path = tmp_path / "accumulator.tflite"
    path.write_bytes(build_accumulator())
    entry = convert(path, name="acc", pool_dir=tmp_path, calibration=np.ones((2, 4), np.float32))
    variant = entry.manifest.variants["float32"]
    assert not variant.cuttable and not variant.cut_points
    assert "resource variables" in (variant.uncuttable_reason or "")
