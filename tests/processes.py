"""Starting splitmq parts as separate processes for the integration tests: the tests'
defaults (a cache and a log per process in ``workdir``) on :mod:`splitmq.processes`."""

from __future__ import annotations

import sys
from pathlib import Path

from splitmq.processes import Process, agent_command, coordinator_command, spawn, stop

__all__ = ["start_agent", "start_coordinator", "stop"]


def start_agent(
    broker_url: str,
    agent_id: str,
    workdir: Path,
    *extra: str,
    python: str = sys.executable,
    telemetry_period_s: float = 0.2,
) -> Process:
    """``python -m splitmq.agent`` with a cache in ``workdir``, logging to ``workdir/ID.log``."""
    command = agent_command(
        ["--broker", broker_url],
        agent_id,
        workdir / agent_id,
        telemetry_period_s=telemetry_period_s,
        extra=extra,
        python=python,
    )
    return spawn(command, workdir / f"{agent_id}.log")


def start_coordinator(
    broker_url: str,
    pool_dir: Path,
    workdir: Path,
    *extra: str,
    python: str = sys.executable,
    name: str = "coordinator",
) -> Process:
    """``python -m splitmq coordinator`` serving ``pool_dir``, logging to ``workdir/NAME.log``."""
    command = coordinator_command(["--broker", broker_url], pool_dir, extra=extra, python=python)
    return spawn(command, workdir / f"{name}.log")
