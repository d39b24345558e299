"""Test data shipped with the tests, so the component tests need no TensorFlow.

``pool/`` is a model pool holding the digits classifier converted to float32 and int8
(:func:`splitmq.converter.digits.train_and_convert` with 3 epochs), and
``digits_test.npz`` holds the held-out split it was calibrated with (``x_test`` as
``(N, 8, 8, 1)`` float32, ``y_test``). Both are written by ``python -m
tests.data.regenerate``; ``tests/converter/test_shipped_data.py`` (slow tier) checks the
shipped files still agree with what the converter produces.

The pool also holds the three members of the task ``digits`` (:data:`TASK_MEMBERS`:
classifiers of three sizes, float32 and int8, converted with ``--task digits`` and the
held-out labels, so every variant has a real accuracy); ``tests/converter/test_task_data.py``
checks them the same way.

Training is bit-exact only on the same kind of machine: TensorFlow's kernels pick their
instructions when they run (AVX-512 where the CPU has it, else AVX2), and the rounding
that changes is enough to make another model (as another seed would). ``made_on.json``
records the kind the shipped files were made on (:func:`machine_kind`); the tests ask
for the same bytes only on that kind.
"""

from __future__ import annotations

import json
import platform
import shutil
from pathlib import Path

import numpy as np

from splitmq.converter.pool import PoolEntry, open_entry

__all__ = [
    "DATA_DIR",
    "DIGITS",
    "DIGITS_EPOCHS",
    "DIGITS_VARIANTS",
    "MADE_ON",
    "POOL_DIR",
    "TASK",
    "TASK_MEMBERS",
    "digits_pool",
    "digits_test",
    "machine_kind",
    "made_on",
    "made_on_this_kind",
]

DATA_DIR = Path(__file__).parent
DIGITS = "digits"
DIGITS_EPOCHS = 3
DIGITS_VARIANTS = ("float32", "int8")
POOL_DIR = DATA_DIR / "pool"
TASK = "digits"
TASK_MEMBERS = {
    "digits-small": ("small", 1),
    "digits-medium": ("medium", 8),
    "digits-large": ("large", 14),
}
"""The task's members: name -> (size for ``digits.build_model``, training epochs)."""
TEST_SPLIT = DATA_DIR / "digits_test.npz"
MADE_ON = DATA_DIR / "made_on.json"
INSTRUCTION_SETS = ("avx512f", "avx2", "avx")
"""x86's vector instruction sets the kernels choose among, widest first."""


def machine_kind() -> str:
    """This machine's architecture and, on x86, its widest vector instructions:
    ``"x86_64 avx512f"``, ``"x86_64 avx2"``, ``"aarch64"``."""
    arch = platform.machine()
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return arch
    widest = next((name for name in INSTRUCTION_SETS if name in flags), None)
    return f"{arch} {widest}" if widest else arch


def made_on() -> str | None:
    """The kind of machine the shipped files were made on (None if not recorded)."""
    try:
        return str(json.loads(MADE_ON.read_text())["machine"])
    except (OSError, ValueError, KeyError):
        return None


def made_on_this_kind() -> bool:
    """Whether this machine is of the kind the shipped files were made on."""
    return made_on() == machine_kind()


def digits_test() -> tuple[np.ndarray, np.ndarray]:
    """The held-out digits ``(x_test, y_test)`` as ``load_split()[2:]`` gives them."""
    with np.load(TEST_SPLIT) as data:
        return data["x_test"], data["y_test"]


def digits_pool(dest: Path) -> PoolEntry:
    """A copy of the shipped pool in ``dest`` (tests may add to it); its digits entry."""
    shutil.copytree(POOL_DIR, dest, dirs_exist_ok=True)
    return open_entry(dest, DIGITS)
