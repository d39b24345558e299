"""The direction between parts: wire knows no MQTT or TFLite; nothing here knows TensorFlow."""

from __future__ import annotations

import subprocess
import sys

import pytest


def modules_after_import(module: str) -> set[str]:
    code = f"import sys, {module}; print('\\n'.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return set(out.stdout.split())


FORBIDDEN = {
    "splitmq.wire": {"paho", "tensorflow", "keras", "ai_edge_litert", "tflite_runtime"},
    "splitmq.transport": {"tensorflow", "keras", "ai_edge_litert", "tflite_runtime"},
    "splitmq.broker": {"tensorflow", "keras", "paho"},
    "splitmq.embedded_broker": {"paho", "tensorflow", "keras", "numpy"},
    "splitmq.coordinator.service": {"tensorflow", "keras"},
    "splitmq.client.client": {"tensorflow", "keras", "matplotlib"},
}


@pytest.mark.parametrize("module", FORBIDDEN)
def test_module_does_not_import_heavy_parts(module: str) -> None:
    loaded = {name.split(".")[0] for name in modules_after_import(module)}
    assert not (loaded & FORBIDDEN[module])
