"""Fixtures of the fault tests: the digits model's held-out images and their exact outputs."""

from __future__ import annotations

import numpy as np
import pytest

from tests.data import digits_test

from .fleet import Reference

IMAGES = 64


@pytest.fixture(scope="session")
def reference(digits_pool: object) -> Reference:
    images: np.ndarray = digits_test()[0][:IMAGES]
    return Reference(digits_pool, images)
