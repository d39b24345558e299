"""The one process launcher (splitmq.processes): command lines, logs, stopping."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

from splitmq import processes

from ..helpers import wait_until

STUBBORN = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print('up', flush=True); time.sleep(60)"
)


def test_agent_and_coordinator_command_lines(tmp_path: Path) -> None:
    broker = ["--broker", "mqtt://127.0.0.1:1883"]
    command = processes.agent_command(
        broker, "pi-1", tmp_path / "cache", profile="rpi4", telemetry_period_s=0.5
    )
    assert command[:3] == [sys.executable, "-m", "splitmq.agent"]
    text = " ".join(command)
    for part in (
        "--broker mqtt://127.0.0.1:1883",
        "--id pi-1",
        "--profile rpi4",
        "--threads 1",
        "--battery simulated",
        "--no-xnnpack",
        "--telemetry-period 0.5",
    ):
        assert part in text, part
    assert "--no-xnnpack" not in processes.agent_command(broker, "a", tmp_path, xnnpack=True)
    assert "--battery" not in processes.agent_command(broker, "a", tmp_path, battery=None)
    coordinator = processes.coordinator_command(broker, tmp_path / "pool", extra=("--x",))
    assert coordinator[1:4] == ["-m", "splitmq", "coordinator"] and coordinator[-1] == "--x"


def test_spawn_logs_and_stop_kills_what_ignores_sigterm(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "stubborn.log"
    process = processes.spawn([sys.executable, "-c", STUBBORN], log)
    wait_until(lambda: "up" in log.read_text(), timeout_s=20, what="the child's first line")
    started = time.monotonic()
    processes.stop([process], timeout_s=0.5)
    assert process.returncode == -signal.SIGKILL
    assert time.monotonic() - started < 10


def test_kill_ends_a_stopped_process(tmp_path: Path) -> None:
    process = processes.spawn([sys.executable, "-c", "import time; time.sleep(60)"], tmp_path / "l")
    process.send_signal(signal.SIGSTOP)
    processes.kill(process)
    assert process.returncode == -signal.SIGKILL
