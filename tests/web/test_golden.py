"""The golden vectors in web/test/golden/ are what the Python codec writes today.

node's tests (web/test/golden.test.js) decode and re-encode them byte for byte; if the
wire format changes, regenerate them with ``python -m tests.web.golden``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.web.golden import GOLDEN_DIR, write


def test_the_committed_golden_vectors_are_current(tmp_path: Path) -> None:
    write(tmp_path)
    fresh = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    committed = {p.name: p.read_bytes() for p in GOLDEN_DIR.iterdir()}
    assert sorted(fresh) == sorted(committed), "python -m tests.web.golden, then commit"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"stale golden vectors {stale}: run python -m tests.web.golden"


@pytest.mark.parametrize("kind", ["activation", "result", "error", "telemetry", "status"])
def test_the_vectors_cover_the_messages_an_agent_speaks(kind: str) -> None:
    manifest = json.loads((GOLDEN_DIR / "manifest.json").read_text(encoding="utf-8"))
    assert any(m["kind"] == kind for m in manifest.values())
