"""Step probes for ``bench_steps.py``: in a process started with ``SPLITMQ_STEPS`` set to
a directory (and this directory on ``PYTHONPATH``), the entry and exit of the functions a
split request goes through are timed (``time.monotonic_ns``: one clock for every process
on the machine) and written to that directory when the process exits. Without the
variable, nothing happens.

Each probe is a Python wrapper, so it adds its own cost (about a microsecond run cold)
to the step it times; the steps are for finding where the time goes, the benchmark's
end-to-end figures are measured without probes.
"""

from __future__ import annotations

import atexit
import functools
import importlib.abc
import importlib.util
import os
import sys
import time
from collections.abc import Callable
from typing import Any

DIRECTORY = os.environ.get("SPLITMQ_STEPS")
PROBES: dict[str, list[tuple[str, str]]] = {
    "splitmq.client.client": [("Client.infer", "infer")],
    "splitmq.client.engine": [("RequestEngine._on_answer", "answer")],
    "splitmq.transport.mqtt": [("MqttTransport.publish", "publish")],
    "splitmq.transport.mqtt_reader": [("PacketReader.next_packet", "read")],
    "splitmq.agent.stages": [
        ("StageWorkers.enqueue", "enqueue"),
        ("StageWorkers.process", "process"),
        ("StageWorkers._invoke", "invoke"),
    ],
    "splitmq.wire.hop": [
        ("read", "decode"),
        ("forward_parts", "encode"),
        ("result_parts", "encode"),
    ],
}
"""By module: (function, step) pairs; a step's entry is ``step>``, its exit ``step<``."""

EVENTS: list[tuple[int, str]] = []


def mark(name: str) -> None:
    """Note ``name`` now (the benchmark marks where its measured requests start and end)."""
    EVENTS.append((time.monotonic_ns(), name))


def _probe(function: Callable[..., Any], step: str) -> Callable[..., Any]:
    enter, leave, clock, events = f"{step}>", f"{step}<", time.monotonic_ns, EVENTS

    @functools.wraps(function)
    def probed(*args: Any, **kwargs: Any) -> Any:
        events.append((clock(), enter))
        try:
            return function(*args, **kwargs)
        finally:
            events.append((clock(), leave))

    return probed


def _install(module: Any, probes: list[tuple[str, str]]) -> None:
    for path, step in probes:
        owner, _, name = path.rpartition(".")
        target = getattr(module, owner) if owner else module
        setattr(target, name, _probe(getattr(target, name), step))


class _Finder(importlib.abc.MetaPathFinder):
    """Installs a module's probes right after the module is executed."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname not in PROBES:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return spec
        execute = spec.loader.exec_module

        def exec_module(module: Any) -> None:
            execute(module)
            _install(module, PROBES[fullname])

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def _write() -> None:
    assert DIRECTORY is not None
    with open(os.path.join(DIRECTORY, f"{os.getpid()}.steps"), "w") as out:
        out.write(" ".join(sys.argv) + "\n")
        out.writelines(f"{at} {name}\n" for at, name in EVENTS)


if DIRECTORY:
    sys.meta_path.insert(0, _Finder())
    atexit.register(_write)
