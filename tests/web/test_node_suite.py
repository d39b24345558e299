"""node's own test suite for the browser agent (web/test/*.test.js), run by pytest so
``make test`` runs it: the golden vectors decoded and re-encoded byte for byte, and the
agent's logic over a fake transport and runtime. It needs node only, not npm's tree."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

WEB = Path(__file__).resolve().parents[2] / "web"
NODE = shutil.which("node")


@pytest.mark.skipif(NODE is None, reason="node is not installed: no JavaScript to run")
def test_the_node_suite_passes() -> None:
    assert NODE is not None
    tests = sorted(str(p.relative_to(WEB)) for p in (WEB / "test").glob("*.test.js"))
    assert tests, "no node tests found"
    run = subprocess.run(
        [NODE, "--test", *tests], check=False, cwd=WEB, capture_output=True, text=True, timeout=240
    )
    failed = [line for line in run.stdout.splitlines() if line.startswith("not ok")]
    assert run.returncode == 0, "\n".join(failed) + "\n" + run.stdout[-4000:] + run.stderr[-2000:]
