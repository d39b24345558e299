"""``splitmq demo --task``: the three digits members (seeded from the shipped pool, so
nothing is trained) deployed side by side, the task asked as the client's battery
falls, every answer checked against the member that served it, and the report's table
and trade-off plot of every member."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.data import DIGITS, POOL_DIR, TASK_MEMBERS
from tests.demo.test_demo import nothing_left_running, run_demo

pytestmark = pytest.mark.integration


def test_the_demo_asks_a_task_as_the_battery_falls(tmp_path: Path) -> None:
    for name in (DIGITS, *TASK_MEMBERS):
        shutil.copytree(POOL_DIR / name, tmp_path / "pool" / name)
    done = run_demo(tmp_path, "--digits-only", "--no-kill", "--task", "--requests", "5")
    out = done.stdout
    assert done.returncode == 0, out + done.stderr[-3000:]
    assert "converting" not in out  # the seeded members were used as they are
    assert "task digits: 6 members and variants deployed" in out
    steps = [line for line in out.splitlines() if line.startswith("  battery ")]
    assert len(steps) == 4 and "digits-large float32 4" in steps[0], steps
    assert "digits-small" in steps[-1] and "digits-large" not in steps[-1], steps
    assert "answers equal to the unsplit member and variant that served them: all" in out
    table = out[out.index("task    member") :].splitlines()
    assert sum(line.startswith("digits  digits-") for line in table) == 6, table
    assert (tmp_path / "plots" / "task_tradeoff.png").stat().st_size > 10_000
    nothing_left_running(tmp_path)
