"""Starting splitmq's parts as processes and stopping them: one launcher for the demo,
the tests, the benchmarks and the soak script.

:func:`agent_command` and :func:`coordinator_command` build the command lines;
:func:`spawn` starts one with its output appended to a log file; :func:`stop` ends a
group (terminate, then kill what is left after a grace period) and :func:`kill` one
(SIGKILL: no goodbye, the broker fires its will). A stopped (SIGSTOP) process is sent
SIGCONT first, so it can act on what it is sent. With ``bound_to_parent`` a child gets
SIGTERM from the kernel should this process die without cleaning up
(:mod:`splitmq.orphans`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from splitmq.errors import SplitMQError
from splitmq.orphans import die_with_parent

__all__ = [
    "Process",
    "agent_command",
    "coordinator_command",
    "kill",
    "spawn",
    "start_embedded_broker",
    "stop",
]

Process = subprocess.Popen[bytes]
QUIET_ENVIRONMENT = {"PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
"""Set in every process started: logs arrive as written, TensorFlow's chatter stays out."""


def agent_command(
    broker: Sequence[str],
    agent_id: str,
    cache_dir: Path,
    *,
    profile: str | None = None,
    threads: int = 1,
    xnnpack: bool = False,
    telemetry_period_s: float | None = None,
    battery: str | None = "simulated",
    log_level: str | None = None,
    extra: Sequence[str] = (),
    python: str = sys.executable,
) -> list[str]:
    """``python -m splitmq.agent`` with ``broker``'s options (``["--broker", URL]``, or
    a secure setup's), a cache, one thread and a simulated battery by default, and
    without XNNPACK unless asked (builtin kernels: a split model's output is then
    bit-identical to the whole model's on one device)."""
    command = [python, "-m", "splitmq.agent", *broker, "--id", agent_id]
    command += ["--cache", str(cache_dir), "--threads", str(threads)]
    if battery is not None:  # None: the agent's own default
        command += ["--battery", battery]
    if profile is not None:
        command += ["--profile", profile]
    if not xnnpack:
        command.append("--no-xnnpack")
    if telemetry_period_s is not None:
        command += ["--telemetry-period", str(telemetry_period_s)]
    if log_level is not None:
        command += ["--log-level", log_level]
    return [*command, *extra]


def coordinator_command(
    broker: Sequence[str],
    pool_dir: Path,
    *,
    extra: Sequence[str] = (),
    python: str = sys.executable,
) -> list[str]:
    """``python -m splitmq coordinator`` serving ``pool_dir``."""
    return [python, "-m", "splitmq", "coordinator", *broker, "--pool", str(pool_dir), *extra]


def spawn(
    command: Sequence[str],
    log_file: Path,
    *,
    environment: Mapping[str, str] | None = None,
    without: Iterable[str] = (),
    bound_to_parent: bool = False,
) -> Process:
    """Start ``command`` with stdout and stderr appended to ``log_file``.

    Args:
        environment: the environment (default: this process's), plus
            :data:`QUIET_ENVIRONMENT`.
        without: variables to leave out of it.
        bound_to_parent: SIGTERM the child when this process dies (start it from the
            main thread: see :mod:`splitmq.orphans`).
    """
    env = dict(os.environ if environment is None else environment, **QUIET_ENVIRONMENT)
    for variable in without:
        env.pop(variable, None)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as log:  # the child keeps its own descriptor
        return subprocess.Popen(
            list(command),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=die_with_parent() if bound_to_parent else None,  # noqa: PLW1509 - prctl only
        )


def start_embedded_broker(
    log_file: Path, python: str = sys.executable, *, bound_to_parent: bool = False
) -> tuple[Process, str]:
    """``python -m splitmq.embedded_broker --port 0``; the process and its ``mqtt://`` URL.

    Raises:
        SplitMQError: it exited, or said something else than its URL first.
    """
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as log:
        process = subprocess.Popen(
            [python, "-m", "splitmq.embedded_broker", "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=log,
            env=dict(os.environ, **QUIET_ENVIRONMENT),
            preexec_fn=die_with_parent() if bound_to_parent else None,  # noqa: PLW1509 - prctl only
        )
    assert process.stdout is not None  # stdout=PIPE
    line = process.stdout.readline().decode(errors="replace").strip()
    if "mqtt://" not in line:
        stop([process])
        raise SplitMQError(f"the embedded broker did not start: {line!r} (see {log_file})")
    return process, line[line.index("mqtt://") :]


def stop(processes: Iterable[Process], timeout_s: float = 10.0) -> None:
    """Terminate every process still running, wait up to ``timeout_s`` for all of them
    together, then kill and reap those left. The order given is the order terminated."""
    processes = list(processes)
    for process in processes:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGCONT)
                process.terminate()
    deadline = time.monotonic() + timeout_s
    for process in processes:
        try:
            process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        if process.stdout is not None:
            process.stdout.close()


def kill(process: Process, timeout_s: float = 10.0) -> None:
    """SIGKILL ``process`` (paused or not) and reap it."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGCONT)
            process.kill()
    process.wait(timeout_s)
