"""The digits pool shipped in tests/data is still what the converter produces.

The component tests of the agent, the client and the coordinator run on the shipped
files so they need no TensorFlow; this test converts the model again (``python -m
tests.data.regenerate`` does the same) and compares. With the TensorFlow the files were
made with, on the kind of machine they were made on (``tests/data/made_on.json``), the
conversion is bit-exact (same content version); elsewhere the graph (operators, tensors,
cut points) must be the same and the answers must agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import pytest

from splitmq.converter import Manifest, PoolEntry, cut, run_chain, run_model
from splitmq.converter.runner import make_interpreter
from splitmq.wire.manifest import CutPoint
from tests.data import DIGITS_VARIANTS, digits_pool, digits_test, made_on_this_kind
from tests.data.regenerate import regenerate

pytestmark = [pytest.mark.slow, pytest.mark.tensorflow]

AGREEMENT = 0.97
ACCURACY = 0.5  # 3 epochs give about 60 % (chance: 10 %)
SAMPLES = 64


@pytest.fixture(scope="module")
def entries(tmp_path_factory: pytest.TempPathFactory) -> tuple[PoolEntry, PoolEntry]:
    shipped = digits_pool(tmp_path_factory.mktemp("shipped"))
    fresh = regenerate(tmp_path_factory.mktemp("fresh"))
    return shipped, fresh


def test_the_held_out_split_is_the_one_shipped() -> None:
    from splitmq.converter.digits import load_split

    x_test, y_test = digits_test()
    _, _, expected_x, expected_y = load_split()
    np.testing.assert_array_equal(x_test, expected_x)
    np.testing.assert_array_equal(y_test, expected_y)
    assert x_test.dtype == np.float32 and x_test.shape[1:] == (8, 8, 1)


def test_the_shipped_pool_is_what_the_converter_produces(
    entries: tuple[PoolEntry, PoolEntry],
) -> None:
    shipped, fresh = entries
    hint = "the shipped test data is stale: run `python -m tests.data.regenerate`"
    assert tuple(shipped.manifest.variants) == DIGITS_VARIANTS
    if shipped.manifest.created_with == fresh.manifest.created_with and made_on_this_kind():
        assert fresh.version == shipped.version, hint
        for variant in DIGITS_VARIANTS:
            fresh_bytes = fresh.variant_path(variant).read_bytes()
            assert fresh_bytes == shipped.variant_path(variant).read_bytes(), hint
    for variant in DIGITS_VARIANTS:
        ours, theirs = shipped.manifest.variants[variant], fresh.manifest.variants[variant]
        assert [op.type for op in ours.operators] == [op.type for op in theirs.operators], hint
        assert ours.inputs == theirs.inputs and ours.outputs == theirs.outputs, hint
        if made_on_this_kind():
            assert ours.cut_points == theirs.cut_points, hint
        else:  # other weights: the same cuts, their int8 frontiers quantized otherwise
            assert unquantized(ours.cut_points) == unquantized(theirs.cut_points), hint
    assert comparable(shipped.manifest) == comparable(fresh.manifest), hint


def unquantized(cut_points: Sequence[CutPoint]) -> list[CutPoint]:
    """``cut_points`` without their frontiers' quantization parameters."""
    return [
        replace(p, frontier=tuple(replace(t, scale=None, zero_point=None) for t in p.frontier))
        for p in cut_points
    ]


def comparable(manifest: Manifest) -> Manifest:
    """The manifest without what depends on where and with which TensorFlow it was made."""
    return replace(manifest, version="", source="", created_with="", variants={})


def classes(model: bytes, images: np.ndarray) -> np.ndarray:
    interpreter = make_interpreter(model)
    outputs = [run_model(interpreter, [image[None]]) for image in images]
    return np.array([int(np.argmax(next(iter(out.values())))) for out in outputs])


def test_the_shipped_models_load_and_agree_with_a_fresh_conversion(
    entries: tuple[PoolEntry, PoolEntry],
) -> None:
    shipped, fresh = entries
    images, labels = digits_test()
    images, labels = images[:SAMPLES], labels[:SAMPLES]
    for variant in DIGITS_VARIANTS:
        model = shipped.variant_path(variant).read_bytes()
        ours = classes(model, images)
        theirs = classes(fresh.variant_path(variant).read_bytes(), images)
        assert np.mean(ours == theirs) >= AGREEMENT, variant
        assert np.mean(ours == labels) >= ACCURACY, variant
        # Cut as the component tests cut it, the chain answers as the whole model does.
        shards = cut(model, [3])
        whole = run_model(model, [images[:1]])
        chained = run_chain(shards, {shards[0].inputs[0].name: images[:1]})
        for name, array in whole.items():
            np.testing.assert_array_equal(chained[name], array)
