"""A small trained example: a convolutional classifier of scikit-learn's bundled digits.

Trains in seconds on CPU (8x8 grey images, 10 classes), converts with the held-out
images as calibration set and their labels, so fidelity and accuracy are real numbers.
Nothing is downloaded: ``sklearn.datasets.load_digits`` ships with scikit-learn.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from splitmq.converter.pool import PoolEntry

if TYPE_CHECKING:
    from splitmq.converter.isolated import FrontEndProcess

__all__ = ["SIZES", "load_split", "train_and_convert"]

log = logging.getLogger(__name__)
SEED = 0
SIZES = ("small", "medium", "large")
"""The classifiers of different sizes :func:`build_model` makes, for a task of three
members: ``small`` a single dense layer on the pixels (about 0.6k parameters),
``medium`` the residual CNN (about 7k), ``large`` a wider and deeper CNN (about 60k)."""


def load_split(
    test_fraction: float = 0.25,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(x_train, y_train, x_test, y_test)``: images ``(N, 8, 8, 1)`` float32 in [0, 1]."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[..., None]
    labels = digits.target.astype(np.int64)
    order = np.random.default_rng(SEED).permutation(len(images))
    split = int(len(images) * (1 - test_fraction))
    train, test = order[:split], order[split:]
    return images[train], labels[train], images[test], labels[test]


def build_model(size: str = "medium") -> Any:
    """A classifier of ``size`` (see :data:`SIZES`); ``medium`` is the residual CNN whose
    cuts have multi-tensor frontiers."""
    import keras

    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; choose from {', '.join(SIZES)}")
    keras.utils.set_random_seed(SEED)
    inputs = keras.Input((8, 8, 1), name="digit")
    if size == "small":
        x = keras.layers.Flatten(name="pixels")(inputs)
        outputs = keras.layers.Dense(10, activation="softmax", name="classes")(x)
        return keras.Model(inputs, outputs, name="digits_small")
    if size == "large":
        x = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv1")(inputs)
        y = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2")(x)
        x = keras.layers.Add(name="residual")([x, y])
        x = keras.layers.Conv2D(64, 3, padding="same", activation="relu", name="conv3")(x)
        x = keras.layers.MaxPooling2D(name="pool")(x)
        x = keras.layers.Conv2D(64, 3, padding="same", activation="relu", name="conv4")(x)
        x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
        x = keras.layers.Dense(64, activation="relu", name="hidden")(x)
        outputs = keras.layers.Dense(10, activation="softmax", name="classes")(x)
        return keras.Model(inputs, outputs, name="digits_large")
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv1")(inputs)
    y = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv2")(x)
    x = keras.layers.Add(name="residual")([x, y])
    x = keras.layers.MaxPooling2D(name="pool")(x)
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv3")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(10, activation="softmax", name="classes")(x)
    return keras.Model(inputs, outputs, name="digits_cnn")


def train(out: Path, *, epochs: int, size: str = "medium") -> Path:
    """Train the classifier on the training split and save it as ``out`` (``.keras``).

    Imports TensorFlow: :func:`train_and_convert` runs it in the converter's child process.
    """
    import keras

    x_train, y_train, _, _ = load_split()
    model = build_model(size)
    model.compile(
        optimizer=keras.optimizers.Adam(0.01),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    log.info("training the %s digits classifier (%d images, %d epochs)", size, len(x_train), epochs)
    model.fit(x_train, y_train, epochs=epochs, batch_size=64, verbose=0, shuffle=False)
    out.parent.mkdir(parents=True, exist_ok=True)
    model.save(out)
    return out


def train_and_convert(
    pool_dir: str | Path,
    *,
    name: str = "digits",
    epochs: int = 12,
    size: str = "medium",
    task: str | None = None,
    variants: tuple[str, ...] = ("float32", "float16", "int8"),
    work_dir: str | Path | None = None,
    verbose: bool = False,
    front_end: FrontEndProcess | None = None,
) -> PoolEntry:
    """Train the classifier, save it as ``.keras`` and convert it into the pool.

    Training and conversion run in the converter's child process (TensorFlow is
    imported there, not in the caller); ``verbose`` shows TensorFlow's own log output;
    ``front_end`` reuses a running one (see :func:`splitmq.converter.convert`); ``size``
    picks the classifier (:data:`SIZES`) and ``task`` names the task it is a member of.
    """
    import contextlib
    import tempfile

    from splitmq.converter.convert import convert
    from splitmq.converter.isolated import FrontEndProcess

    _, _, x_test, y_test = load_split()
    with contextlib.ExitStack() as stack:
        if front_end is None:
            front_end = stack.enter_context(FrontEndProcess(verbose=verbose))
        directory = (
            Path(work_dir)
            if work_dir is not None
            else Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="splitmq-digits-")))
        )
        directory.mkdir(parents=True, exist_ok=True)
        model_path = front_end.train_digits(
            directory / f"digits-{size}.keras", epochs=epochs, size=size
        )
        return convert(
            model_path,
            name=name,
            pool_dir=pool_dir,
            variants=variants,
            calibration=x_test,
            labels=y_test,
            task=task,
            front_end=front_end,
        )
