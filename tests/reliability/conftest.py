"""Fixtures of the fault tests: the digits model's held-out images and their exact outputs."""

from __future__ import annotations

import numpy as np
import pytest

from .fleet import Reference

IMAGES = 64


@pytest.fixture(scope="session")
def reference(digits_pool: object) -> Reference:
    from splitmq.converter.digits import load_split

    images: np.ndarray = load_split()[2][:IMAGES]
    return Reference(digits_pool, images)
