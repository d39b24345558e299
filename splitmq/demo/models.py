"""The demo's models, converted into the pool once: the digits classifier and MobileNetV3Large.

A model already in the pool is reused, so a second ``splitmq demo`` starts at once.
MobileNetV3Large is built locally with ``weights=None`` (nothing is downloaded): its
predictions are meaningless, but its graph, sizes and speed are the real ones.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from splitmq.converter.pool import PoolEntry, open_entry
from splitmq.errors import SplitMQError

if TYPE_CHECKING:
    from splitmq.converter.isolated import FrontEndProcess

log = logging.getLogger(__name__)

DIGITS = "digits"
MOBILENET = "mobilenet_v3_large"
MOBILENET_SIZE = 224


def ensure_models(pool: Path, *, mobilenet: bool) -> tuple[PoolEntry, PoolEntry | None]:
    """The digits classifier, and MobileNetV3Large when asked, through one converter
    child: TensorFlow is imported once (its child starts only if a model is missing)."""
    from splitmq.converter.isolated import FrontEndProcess

    with FrontEndProcess() as front_end:
        digits = ensure_digits(pool, front_end)
        return digits, ensure_mobilenet(pool, front_end) if mobilenet else None


def ensure_digits(pool: Path, front_end: FrontEndProcess | None = None) -> PoolEntry:
    """The digits classifier, trained on scikit-learn's digits and converted (float32, int8)."""
    try:
        return open_entry(pool, DIGITS)
    except SplitMQError:
        pass
    from splitmq.converter.digits import train_and_convert

    print("converting the digits classifier (training it first, a few seconds)", flush=True)
    return train_and_convert(
        pool, name=DIGITS, epochs=12, variants=("float32", "int8"), front_end=front_end
    )


def ensure_mobilenet(pool: Path, front_end: FrontEndProcess | None = None) -> PoolEntry:
    """MobileNetV3Large at 224x224, float32."""
    try:
        return open_entry(pool, MOBILENET)
    except SplitMQError:
        pass
    from splitmq.converter import convert

    print("converting MobileNetV3Large (built with weights=None; about a minute)", flush=True)
    rng = np.random.default_rng(0)
    calibration = rng.uniform(0, 255, (4, MOBILENET_SIZE, MOBILENET_SIZE, 3)).astype(np.float32)
    return convert(
        "MobileNetV3Large",
        name=MOBILENET,
        pool_dir=pool,
        variants=("float32",),
        calibration=calibration,
        input_size=MOBILENET_SIZE,
        front_end=front_end,
    )


def mobilenet_inputs(count: int, seed: int = 1) -> np.ndarray:
    """``count`` camera-like frames: smooth random images in [0, 255], ``(N, 224, 224, 3)``."""
    rng = np.random.default_rng(seed)
    small = rng.uniform(0, 255, (count, 14, 14, 3)).astype(np.float32)
    frames = small.repeat(16, axis=1).repeat(16, axis=2)
    noise = rng.normal(0, 8, frames.shape).astype(np.float32)
    clipped: np.ndarray = np.clip(frames + noise, 0, 255).astype(np.float32)
    return clipped
