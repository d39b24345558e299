"""Starting splitmq parts as separate processes for the integration tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def start_agent(
    broker_url: str,
    agent_id: str,
    workdir: Path,
    *extra: str,
    python: str = sys.executable,
    telemetry_period_s: float = 0.2,
) -> subprocess.Popen[bytes]:
    """``python -m splitmq.agent`` with a cache in ``workdir``, logging to ``workdir/ID.log``."""
    log = (workdir / f"{agent_id}.log").open("ab")
    return subprocess.Popen(
        [
            python,
            "-m",
            "splitmq.agent",
            "--broker",
            broker_url,
            "--id",
            agent_id,
            "--cache",
            str(workdir / agent_id),
            "--no-xnnpack",
            "--threads",
            "1",
            "--telemetry-period",
            str(telemetry_period_s),
            "--battery",
            "simulated",
            *extra,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def start_coordinator(
    broker_url: str,
    pool_dir: Path,
    workdir: Path,
    *extra: str,
    python: str = sys.executable,
    name: str = "coordinator",
) -> subprocess.Popen[bytes]:
    """``python -m splitmq coordinator`` serving ``pool_dir``, logging to ``workdir/NAME.log``."""
    log = (workdir / f"{name}.log").open("ab")
    return subprocess.Popen(
        [
            python,
            "-m",
            "splitmq",
            "coordinator",
            "--broker",
            broker_url,
            "--pool",
            str(pool_dir),
            *extra,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def stop(processes: list[subprocess.Popen[bytes]]) -> None:
    """Terminate every process still running and reap them all."""
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
