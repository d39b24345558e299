"""The direction between parts: wire knows no MQTT or TFLite; nothing here knows TensorFlow;
splitmq's own packages import each other only along the edges of :data:`ALLOWED`."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest


def modules_after_import(module: str) -> set[str]:
    code = f"import sys, {module}; print('\\n'.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return set(out.stdout.split())


HEAVY = {"paho", "tensorflow", "keras"}
"""paho-mqtt is an extra (the reference engine only), TensorFlow the converter's."""

FORBIDDEN = {
    "splitmq.wire": {"paho", "tensorflow", "keras", "ai_edge_litert", "tflite_runtime"},
    "splitmq.transport": {"paho", "tensorflow", "keras", "ai_edge_litert", "tflite_runtime"},
    "splitmq.mosquitto": {"tensorflow", "keras", "paho"},
    "splitmq.embedded_broker": {"paho", "tensorflow", "keras", "numpy"},
    "splitmq.coordinator.service": HEAVY,
    "splitmq.client.client": HEAVY | {"matplotlib"},
    "splitmq.cli": HEAVY,
    "splitmq.agent.cli": HEAVY,
    "splitmq.coordinator.cli": HEAVY,
    "splitmq.client.infer_cli": HEAVY,
    "splitmq.demo.cli": HEAVY,
}


@pytest.mark.parametrize("module", FORBIDDEN)
def test_module_does_not_import_heavy_parts(module: str) -> None:
    loaded = {name.split(".")[0] for name in modules_after_import(module)}
    assert not (loaded & FORBIDDEN[module])


# --- the direction between splitmq's own parts ----------------------------------------

ROOT = Path(__file__).resolve().parents[2] / "splitmq"

ALLOWED: dict[str, set[str]] = {
    # the contracts, at the bottom
    "errors": set(),
    "tables": set(),
    "compiled": set(),
    "topic_syntax": {"errors"},
    "orphans": set(),
    "recent": set(),
    "stop_signals": set(),
    "wire": {"errors", "topic_syntax"},
    "mqtt": {"errors"},
    # the MQTT engines and the brokers
    "transport": {"errors", "mqtt", "topic_syntax", "wire"},
    "embedded_broker": {"errors", "mqtt", "topic_syntax"},
    "mosquitto": {"errors", "orphans"},
    "broker_options": {"errors", "transport", "wire"},
    "secure_setup": {"mosquitto", "errors", "transport", "wire"},
    "processes": {"errors", "orphans"},
    "watch": {"errors", "transport", "wire"},
    # the parts
    "converter": {"errors", "wire"},
    "agent": {"errors", "recent", "stop_signals", "transport", "wire"},
    "coordinator": {
        "broker_options",
        "converter",
        "errors",
        "stop_signals",
        "tables",
        "transport",
        "web",
        "wire",
    },
    "client": {"agent", "broker_options", "errors", "recent", "tables", "transport", "wire"},
    # the page server for browser agents and the fleet page
    "web": {
        "agent",
        "mosquitto",
        "broker_options",
        "coordinator",
        "errors",
        "stop_signals",
        "transport",
        "wire",
    },
    # what puts the parts together
    "demo": {
        "mosquitto",
        "client",
        "converter",
        "errors",
        "orphans",
        "processes",
        "secure_setup",
        "transport",
        "watch",
        "web",
        "wire",
    },
    "cli": {"agent", "client", "converter", "coordinator", "demo", "errors", "web"},
    "__main__": {"cli"},
}
"""Which of splitmq's packages and top modules each one may import (lazily too).
``import splitmq`` (for ``__version__``) is allowed everywhere."""

NARROW: dict[tuple[str, str], set[str]] = {
    # The coordinator cuts shards with the converter's cutter and reads its pool; the
    # planner, the partition search and the service read manifests from splitmq.wire.
    ("coordinator", "converter"): {
        "splitmq.coordinator.model_pool",
        "splitmq.coordinator.deployer",
    },
    # `splitmq coordinator --web PORT` starts the page server beside the service; the
    # rest of the coordinator knows nothing of it (the page server reads the coordinator).
    ("coordinator", "web"): {"splitmq.coordinator.cli"},
}
"""An allowed edge that only these modules may take."""


def own_imports() -> set[tuple[str, str, str]]:
    """``(module, its part, the part it imports)`` for every import of splitmq by splitmq."""
    found = set()
    for file in ROOT.rglob("*.py"):
        parts = file.relative_to(ROOT.parent).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        source = parts[1]
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                pieces = name.split(".")
                if pieces[0] == "splitmq" and len(pieces) > 1 and pieces[1] != source:
                    found.add((module, source, pieces[1]))
    return found


def test_every_part_is_in_the_table() -> None:
    modules = {p.stem for p in ROOT.glob("*.py") if p.stem != "__init__"}
    packages = {p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file()}
    assert modules | packages == set(ALLOWED)


def test_imports_between_parts_follow_the_table() -> None:
    wrong = sorted(
        f"{module} imports splitmq.{target}"
        for module, source, target in own_imports()
        if target not in ALLOWED[source]
    )
    assert wrong == [], "\n".join(wrong)


def test_narrow_edges_are_taken_only_by_their_modules() -> None:
    wrong = sorted(
        f"{module} imports splitmq.{target} (only {sorted(NARROW[source, target])} may)"
        for module, source, target in own_imports()
        if (source, target) in NARROW and module not in NARROW[source, target]
    )
    assert wrong == [], "\n".join(wrong)


@pytest.mark.parametrize(
    "module",
    ["splitmq.coordinator.partition", "splitmq.coordinator.planner", "splitmq.wire.manifest"],
)
def test_planning_loads_no_converter(module: str) -> None:
    assert not {m for m in modules_after_import(module) if m.startswith("splitmq.converter")}
