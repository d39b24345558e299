"""The bytes the JavaScript codec writes (web/src/messages.js) decode in Python.

``web/scripts/encode_samples.js`` builds every message kind and every tensor dtype from
scratch in JavaScript; each must decode with :func:`splitmq.wire.decode` to the message
its manifest describes, and Python must write exactly the same bytes for it (RFC 8949
section 4.2.1's shortest heads, and cbor2's float64 floats, on both sides). A second,
independent decoder (cbor2 alone, no splitmq code) reads the RFC 8746 tensors
(section 2.1 typed arrays, section 3.1 tag 40) back from the tags alone.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import cbor2
import numpy as np
import pytest

from splitmq.wire import decode, encode
from tests.web.golden import plain

ROOT = Path(__file__).resolve().parents[2]
NODE = shutil.which("node")

pytestmark = pytest.mark.skipif(NODE is None, reason="node is not installed: no JavaScript to run")


@pytest.fixture(scope="module")
def js_samples(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("js-samples")
    assert NODE is not None
    subprocess.run(
        [NODE, str(ROOT / "web" / "scripts" / "encode_samples.js"), str(out)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return out, json.loads((out / "manifest.json").read_text(encoding="utf-8"))


def test_the_javascript_side_wrote_every_kind_and_dtype(
    js_samples: tuple[Path, dict[str, Any]],
) -> None:
    from splitmq.wire.codec import kinds

    _, manifest = js_samples
    assert {m["kind"] for m in manifest.values()} == set(kinds())
    dtypes = {t["dtype"] for m in manifest.values() for t in m.get("tensors", [])}
    assert dtypes >= {"uint8", "int8", "int32", "float16", "float32", "float64", "bool"}
    assert dtypes >= {"uint16", "uint32", "uint64", "int16", "int64"}


def test_every_javascript_message_decodes_and_encodes_to_the_same_bytes(
    js_samples: tuple[Path, dict[str, Any]],
) -> None:
    out, manifest = js_samples
    for name, expected in manifest.items():
        data = (out / f"{name}.cbor").read_bytes()
        message = decode(data)
        assert plain(message) == expected, name
        assert encode(message).hex() == data.hex(), name


def test_request_ids_are_plain_byte_strings_and_deadlines_integers(
    js_samples: tuple[Path, dict[str, Any]],
) -> None:
    """The traps of a general CBOR library: a Uint8Array as tag 64, a large integer as a
    float, 16-bit map headers for small maps (RFC 8949 section 3.1, major types 0/2/5)."""
    out, _ = js_samples
    raw = cbor2.loads((out / "activation.cbor").read_bytes())
    assert type(raw["request_id"]) is bytes and len(raw["request_id"]) == 16
    assert type(raw["deadline_ms"]) is int and raw["deadline_ms"] >= 2**32
    data = (out / "activation.cbor").read_bytes()
    assert data[0] == 0xA0 + len(raw)  # a map of fewer than 24 entries: a one-byte head


def test_an_independent_decoder_reads_the_tensors_from_the_tags_alone(
    js_samples: tuple[Path, dict[str, Any]],
) -> None:
    out, _ = js_samples
    tags = {64: "u1", 72: "i1", 78: "<i4", 84: "<f2", 85: "<f4", 86: "<f8", 79: "<i8"}
    seen = set()
    for path in sorted(out.glob("tensor_*.cbor")):
        tensor = cbor2.loads(path.read_bytes())["tensors"][0]
        data = tensor["data"]
        assert data.tag == 40  # RFC 8746 section 3.1: [shape, typed array]
        shape, typed = data.value
        if typed.tag in tags:
            seen.add(typed.tag)
            array = np.frombuffer(typed.value, dtype=np.dtype(tags[typed.tag])).reshape(shape)
            expected = decode(path.read_bytes()).tensors[0].array  # type: ignore[attr-defined]
            assert np.array_equal(array.astype(expected.dtype), expected, equal_nan=True)
    assert seen == set(tags)
