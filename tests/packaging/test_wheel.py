"""The wheel (``hatch_build.py``): built with a C compiler, it carries the hot modules
compiled and runs them; built without one, it is pure Python and says why; asked to
compile where it cannot, the build fails with the reason. Each wheel is built by pip from
this checkout (without build isolation: nothing is downloaded) and run unpacked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from splitmq import compiled
from tests.unit.test_compiled import IMPORT_ALL, run

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
NO_COMPILER = "/nonexistent/cc"
SWITCH = "SPLITMQ_COMPILE"


def pip_wheel(out: Path, **environment: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in (SWITCH, "CC", "PYTHONPATH")}
    env.update(environment)
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    return subprocess.run(
        [*command, "--verbose", "--wheel-dir", str(out), str(ROOT)],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )


def built(out: Path, **environment: str) -> tuple[Path, str]:
    """The one wheel pip wrote into ``out`` and pip's output."""
    done = pip_wheel(out, **environment)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (wheel,) = out.glob("*.whl")
    return wheel, done.stdout + done.stderr


def unpacked(wheel: Path, into: Path) -> Path:
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(into)
    return into


def run_from(site: Path, *args: str, pure: bool = False) -> str:
    """``python args`` importing splitmq from ``site`` (the tests from this checkout)."""
    return run(*args, pure=pure, cwd=site.parent, path=[site, ROOT])


def wheel_tag(wheel: Path) -> str:
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/WHEEL")]
        lines = archive.read(name).decode().splitlines()
    return next(line.split(": ", 1)[1] for line in lines if line.startswith("Tag: "))


@pytest.fixture(scope="module")
def compiled_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not compiled.compiled_modules():
        pytest.skip("no compiled build here: `make compiled` (a C compiler and Python's headers)")
    wheel, _ = built(tmp_path_factory.mktemp("compiled"), **{SWITCH: "1"})
    return wheel


def test_a_wheel_built_with_a_compiler_runs_its_hot_modules_compiled(
    compiled_wheel: Path, tmp_path: Path
) -> None:
    python = f"cp{sys.version_info.major}{sys.version_info.minor}"
    tag = wheel_tag(compiled_wheel)
    assert tag.startswith(f"{python}-{python}-") and not tag.endswith("-any")  # this platform
    site = unpacked(compiled_wheel, tmp_path / "site")
    # the record is of the sources the wheel carries: the ones compiled
    record = json.loads((site / "splitmq" / "compiled.json").read_text())
    assert record == compiled.source_digests()
    count = len(compiled.HOT_MODULES)
    out = run_from(site, "-c", IMPORT_ALL + "; import splitmq; print(splitmq.__file__)")
    assert out.splitlines() == [
        f"{count} compiled (mypyc, {count} hot modules)",
        str(site / "splitmq" / "__init__.py"),
    ]


def test_the_compiled_wheel_writes_and_reads_what_pure_python_does(
    compiled_wheel: Path, tmp_path: Path
) -> None:
    site = unpacked(compiled_wheel, tmp_path / "site")
    messages = tmp_path / "messages.pickle"  # drawn by the first run, read by the second
    pure = run_from(site, "-m", "tests.unit.compiled_corpus", str(messages), pure=True)
    built_lines = run_from(site, "-m", "tests.unit.compiled_corpus", str(messages))
    pure_lines, compiled_lines = pure.splitlines(), built_lines.splitlines()
    assert compiled_lines[0] == f"compiled (mypyc, {len(compiled.HOT_MODULES)} hot modules)"
    assert len(pure_lines) > 1000
    assert pure_lines[1:] == compiled_lines[1:]


def test_without_a_compiler_the_wheel_is_pure_python_and_says_why(tmp_path: Path) -> None:
    wheel, output = built(tmp_path / "out", CC=NO_COMPILER)
    assert wheel_tag(wheel) == "py3-none-any"
    assert f"a pure-Python wheel (no C compiler ({NO_COMPILER}))" in output
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    assert "splitmq/compiled.py" in names
    assert not [n for n in names if n.endswith(".so") or n == "splitmq/compiled.json"]
    site = unpacked(wheel, tmp_path / "site")
    assert run_from(site, "-c", IMPORT_ALL).strip() == "0 pure Python"


def test_compiling_on_demand_where_it_cannot_fails_with_the_reason(tmp_path: Path) -> None:
    done = pip_wheel(tmp_path, CC=NO_COMPILER, **{SWITCH: "1"})
    assert done.returncode != 0
    assert f"{SWITCH}=1 but no C compiler ({NO_COMPILER})" in done.stdout + done.stderr
    assert not list(tmp_path.glob("*.whl"))


def test_a_pure_wheel_on_demand_where_a_compiler_is_at_hand(tmp_path: Path) -> None:
    wheel, output = built(tmp_path, **{SWITCH: "0"})
    assert wheel_tag(wheel) == "py3-none-any"
    assert f"a pure-Python wheel ({SWITCH}=0)" in output
