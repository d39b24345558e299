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


def build_branchy_model() -> object:
    """Every kind of fan-out and fan-in in one small model (one conversion per session):
    two inputs, each with its own convolution tower, joined; an Inception-style block
    (1x1, 1x1 then 3x3, 1x1 then 5x5, pool then 1x1, concatenated); three heads, each
    with convolutions of its own, giving the model's three outputs."""
    import keras

    layers = keras.layers
    keras.utils.set_random_seed(5)
    left = keras.Input((16, 16, 3), name="left")
    right = keras.Input((16, 16, 3), name="right")

    def tower(x: object, name: str) -> object:
        x = layers.Conv2D(12, 3, padding="same", activation="relu", name=f"{name}_a")(x)
        return layers.Conv2D(12, 3, padding="same", activation="relu", name=f"{name}_b")(x)

    x = layers.Concatenate(name="towers")([tower(left, "left"), tower(right, "right")])
    x = layers.Conv2D(16, 1, activation="relu", name="stem")(x)
    b1 = layers.Conv2D(8, 1, activation="relu", name="inc_1x1")(x)
    b3 = layers.Conv2D(8, 1, activation="relu", name="inc_3x3_reduce")(x)
    b3 = layers.Conv2D(8, 3, padding="same", activation="relu", name="inc_3x3")(b3)
    b5 = layers.Conv2D(4, 1, activation="relu", name="inc_5x5_reduce")(x)
    b5 = layers.Conv2D(8, 5, padding="same", activation="relu", name="inc_5x5")(b5)
    bp = layers.MaxPooling2D(3, strides=1, padding="same", name="inc_pool")(x)
    bp = layers.Conv2D(8, 1, activation="relu", name="inc_pool_proj")(bp)
    x = layers.Concatenate(name="inception")([b1, b3, b5, bp])
    x = layers.Conv2D(16, 1, activation="relu", name="neck")(x)
    outputs = []
    for name, units in (("age", 1), ("kind", 5), ("pose", 3)):
        h = layers.Conv2D(16, 3, padding="same", activation="relu", name=f"{name}_conv1")(x)
        h = layers.Conv2D(16, 3, padding="same", activation="relu", name=f"{name}_conv2")(h)
        h = layers.GlobalAveragePooling2D(name=f"{name}_pool")(h)
        outputs.append(layers.Dense(units, name=name)(h))
    return keras.Model([left, right], outputs, name="branchy")


@pytest.fixture(scope="session")
def branchy_entry(
    pool_dir: Path, tmp_path_factory: pytest.TempPathFactory, converter_front_end: Any
) -> object:
    """:func:`build_branchy_model` as a float32 + int8 pool entry."""
    from splitmq.converter import convert

    path = tmp_path_factory.mktemp("branchy") / "branchy.keras"
    build_branchy_model().save(path)  # type: ignore[attr-defined]
    rng = np.random.default_rng(6)
    calibration = {
        name: rng.uniform(0, 1, (CALIBRATION_SAMPLES, 16, 16, 3)).astype(np.float32)
        for name in ("left", "right")
    }
    return convert(
        path,
        name="branchy",
        pool_dir=pool_dir,
        variants=("float32", "int8"),
        calibration=calibration,
        front_end=converter_front_end,
    )


def build_recurrent_towers_model() -> object:
    """Two inputs, each read by a GRU (a WHILE loop once converted), joined by a head:
    each tower's shard carries its loop's subgraphs."""
    import keras

    keras.utils.set_random_seed(9)
    first = keras.Input((6, 3), name="first")
    second = keras.Input((6, 3), name="second")
    a = keras.layers.GRU(6, name="gru_first")(first)
    b = keras.layers.GRU(6, name="gru_second")(second)
    joined = keras.layers.Concatenate(name="join")([a, b])
    return keras.Model([first, second], keras.layers.Dense(2, name="head")(joined))


@pytest.fixture(scope="session")
def recurrent_towers_entry(
    pool_dir: Path, tmp_path_factory: pytest.TempPathFactory, converter_front_end: Any
) -> object:
    """:func:`build_recurrent_towers_model`, float32 only (TensorFlow 2.21 cannot
    calibrate recurrent models for int8, see :func:`build_recurrent_model`)."""
    from splitmq.converter import convert

    path = tmp_path_factory.mktemp("recurrent_towers") / "towers.keras"
    build_recurrent_towers_model().save(path)  # type: ignore[attr-defined]
    return convert(
        path,
        name="recurrent-towers",
        pool_dir=pool_dir,
        variants=("float32",),
        front_end=converter_front_end,
    )
