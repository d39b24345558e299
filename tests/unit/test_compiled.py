"""The hot modules compiled with mypyc (``splitmq/compiled.py``, ``scripts/compile.py``)
write and read what their sources do, and give way to them when asked or when stale."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from splitmq import compiled

ROOT = Path(__file__).resolve().parents[2]
IMPORT_ALL = (
    "import importlib, splitmq.compiled as c; "
    "[importlib.import_module(name) for name in c.HOT_MODULES]; "
    "print(len(c.compiled_modules()), c.describe())"
)

needs_compiled = pytest.mark.skipif(
    not compiled.compiled_modules(),
    reason="nothing is compiled here: `make compiled` (a C compiler and Python's headers)",
)


def run(*args: str, pure: bool, cwd: Path = ROOT, path: Sequence[Path] = ()) -> str:
    """``python args``: its output and errors; ``path`` first on its module path."""
    environment = dict(os.environ)
    environment.pop(compiled.PURE_VARIABLE, None)
    if pure:
        environment[compiled.PURE_VARIABLE] = "1"
    if path:
        environment["PYTHONPATH"] = os.pathsep.join(map(str, path))
    done = subprocess.run(
        [sys.executable, *args],
        check=False,
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


@needs_compiled
def test_compiled_and_pure_python_write_and_read_the_same(tmp_path: Path) -> None:
    messages = tmp_path / "messages.pickle"  # drawn by the first run, read by the second
    pure = run("-m", "tests.unit.compiled_corpus", str(messages), pure=True).splitlines()
    built = run("-m", "tests.unit.compiled_corpus", str(messages), pure=False).splitlines()
    assert pure[0] == "pure Python, SPLITMQ_PURE=1"
    assert built[0] == f"compiled (mypyc, {len(compiled.HOT_MODULES)} hot modules)"
    assert len(pure) > 1000  # every message kind, 300 drawn, hops, MQTT, the client
    different = [(a, b) for a, b in zip(pure[1:], built[1:], strict=True) if a != b]
    assert not different


def test_the_pure_switch_runs_every_hot_module_from_its_source() -> None:
    assert run("-c", IMPORT_ALL, pure=True).strip() == "0 pure Python, SPLITMQ_PURE=1"


@needs_compiled
def test_this_process_runs_every_hot_module_compiled() -> None:
    count = len(compiled.HOT_MODULES)
    assert (
        run("-c", IMPORT_ALL, pure=False).strip()
        == f"{count} compiled (mypyc, {count} hot modules)"
    )


@needs_compiled
def test_a_source_changed_since_the_build_runs_all_of_them_as_python(tmp_path: Path) -> None:
    """One stale module cannot be swapped alone (compiled modules call each other
    directly): every hot module runs from its source, and a warning says why."""
    shutil.copytree(
        ROOT / "splitmq", tmp_path / "splitmq", ignore=shutil.ignore_patterns("__pycache__")
    )
    for library in ROOT.glob("splitmq__mypyc.*"):
        shutil.copyfile(library, tmp_path / library.name)
    assert run("-c", IMPORT_ALL, pure=False, cwd=tmp_path, path=[tmp_path]).startswith(
        f"{len(compiled.HOT_MODULES)} compiled"
    )
    edited = tmp_path / "splitmq" / "wire" / "hop.py"
    edited.write_text(edited.read_text() + "\n# edited after the build\n")
    out = run("-c", IMPORT_ALL, pure=False, cwd=tmp_path, path=[tmp_path])
    assert "older than their sources (splitmq.wire.hop): running pure Python" in out
    assert "0 pure Python" in out
