"""``splitmq demo --keep-running`` stops everything it started, however it is stopped.

Ctrl-C (SIGINT), ``kill`` (SIGTERM) and a closed terminal (SIGHUP) stop the demo and
its fleet; SIGKILL gives the demo no chance to clean up, and its children must still
not outlive it (the kernel signals them: ``splitmq.orphans``).
"""

from __future__ import annotations

import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import wait_until

pytestmark = pytest.mark.integration

READY = "the fleet keeps running"


@pytest.fixture(scope="module")
def digits_pool(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's pool with the digits classifier, converted once for these tests."""
    from splitmq.demo.models import ensure_digits

    pool = tmp_path_factory.mktemp("demo-pool") / "pool"
    ensure_digits(pool)
    return pool


def alive(pid: int) -> bool:
    """Running (a zombie waiting for init to reap it has stopped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def children(pid: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False)
    return [int(line) for line in found.stdout.split()]


class Demo:
    """A ``splitmq demo --keep-running`` process and the lines it prints."""

    def __init__(self, workdir: Path):
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "splitmq",
                "demo",
                "--workdir",
                str(workdir),
                "--digits-only",
                "--requests",
                "1",
                "--no-kill",
                "--keep-running",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)

    def wait_for(self, text: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            self.output.append(line)
            if text in line:
                return
        raise AssertionError(f"the demo never said {text!r}:\n{''.join(self.output)}")

    def rest(self) -> str:
        while not self.lines.empty():
            self.output.append(self.lines.get())
        return "".join(self.output)


@pytest.fixture
def demo(tmp_path: Path, digits_pool: Path) -> Iterator[Demo]:
    shutil.copytree(digits_pool, tmp_path / "pool")
    running = Demo(tmp_path)
    yield running
    if running.process.poll() is None:
        running.process.kill()
        running.process.wait(10)


@pytest.mark.parametrize(
    "signum",
    [signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGKILL],
    ids=lambda signum: signum.name,
)
def test_no_process_of_the_demo_outlives_it(demo: Demo, signum: signal.Signals) -> None:
    demo.wait_for(READY, timeout_s=240)
    started = children(demo.process.pid)
    # Mosquitto (or the embedded broker), the coordinator and the three agents.
    assert len(started) == 5, started
    demo.process.send_signal(signum)
    status = demo.process.wait(60)
    wait_until(
        lambda: not any(alive(pid) for pid in started),
        timeout_s=30,
        what=f"the demo's children to stop after {signum.name}",
    )
    if signum is signal.SIGKILL:
        assert status == -signal.SIGKILL
    else:
        assert status == 0, demo.rest()
        assert f"stopping (stopped by {signum.name})" in demo.rest()
