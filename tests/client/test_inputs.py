"""Fitting arrays to the tensors a model reads, and loading images and .npy files."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("PIL", reason="needs pillow: pip install -e '.[client]'")
from PIL import Image

from splitmq.client.errors import InputError
from splitmq.client.inputs import (
    ImageInput,
    dequantize,
    fit_inputs,
    fit_tensor,
    load_image,
    load_inputs,
    named_inputs,
    quantize,
    read_outputs,
    top_classes,
)
from splitmq.wire import Tensor, TensorSpec

GREY = TensorSpec("digit", (1, 8, 8, 1), "float32")
RGB = TensorSpec("image", (1, 4, 6, 3), "float32")
INT8 = TensorSpec("q", (1, 4), "int8", scale=0.5, zero_point=-3)
INT32 = TensorSpec("ids", (1, 3), "int32")


@pytest.mark.parametrize(
    ("given", "spec", "shape", "dtype"),
    [
        (np.zeros((1, 8, 8, 1), np.float32), GREY, (1, 8, 8, 1), "float32"),
        (np.zeros((8, 8, 1), np.float32), GREY, (1, 8, 8, 1), "float32"),  # batch axis
        (np.zeros((1, 8, 8, 1), np.float64), GREY, (1, 8, 8, 1), "float32"),  # cast
        (ImageInput(np.zeros((8, 8), np.float64)), GREY, (1, 8, 8, 1), "float32"),  # grey HxW
        (ImageInput(np.zeros((16, 12, 1), np.float32)), GREY, (1, 8, 8, 1), "float32"),  # resized
        (ImageInput(np.zeros((8, 8, 3), np.uint8)), GREY, (1, 8, 8, 1), "float32"),  # to grey
        (ImageInput(np.zeros((20, 30, 1), np.float32)), RGB, (1, 4, 6, 3), "float32"),  # to RGB
        (ImageInput(np.zeros((4, 6, 4), np.float32)), RGB, (1, 4, 6, 3), "float32"),  # RGBA
        (np.zeros((1, 4), np.float32), INT8, (1, 4), "int8"),  # quantized
        (np.zeros(4, np.float32), INT8, (1, 4), "int8"),  # quantized, batch axis added
        (np.zeros((1, 4), np.int8), INT8, (1, 4), "int8"),  # already quantized
        (np.array([[1, 2, 3]], np.int64), INT32, (1, 3), "int32"),
        (
            np.ones((2, 8, 8, 1), np.float32),
            TensorSpec("x", (-1, 8, 8, 1), "float32"),
            (2, 8, 8, 1),
            "float32",
        ),
    ],
)
def test_fit_tensor(
    given: np.ndarray | ImageInput, spec: TensorSpec, shape: tuple[int, ...], dtype: str
) -> None:
    tensor = fit_tensor(given, spec)
    assert tensor.name == spec.name and tensor.array.shape == shape
    assert tensor.array.dtype == np.dtype(dtype)
    assert (tensor.scale, tensor.zero_point) == (spec.scale, spec.zero_point)


def test_an_array_is_the_models_values_never_resized() -> None:
    values = np.arange(64, dtype=np.float32).reshape(8, 8, 1)
    assert np.array_equal(fit_tensor(values, GREY).array[0], values)  # only a batch axis
    for wrong in [(3, 3), (8, 8), (16, 16, 1), (1, 8, 8, 3), (64,), (1, 1, 8, 8, 1)]:
        with pytest.raises(InputError) as refused:
            fit_tensor(np.zeros(wrong, np.float32), GREY)
        shown = f"({', '.join(map(str, wrong))}{',' if len(wrong) == 1 else ''})"
        assert str(refused.value) == (
            f"digit: an array of shape {shown} does not fit the model's input, which expects "
            "shape (1, 8, 8, 1): arrays are the values the model reads and are never "
            "resized; reshape it (only a missing batch axis is added), or give an image "
            "file to have it resized"
        )
    with pytest.raises(InputError, match=r"expects shape \(N, 8, 8, 1\)"):
        fit_tensor(np.zeros((2, 8, 8, 3)), TensorSpec("digit", (-1, 8, 8, 1), "float32"))


def test_resizing_keeps_the_picture() -> None:
    image = np.zeros((16, 16, 1), np.float32)
    image[:8, :8] = 1.0  # the top left quarter is white
    fitted = fit_tensor(ImageInput(image), GREY).array[0, :, :, 0]
    assert fitted[:3, :3].min() > 0.9 and fitted[5:, 5:].max() < 0.1
    rgb = np.zeros((8, 8, 3), np.float32)
    rgb[..., 1] = 1.0  # pure green: luminance 0.587
    assert fit_tensor(ImageInput(rgb), GREY).array == pytest.approx(0.587)


@pytest.mark.parametrize(
    ("given", "spec", "complaint"),
    [
        (np.zeros((3, 3, 3, 3), np.float32), TensorSpec("x", (1, 9), "float32"), "does not fit"),
        (ImageInput(np.zeros((16, 16, 1), np.float32)), GREY, "does not fit"),  # resize off
        (ImageInput(np.zeros((4, 4, 1), np.float32)), INT32, "an image cannot feed this input"),
        (ImageInput(np.zeros((4, 4, 1, 1), np.float32)), GREY, "not (4, 4, 1, 1)"),
        (np.zeros((1, 3), np.float32), INT32, "without a quantization scale"),
        (np.array([[1, 2, 300]], np.int64), TensorSpec("x", (1, 3), "int8"), "do not fit int8"),
        (np.array([["a", "b"]]), INT8, "cannot feed"),
    ],
)
def test_fit_tensor_refuses_what_does_not_fit(
    given: np.ndarray | ImageInput, spec: TensorSpec, complaint: str
) -> None:
    with pytest.raises(InputError, match=re.escape(complaint)) as error:
        fit_tensor(given, spec, resize=False)
    assert error.value.source == spec.name


def test_quantize_rounds_clips_and_dequantize_inverts() -> None:
    q = quantize(np.array([0.0, 1.0, 1.24, -100.0, 100.0]), 0.5, -3, np.dtype("int8"))
    assert q.tolist() == [-3, -1, -1, -128, 127]
    assert dequantize(q, 0.5, -3).tolist() == [0.0, 1.0, 1.0, -62.5, 65.0]
    assert dequantize(np.array([0.25], np.float32), None, None).tolist() == [0.25]


def test_named_inputs_by_position_name_or_alone() -> None:
    a, b = TensorSpec("a", (1,), "float32"), TensorSpec("b", (1,), "float32")
    one, two = np.ones(1), np.zeros(1)
    assert list(named_inputs([one, two], [a, b])) == ["a", "b"]
    assert named_inputs({"b": two, "a": one}, [a, b])["a"] is not None
    assert list(named_inputs(one, [a])) == ["a"]
    with pytest.raises(InputError, match="give a list or a dict"):
        named_inputs(one, [a, b])
    with pytest.raises(InputError, match="missing"):
        named_inputs({"a": one, "c": two}, [a, b])
    with pytest.raises(InputError, match="2 inputs"):
        named_inputs([one], [a, b])
    tensors = fit_inputs({"b": two, "a": one}, [a, b])
    assert [t.name for t in tensors] == ["a", "b"]


def test_outputs_in_the_models_order_with_their_quantization() -> None:
    scores = Tensor("scores", np.array([[10, 40, -20]], np.int8), 0.1, 0)
    extra = Tensor("extra", np.zeros(2, np.float32))
    outputs, quantization = read_outputs([extra, scores], order=["scores", "missing"])
    assert list(outputs) == ["scores", "extra"] and quantization == {"scores": (0.1, 0)}
    best = top_classes(outputs["scores"], 2, *quantization["scores"])
    assert [c for c, _ in best] == [1, 0] and best[0][1] == pytest.approx(4.0)


SCORES = st.lists(
    st.sampled_from([0.0, -0.0, 1.0, -1.0, 2.5, np.inf, -np.inf, np.nan]) | st.floats(-3, 3),
    min_size=1,
    max_size=40,
)


@settings(max_examples=400, deadline=None)
@given(SCORES, st.integers(-1, 45))
def test_top_classes_are_a_stable_sorts_first_k(scores: list[float], k: int) -> None:
    """The partition finds what a stable sort of the negated scores finds: equal scores
    (0.0 and -0.0 among them) by class, NaNs after every number, all when k is larger."""
    values = np.array([scores], np.float32)
    order = (-values.reshape(-1)).argsort(kind="stable")[: max(k, 0)]
    best = top_classes(values, k)
    assert [c for c, _ in best] == order.tolist()
    assert np.array_equal([s for _, s in best], values.reshape(-1)[order], equal_nan=True)


def write_png(path: Path, pixels: Any, mode: str) -> Path:
    Image.fromarray(np.asarray(pixels, np.uint8), mode=mode).save(path)
    return path


def test_load_images_npy_files_and_directories(tmp_path: Path) -> None:
    grey = write_png(tmp_path / "b-grey.png", np.full((8, 8), 255), "L")
    rgb = write_png(tmp_path / "a-rgb.png", np.zeros((5, 7, 3)), "RGB")
    batch = tmp_path / "c-batch.npy"
    np.save(batch, np.arange(3 * 8 * 8, dtype=np.float32).reshape(3, 8, 8, 1))
    (tmp_path / "notes.txt").write_text("ignored in a directory")
    image = load_image(grey)
    assert image.shape == (8, 8, 1) and image.pixels.dtype == np.float32
    assert image.pixels.max() == 1.0 and image.source == "b-grey.png"
    assert load_image(grey, (-1.0, 1.0)).pixels.min() == 1.0
    assert load_image(rgb).shape == (5, 7, 3)
    labels = [name for name, _ in load_inputs([tmp_path])]
    assert labels == ["a-rgb.png", "b-grey.png", "c-batch.npy"]
    rows = load_inputs([batch, grey], batch=True)
    assert [name for name, _ in rows] == [
        "c-batch.npy[0]",
        "c-batch.npy[1]",
        "c-batch.npy[2]",
        "b-grey.png",
    ]
    assert isinstance(rows[1][1], np.ndarray) and rows[1][1].shape == (8, 8, 1)
    assert rows[1][1][0, 0, 0] == 64.0 and isinstance(rows[3][1], ImageInput)
    with pytest.raises(InputError, match="no such file"):
        load_inputs([tmp_path / "missing.png"])
    with pytest.raises(InputError, match="unknown input type"):
        load_inputs([tmp_path / "notes.txt"])
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(InputError, match="cannot read the image"):
        load_inputs([tmp_path / "broken.png"])
