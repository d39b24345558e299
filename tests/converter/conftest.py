"""Session fixtures for the converter tests: each model is built and converted once."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

CALIBRATION_SAMPLES = 8


def build_two_io_model() -> object:
    """Two inputs, two outputs, a residual join and a squeeze-excite style multiply."""
    import keras

    keras.utils.set_random_seed(3)
    image = keras.Input((16, 16, 3), name="image")
    meta = keras.Input((5,), name="meta")
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv_a")(image)
    y = keras.layers.Conv2D(8, 3, padding="same", name="conv_b")(x)
    x = keras.layers.Add(name="residual")([x, y])
    squeeze = keras.layers.GlobalAveragePooling2D(keepdims=True, name="squeeze")(x)
    squeeze = keras.layers.Dense(8, activation="hard_sigmoid", name="excite")(squeeze)
    x = keras.layers.Multiply(name="scale")([x, squeeze])
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    m = keras.layers.Dense(8, activation="relu", name="meta_dense")(meta)
    joined = keras.layers.Concatenate(name="join")([x, m])
    classes = keras.layers.Dense(4, activation="softmax", name="classes")(joined)
    value = keras.layers.Dense(2, name="value")(m)
    return keras.Model([image, meta], [classes, value], name="two_io")


def build_accumulator() -> bytes:
    """A ``.tflite`` that keeps a running sum in a resource variable (not cuttable)."""
    import tensorflow as tf

    module = tf.Module()
    module.total = tf.Variable(tf.zeros([1, 4]))

    @tf.function(input_signature=[tf.TensorSpec([1, 4], tf.float32)])
    def accumulate(x: tf.Tensor) -> tf.Tensor:
        module.total.assign_add(x)
        return tf.nn.relu(module.total * 2.0) + 1.0

    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [accumulate.get_concrete_function()], module
    )
    converter.experimental_enable_resource_variables = True
    return bytes(converter.convert())


def build_recurrent_model() -> object:
    """Conv1D, LSTM, a bidirectional GRU and a GRU: four WHILE loops once converted.

    TensorFlow 2.21's converter dies with SIGSEGV calibrating this model for int8.
    """
    import keras

    keras.utils.set_random_seed(4)
    series = keras.Input((12, 3), name="series")
    x = keras.layers.Conv1D(8, 3, padding="same", activation="relu", name="conv")(series)
    x = keras.layers.LSTM(8, return_sequences=True, name="lstm")(x)
    x = keras.layers.Bidirectional(keras.layers.GRU(6, return_sequences=True), name="bigru")(x)
    x = keras.layers.GRU(8, name="gru")(x)
    classes = keras.layers.Dense(3, activation="softmax", name="head")(x)
    return keras.Model(series, classes, name="recurrent")


@pytest.fixture(scope="session")
def recurrent_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """:func:`build_recurrent_model` saved as ``.keras`` once per session."""
    path = tmp_path_factory.mktemp("recurrent") / "recurrent.keras"
    build_recurrent_model().save(path)  # type: ignore[attr-defined]
    return path


@pytest.fixture(scope="session")
def recurrent_entry(pool_dir: Path, recurrent_model_path: Path, converter_front_end: Any) -> object:
    """The recurrent model converted to float32 and float16 (int8 crashes TensorFlow)."""
    from splitmq.converter import convert

    return convert(
        recurrent_model_path,
        name="recurrent",
        pool_dir=pool_dir,
        variants=("float32", "float16"),
        front_end=converter_front_end,
    )


@pytest.fixture(scope="session")
def two_io_entry(
    pool_dir: Path, tmp_path_factory: pytest.TempPathFactory, converter_front_end: Any
) -> object:
    from splitmq.converter import convert

    model = build_two_io_model()
    path = tmp_path_factory.mktemp("two_io") / "two_io.keras"
    model.save(path)  # type: ignore[attr-defined]
    rng = np.random.default_rng(2)
    calibration = {
        "image": rng.uniform(0, 1, (CALIBRATION_SAMPLES, 16, 16, 3)).astype(np.float32),
        "meta": rng.uniform(0, 1, (CALIBRATION_SAMPLES, 5)).astype(np.float32),
    }
    return convert(
        path,
        name="two-io",
        pool_dir=pool_dir,
        calibration=calibration,
        front_end=converter_front_end,
    )


@pytest.fixture(scope="session")
def digits_entry(pool_dir: Path, converter_front_end: Any) -> object:
    from splitmq.converter.digits import train_and_convert

    return train_and_convert(pool_dir, front_end=converter_front_end)
