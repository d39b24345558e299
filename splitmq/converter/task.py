"""Tasks: models of the pool that do the same job, so a request may name the task.

A task's members share their inputs and the meaning of their outputs (the same labels);
they differ in size, speed and accuracy. The manifest says which task a model belongs
to (``task``) and how accurate each of its variants is (``evaluation``). No TensorFlow.
"""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

from splitmq.converter.errors import ConversionError
from splitmq.converter.pool import LATEST_FILE, PoolEntry, open_entry

__all__ = [
    "best_accuracy",
    "check_task",
    "runtime_name",
    "task_members",
]

_TASK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def check_task(task: str) -> str:
    """``task`` if it is a usable name (like a model name), else a clear error."""
    if not _TASK.match(task):
        raise ConversionError(
            f"task name {task!r} is not usable: use letters, digits, '.', '_' and '-' "
            "(at most 64, starting with a letter or digit)"
        )
    return task


def runtime_name() -> str:
    """The runtime the converter runs models with, and its version (LiteRT)."""
    try:
        return f"ai-edge-litert {metadata.version('ai-edge-litert')}"
    except metadata.PackageNotFoundError:
        return "ai-edge-litert"


def task_members(pool_dir: str | Path, task: str) -> list[PoolEntry]:
    """The latest version of every model in the pool whose manifest names ``task``,
    by name."""
    root = Path(pool_dir)
    if not root.is_dir():
        return []
    members = []
    for model_dir in sorted(p for p in root.iterdir() if (p / LATEST_FILE).is_file()):
        entry = open_entry(root, model_dir.name)
        if entry.manifest.task == task:
            members.append(entry)
    return members


def best_accuracy(entry: PoolEntry) -> tuple[float | None, str]:
    """The best measured accuracy over an entry's variants, and that variant."""
    best: tuple[float | None, str] = (None, entry.manifest.reference_variant)
    for variant in entry.manifest.variants:
        accuracy = entry.manifest.accuracy(variant)
        if accuracy is not None and (best[0] is None or accuracy > best[0]):
            best = (accuracy, variant)
    return best
