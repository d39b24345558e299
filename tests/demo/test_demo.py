"""``splitmq demo`` end to end, as a user runs it (the digits model only, to stay quick)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("broker", ["mosquitto", "embedded"])
def test_the_demo_runs_kills_an_agent_and_checks_every_answer(tmp_path: Path, broker: str) -> None:
    args = ["--embedded-broker"] if broker == "embedded" else []
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "splitmq",
            "demo",
            "--workdir",
            str(tmp_path),
            "--digits-only",
            "--requests",
            "25",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    out = done.stdout
    assert done.returncode == 0, out + done.stderr[-3000:]
    assert f"broker: {broker}" in out
    assert "killing" in out and "re-deployed without" in out
    assert "digits: 100/100 answered" in out
    assert "equal to the unsplit model on one device: 100/100" in out
    assert "latency (ms)" in out and "J/inference" in out
    assert (tmp_path / "plots" / "latency_distribution.png").stat().st_size > 1000
    assert (tmp_path / "results.db").is_file()
    # Everything it started is stopped: no agent or coordinator is left behind.
    leftover = subprocess.run(
        ["pgrep", "-f", str(tmp_path)], capture_output=True, text=True, check=False
    )
    assert leftover.stdout.strip() == ""
