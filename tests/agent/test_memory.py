"""keep_large_buffers: glibc's thresholds are raised, and a large block is then reused
instead of being mapped afresh (checked in a fresh interpreter, not this one)."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from splitmq.agent.memory import keep_large_buffers

GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"

PROBE = """
import resource, sys
from splitmq.agent.memory import keep_large_buffers
if sys.argv[1] == "1":
    assert keep_large_buffers()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
def message():  # paho parsing a 600 kB publish holds a few copies of it at once
    copies = [bytearray(600_000) for _ in range(4)]  # zeroed: every new page is touched
    del copies
for _ in range(5):
    message()  # warm-up: glibc's own thresholds adapt to the first blocks freed
before = faults()
for _ in range(100):
    message()
print(faults() - before)
"""


@pytest.mark.skipif(not GLIBC, reason="glibc only")
def test_large_blocks_stop_faulting_in_once_the_thresholds_are_raised() -> None:
    def faults(tuned: bool) -> int:
        out = subprocess.run(
            [sys.executable, "-c", PROBE, "1" if tuned else "0"],
            capture_output=True,
            text=True,
            check=True,
        )
        return int(out.stdout.strip())

    tuned = faults(tuned=True)
    untuned = faults(tuned=False)
    assert tuned < 400  # 100 messages of 4 x 147 pages: 58,800 faults when none is reused
    assert untuned > 10 * max(tuned, 1)


@pytest.mark.skipif(not GLIBC, reason="glibc only")
def test_it_says_whether_it_took_effect_and_may_be_called_again() -> None:
    assert keep_large_buffers() is True
    assert keep_large_buffers() is True
