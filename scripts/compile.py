"""Compile splitmq's hot modules (``splitmq.compiled.HOT_MODULES``) with mypyc, in place.

    python scripts/compile.py            # build them (about a minute on two cores)
    python scripts/compile.py --clean    # remove them: pure Python again
    python scripts/compile.py --check    # say whether they are built and current
    python scripts/compile.py --if-stale # build unless they are current (make compiled)

The extensions are written beside their sources (git-ignored), with the record of the
sources they were built from (``splitmq/compiled.json``): ``import splitmq`` uses them
only while every source is unchanged (``splitmq/compiled.py``). The compiler's own
output goes to ``.cache/compile.log``; what is printed is one line per module. Without
a C compiler or Python's headers, it says so and builds nothing (exit 0: pure Python
runs the same), unless ``--require``. A wheel's build (``hatch_build.py``) compiles the
same modules into the wheel with :func:`build`.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ["SPLITMQ_PURE"] = "1"  # this process reads the sources, whatever is built

from splitmq import compiled  # noqa: E402 (after the path and the switch)
from splitmq.tables import format_table  # noqa: E402

LOG = ROOT / ".cache" / "compile.log"
GROUP = "splitmq"
"""mypyc's shared library: ``splitmq__mypyc.*.so`` beside the package."""


def extensions() -> list[Path]:
    """Every extension a build writes (the modules' and the group's shared library)."""
    found = [
        path
        for name in compiled.HOT_MODULES
        for path in compiled.source(name).parent.glob(f"{compiled.source(name).stem}.*.so")
    ]
    return found + list(ROOT.glob(f"{GROUP}__mypyc.*.so"))


def clean() -> None:
    for path in [*extensions(), compiled.MANIFEST]:
        path.unlink(missing_ok=True)


def headers() -> Path:
    return Path(sysconfig.get_paths()["include"]) / "Python.h"


def missing_compiler() -> str:
    """Why no C extension can be built here ("" when one can): the compiler setuptools
    would run (``CC``, else the one Python was built with) and Python's headers."""
    compiler = (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None:
        return f"no C compiler ({compiler})"
    if not headers().exists():
        return f"no Python headers ({headers()})"
    return ""


def missing_tools() -> str:
    """Why nothing can be compiled here ("" when it can)."""
    missing = missing_compiler()
    if missing:
        return missing
    for package in ("mypyc", "setuptools"):
        if importlib.util.find_spec(package) is None:
            return f"no {package} (pip install -e '.[dev]')"
    return ""


def build(into: Path | None = None) -> list[Path]:
    """Compile the hot modules beside their sources, or with ``into``, into that folder
    laid out as site-packages (a wheel's contents), with the record of their sources in
    ``splitmq/compiled.json`` there too. Returns the files written."""
    sources = [str(compiled.source(name)) for name in compiled.HOT_MODULES]
    if into is None:
        clean()
    LOG.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="splitmq-mypyc-") as work:
        setup = Path(work) / "setup.py"
        setup.write_text(
            "import sys\n"
            "from setuptools import setup\n"
            "from mypyc.build import mypycify\n"
            f"setup(name='splitmq-compiled', packages=[], ext_modules=mypycify({sources!r}, "
            f"opt_level='3', group_name={GROUP!r}, target_dir={str(Path(work) / 'c')!r}))\n"
        )
        command = [
            sys.executable,
            str(setup),
            "build_ext",
            *(["--inplace"] if into is None else ["--build-lib", str(into)]),
            "--build-temp",
            str(Path(work) / "temp"),
        ]
        environment = dict(os.environ, SPLITMQ_PURE="1")
        environment.pop("PYTHONPATH", None)
        with LOG.open("w") as log:
            done = subprocess.run(
                command,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=environment,
                check=False,
            )
    if done.returncode:
        tail = LOG.read_text(errors="replace").splitlines()[-25:]
        raise SystemExit(f"mypyc failed; the end of {LOG}:\n" + "\n".join(tail))
    manifest = compiled.MANIFEST
    if into is not None:
        manifest = into / compiled.MANIFEST.relative_to(ROOT)
        manifest.parent.mkdir(parents=True, exist_ok=True)
    manifest.write_text(json.dumps(compiled.source_digests(), indent=1) + "\n")
    if into is None:
        return [*extensions(), manifest]
    return [*sorted(into.rglob("*.so")), manifest]


def report() -> int:
    """One line per hot module: built or not, current or not; 0 when all are both."""
    changed = set(compiled.stale())
    built = {name: compiled.built(name) for name in compiled.HOT_MODULES}
    rows = [
        [
            name,
            "compiled" if here else "pure Python",
            "stale: its source changed since" if here and name in changed else "",
        ]
        for name, here in built.items()
    ]
    print(format_table(["module", "runs", ""], rows, left=(0, 1, 2)))
    return 0 if all(built.values()) and not changed else 1


def current() -> bool:
    """Whether every hot module is built from its source as it is now."""
    return all(compiled.built(name) for name in compiled.HOT_MODULES) and not compiled.stale()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--clean", action="store_true", help="remove the extensions")
    what.add_argument("--check", action="store_true", help="exit 1 unless all are current")
    what.add_argument("--headers", action="store_true", help="exit 1 without Python's headers")
    what.add_argument("--if-stale", action="store_true", help="build only if not current")
    parser.add_argument(
        "--require",
        action="store_true",
        help="fail without a compiler (also when SPLITMQ_REQUIRE_ALL is set)",
    )
    args = parser.parse_args()
    if args.headers:
        raise SystemExit(0 if headers().exists() else 1)
    if args.clean:
        clean()
        print("removed splitmq's compiled modules: pure Python")
        return
    if args.check:
        raise SystemExit(report())
    if args.if_stale and current():
        print(f"splitmq's {len(compiled.HOT_MODULES)} hot modules are compiled and current")
        return
    missing = missing_tools()
    if missing:
        message = f"splitmq's hot modules stay pure Python: {missing}"
        if args.require or os.environ.get("SPLITMQ_REQUIRE_ALL"):
            raise SystemExit(message)
        print(message)
        return
    print(f"compiling {len(compiled.HOT_MODULES)} modules with mypyc (log: .cache/compile.log)")
    build()
    report()


if __name__ == "__main__":
    main()
