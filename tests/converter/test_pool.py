"""Pool entries: content-derived versions, manifest round trip, CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from splitmq.cli import main
from splitmq.converter import Manifest, PoolEntry, convert, load_manifest, open_entry

pytestmark = [pytest.mark.slow, pytest.mark.tensorflow]


def test_manifest_round_trip(two_io_entry: PoolEntry) -> None:
    manifest = load_manifest(two_io_entry.path)
    assert manifest == two_io_entry.manifest
    assert Manifest.from_json(manifest.to_json()) == manifest
    assert set(manifest.variants) == {"float32", "float16", "int8"}
    assert [t.name for t in manifest.inputs] == [
        "serving_default_meta:0",
        "serving_default_image:0",
    ] or len(manifest.inputs) == 2
    int8 = manifest.variants["int8"]
    assert any(t.dtype == "int8" and t.scale for c in int8.cut_points for t in c.frontier)
    assert any(len(c.frontier) > 1 for c in int8.cut_points)
    assert all(c.positions["int8"] is not None for c in manifest.cut_points[1:-1])
    assert any(c.after_layer == "residual" for c in manifest.cut_points)
    assert open_entry(two_io_entry.path.parent.parent, "two-io").version == manifest.version


def test_same_model_same_version_changed_model_new_version(
    two_io_entry: PoolEntry, tmp_path: Path
) -> None:
    tflite = two_io_entry.variant_path("float32")
    calibration = {
        "image": np.full((2, 16, 16, 3), 0.5, np.float32),
        "meta": np.full((2, 5), 0.5, np.float32),
    }
    first = convert(tflite, name="again", pool_dir=tmp_path, calibration=calibration)
    second = convert(tflite, name="again", pool_dir=tmp_path, calibration=calibration)
    assert first.version == second.version
    changed = tmp_path / "changed.tflite"
    changed.write_bytes(two_io_entry.variant_path("float16").read_bytes())
    third = convert(changed, name="again", pool_dir=tmp_path, calibration=calibration)
    assert third.version != first.version


def test_conversion_is_deterministic(two_io_entry: PoolEntry, tmp_path: Path) -> None:
    """Converting the same Keras application twice gives the same version."""
    one = convert(
        "MobileNetV3Small", name="m", pool_dir=tmp_path, variants=("float32",), input_size=32
    )
    two = convert(
        "MobileNetV3Small", name="m", pool_dir=tmp_path, variants=("float32",), input_size=32
    )
    assert one.version == two.version


def test_cli_inspect_prints_table_and_plot(
    two_io_entry: PoolEntry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pool = two_io_entry.path.parent.parent
    png = tmp_path / "plot.png"
    assert main(["inspect", "two-io", "--pool", str(pool), "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert "after layer" in out and "float16" in out and "int8" in out and "residual" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["inspect", "nothing", "--pool", str(pool)]) == 2
    assert "convert it first" in capsys.readouterr().err
