"""``splitmq demo --browser`` end to end: a headless Chromium phone in the demo's fleet
(the digits model only, to stay quick)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from splitmq.web.phone import PHONE_ID

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_the_demo_with_a_browser_phone(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "splitmq",
            "demo",
            "--browser",
            "--digits-only",
            "--requests",
            "25",
            "--workdir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    out = done.stdout
    assert done.returncode == 0, out + done.stderr[-3000:]
    assert "browser phone: headless" in out and f"id={PHONE_ID}" in out
    assert "digits: 100/100 answered" in out
    assert "equal to the unsplit model on one device: 100/100" in out
    # the phone was part of the fleet: it ran stages (the report's 'served by' column)
    assert f"{PHONE_ID}:" in out, out
    leftover = subprocess.run(
        ["pgrep", "-af", str(tmp_path)], capture_output=True, text=True, check=False
    )
    assert leftover.stdout.strip() == "", leftover.stdout
