"""The report's PNG plots: written when there is data, valid PNGs, with something drawn."""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from splitmq.client import plots
from splitmq.client.kpi import ReportInputs, telemetry_in_span
from tests.client.records_fixtures import (
    BASE_MS,
    Hop,
    failed_record,
    ok_record,
    sample_records,
    sample_telemetry,
)
from tests.helpers import needs

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's header, after checking its signature."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def assert_drawn(path: Path) -> None:
    """A real plot: a sizeable PNG with many colours, not a blank canvas."""
    from matplotlib.image import imread

    width, height = png_size(path)
    assert width >= 500 and height >= 400
    assert path.stat().st_size > 10_000
    pixels = imread(path)
    colours = np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0)
    assert len(colours) > 50
    assert (pixels[..., :3] < 0.5).mean() > 0.005  # text, axes and marks, not just white


@pytest.mark.slow  # seconds of work: the full tier runs it (make test)
@needs("matplotlib", "client")
def test_every_plot_of_a_full_run(tmp_path: Path) -> None:
    records = sample_records()
    telemetry = telemetry_in_span(sample_telemetry(), records)
    inputs = ReportInputs(tuple(records), tuple(telemetry), label="demo")
    written = plots.write_plots(inputs, tmp_path / "plots")
    assert [p.name for p in written] == [
        plots.LATENCY_DISTRIBUTION,
        plots.STAGE_BREAKDOWN,
        plots.LATENCY_OVER_TIME,
        plots.BATTERY,
    ]
    for path in written:
        assert path.parent == tmp_path / "plots"
        assert_drawn(path)


@needs("matplotlib", "client")
def test_only_the_plots_with_data(tmp_path: Path) -> None:
    failed = [
        failed_record("f-0", BASE_MS, BASE_MS + 50, "overloaded"),
        failed_record("f-1", BASE_MS + 10, BASE_MS + 300, "deadline"),
    ]
    written = plots.write_plots(ReportInputs(tuple(failed)), tmp_path)
    assert [p.name for p in written] == [plots.LATENCY_OVER_TIME]
    assert_drawn(written[0])
    assert plots.write_plots(ReportInputs(()), tmp_path / "empty") == []


@needs("matplotlib", "client")
def test_stage_breakdown_with_a_clock_offset(tmp_path: Path) -> None:
    record = ok_record("r", BASE_MS, [Hop("a", 5, 0, 10), Hop("b", -15, 1, 10)], 3)
    written = plots.write_plots(ReportInputs((record,)), tmp_path)
    assert plots.STAGE_BREAKDOWN in [p.name for p in written]
    assert_drawn(tmp_path / plots.STAGE_BREAKDOWN)


@pytest.mark.parametrize(
    "module",
    [
        "splitmq.client.plots",
        "splitmq.client.kpi",
        "splitmq.client.results_db",
        "splitmq.client.report_cli",
    ],
)
def test_importing_needs_no_matplotlib(module: str) -> None:
    code = f"import sys, {module}; print('\\n'.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert "matplotlib" not in {name.split(".")[0] for name in out.stdout.split()}
