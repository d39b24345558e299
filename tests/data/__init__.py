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
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from splitmq.converter.pool import PoolEntry, open_entry

__all__ = [
    "DATA_DIR",
    "DIGITS",
    "DIGITS_EPOCHS",
    "DIGITS_VARIANTS",
    "POOL_DIR",
    "TASK",
    "TASK_MEMBERS",
    "digits_pool",
    "digits_test",
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


def digits_test() -> tuple[np.ndarray, np.ndarray]:
    """The held-out digits ``(x_test, y_test)`` as ``load_split()[2:]`` gives them."""
    with np.load(TEST_SPLIT) as data:
        return data["x_test"], data["y_test"]


def digits_pool(dest: Path) -> PoolEntry:
    """A copy of the shipped pool in ``dest`` (tests may add to it); its digits entry."""
    shutil.copytree(POOL_DIR, dest, dirs_exist_ok=True)
    return open_entry(dest, DIGITS)
