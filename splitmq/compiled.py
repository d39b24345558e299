"""splitmq's hot path compiled: which modules, whether they run compiled, and the way
back to pure Python.

The modules every hop of a request runs through (the MQTT engine, the wire's fast
paths, an agent's stage workers, the client's engine) can be compiled into C extensions
with mypyc (``make compiled``, or ``python scripts/compile.py``): the same source, which
mypy already checks, run without the interpreter's dispatch. Nothing else changes. Where
nothing is compiled (a Raspberry Pi that installs ``splitmq[agent]`` without a compiler),
the same modules run as Python and write the same bytes (``tests/unit/test_compiled.py``).

The build records each source's digest beside the extensions (:data:`MANIFEST`). When
``splitmq`` is imported, the extensions are used only if every hot module's source is
still the one they were built from: a source edited since runs as Python, all of them
with it (compiled modules call each other directly, so one cannot be swapped alone), with
one warning. ``SPLITMQ_PURE=1`` in the environment runs pure Python on purpose.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import json
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

__all__ = [
    "HOT_MODULES",
    "MANIFEST",
    "built",
    "compiled_modules",
    "describe",
    "source",
    "source_digests",
    "stale",
]

HOT_MODULES: tuple[str, ...] = (
    "splitmq.mqtt.packets",
    "splitmq.transport.channel",
    "splitmq.transport.payload",
    "splitmq.transport.mqtt_reader",
    "splitmq.transport.mqtt",
    "splitmq.transport.paho_transport",
    "splitmq.wire.cbor",
    "splitmq.wire.tensors",
    "splitmq.wire.hop",
    "splitmq.wire.hop_layouts",
    "splitmq.wire.hop_writer",
    "splitmq.agent.stages",
    "splitmq.agent.stage_queue",
    "splitmq.agent.requests",
    "splitmq.agent.energy",
    "splitmq.agent.link",
    "splitmq.agent.runtime",
    "splitmq.client.engine",
    "splitmq.client.client",
    "splitmq.client.inputs",
    "splitmq.client.request_state",
    "splitmq.client.routes",
    "splitmq.client.spread",
    "splitmq.coordinator.planner",
)
"""The modules compiled, by name (with the paho engine: it shares the MQTT engine's base
class, which an interpreted class cannot extend once compiled)."""

PACKAGE = Path(__file__).resolve().parent
MANIFEST = PACKAGE / "compiled.json"
"""Written by the build: each hot module's source digest when it was compiled."""
PURE_VARIABLE = "SPLITMQ_PURE"
_SUFFIXES = tuple(importlib.machinery.EXTENSION_SUFFIXES)


def source_digests() -> dict[str, str]:
    """Each hot module's source, by name: its SHA-256."""
    return {name: hashlib.sha256(source(name).read_bytes()).hexdigest() for name in HOT_MODULES}


def built(name: str) -> bool:
    """Whether hot module ``name`` has an extension here (current or not)."""
    return _origin(name).endswith(_SUFFIXES)


def compiled_modules() -> tuple[str, ...]:
    """The hot modules this process runs compiled (imported or not yet)."""
    found = []
    pure = any(isinstance(finder, _SourcesFirst) for finder in sys.meta_path)
    for name in HOT_MODULES:
        module = sys.modules.get(name)
        if module is not None:
            origin = getattr(module, "__file__", None)
        else:
            origin = "" if pure else _origin(name)
        if origin and origin.endswith(_SUFFIXES):
            found.append(name)
    return tuple(found)


def describe() -> str:
    """How this process runs the hot modules, for a benchmark's machine line."""
    count = len(compiled_modules())
    if count == len(HOT_MODULES):
        return f"compiled (mypyc, {count} hot modules)"
    if count:
        return f"partly compiled ({count} of {len(HOT_MODULES)} hot modules)"
    why = f", {PURE_VARIABLE}=1" if os.environ.get(PURE_VARIABLE) else ""
    return f"pure Python{why}"


def choose() -> None:
    """Run the hot modules as Python when asked to, or when their extensions are stale
    (called by ``splitmq/__init__.py`` before any of them is imported)."""
    if os.environ.get(PURE_VARIABLE):
        _prefer_sources()
        return
    if not any(built(name) for name in HOT_MODULES):
        return  # nothing compiled here
    changed = stale()
    if changed:
        warnings.warn(
            f"splitmq's compiled modules are older than their sources ({', '.join(changed)}): "
            "running pure Python; `make compiled` rebuilds them",
            RuntimeWarning,
            stacklevel=3,
        )
        _prefer_sources()


def source(name: str) -> Path:
    """Hot module ``name``'s source file."""
    return PACKAGE.joinpath(*name.split(".")[1:]).with_suffix(".py")


def _origin(name: str) -> str:
    """Where ``name`` would be imported from (found without importing it)."""
    finder = importlib.machinery.FileFinder(
        str(source(name).parent),
        (importlib.machinery.ExtensionFileLoader, importlib.machinery.EXTENSION_SUFFIXES),
        (importlib.machinery.SourceFileLoader, importlib.machinery.SOURCE_SUFFIXES),
    )
    spec = finder.find_spec(name)
    return (spec.origin or "") if spec is not None else ""


def stale() -> list[str]:
    """The hot modules whose source differs from the one compiled (all, without a record)."""
    try:
        built = json.loads(MANIFEST.read_text())
    except (OSError, ValueError):
        return list(HOT_MODULES)
    digests = source_digests()
    return [name for name in HOT_MODULES if built.get(name) != digests[name]]


class _SourcesFirst:
    """Finds the hot modules' sources, passing by their extensions."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> Any:
        if fullname not in HOT_MODULES:
            return None
        location = str(source(fullname))
        return importlib.util.spec_from_file_location(fullname, location)


def _prefer_sources() -> None:
    """Ahead of the finder that would find the extensions (after any a process put
    first: a profiler's, say, which then gets the sources' specs)."""
    if any(isinstance(finder, _SourcesFirst) for finder in sys.meta_path):
        return
    path_finder = importlib.machinery.PathFinder  # in sys.meta_path as the class itself
    at = next((i for i, f in enumerate(sys.meta_path) if f is path_finder), 0)
    sys.meta_path.insert(at, _SourcesFirst())
