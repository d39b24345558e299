"""The two small models of the Plan 2 tests, kept converted in ``tests/data/pool``
(float32), so no test needs TensorFlow: ``fork`` fans a trunk out to two branches that
an agent joins (a concatenation, then the output layer); ``heads`` fans a trunk out to
two heads that are the model's outputs (the requester joins them).

Regenerate (TensorFlow needed) with::

    PYTHONPATH=$PWD .venv/bin/python -m tests.plan2.models
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np

POOL = Path(__file__).resolve().parents[1] / "data" / "pool"
WIDTH = 16


def build(name: str) -> object:
    import keras

    layers = keras.layers
    keras.utils.set_random_seed(7)
    x_in = keras.Input((WIDTH,), name="x")
    trunk = layers.Dense(32, activation="relu", name="trunk")(x_in)

    def branch(label: str) -> object:
        h = layers.Dense(32, activation="relu", name=f"{label}_1")(trunk)
        return layers.Dense(16, activation="relu", name=f"{label}_2")(h)

    left, right = branch("left"), branch("right")
    if name == "fork":
        joined = layers.Concatenate(name="join")([left, right])
        return keras.Model(x_in, layers.Dense(5, name="out")(joined), name=name)
    heads = [layers.Dense(4, name="age")(left), layers.Dense(3, name="kind")(right)]
    return keras.Model(x_in, heads, name=name)


def main() -> None:
    from splitmq.converter import convert

    rng = np.random.default_rng(3)
    calibration = rng.uniform(0, 1, (16, WIDTH)).astype(np.float32)
    with tempfile.TemporaryDirectory() as scratch:
        for name in ("fork", "heads"):
            path = Path(scratch) / f"{name}.keras"
            build(name).save(path)  # type: ignore[attr-defined]
            shutil.rmtree(POOL / name, ignore_errors=True)
            entry = convert(
                path, name=name, pool_dir=POOL, variants=("float32",), calibration=calibration
            )
            print(
                name,
                entry.version,
                [len(s.branches) for s in entry.manifest.variants["float32"].parallel_sections],
            )


if __name__ == "__main__":
    main()
