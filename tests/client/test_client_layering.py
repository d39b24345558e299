"""The client is light: importing it pulls in no TensorFlow, no TFLite runtime, no Pillow."""

from __future__ import annotations

from ..unit.test_layering import modules_after_import


def test_the_client_imports_no_heavy_parts() -> None:
    loaded = {name.split(".")[0] for name in modules_after_import("splitmq.client")}
    assert not loaded & {"tensorflow", "keras", "ai_edge_litert", "tflite_runtime", "PIL"}
    assert "splitmq.agent" not in modules_after_import("splitmq.client.infer_cli")
