"""The wheel's build hook: splitmq's hot modules compiled where the wheel is built with a
C compiler, pure Python where it is not.

``pip install splitmq`` (or ``pip wheel``, ``python -m build``) from the sources runs
this. Where a C compiler and Python's headers are at hand, the modules listed in
``splitmq.compiled.HOT_MODULES`` are compiled with mypyc (``scripts/compile.py``; mypy and
setuptools are then added to the build's requirements) and the wheel is tagged for this
Python and platform. Where they are not (a Raspberry Pi without gcc), nothing extra is
downloaded and the wheel is the pure-Python one, which writes the same bytes. If the
compiler fails, the wheel is pure Python too, with the reason printed.

``SPLITMQ_COMPILE`` decides otherwise: ``0`` builds a pure wheel anywhere, ``1`` fails
the build rather than fall back. Editable installs (``pip install -e``) compile nothing:
``make compiled`` builds a checkout's extensions in place.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

SWITCH = "SPLITMQ_COMPILE"
BUILD_REQUIREMENTS = ["mypy>=1.10", "setuptools>=68"]


def compile_script(root: str) -> ModuleType:
    """``scripts/compile.py`` of the tree being built."""
    if root not in sys.path:
        sys.path.insert(0, root)
    from scripts import compile as script

    return script


class CompiledModules(BuildHookInterface):  # type: ignore[type-arg]
    """Adds the hot modules' extensions, and their sources' record, to a wheel."""

    PLUGIN_NAME = "custom"

    def dependencies(self) -> list[str]:
        return BUILD_REQUIREMENTS if not self.reason_for_pure() else []

    def reason_for_pure(self) -> str:
        """Why this wheel is pure Python ("" when it is to be compiled)."""
        switch = os.environ.get(SWITCH, "")
        if switch == "0":
            return f"{SWITCH}=0"
        missing: str = compile_script(self.root).missing_compiler()
        if missing and switch == "1":
            raise RuntimeError(f"{SWITCH}=1 but {missing}")
        return missing

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel" or version == "editable":
            return
        why = self.reason_for_pure()
        if why:
            self.app.display_info(f"splitmq: a pure-Python wheel ({why})")
            return
        script = compile_script(self.root)
        count = len(script.compiled.HOT_MODULES)
        self.app.display_info(f"splitmq: compiling {count} hot modules with mypyc")
        self._work = Path(tempfile.mkdtemp(prefix="splitmq-wheel-"))
        try:
            written = script.build(into=self._work)
        except SystemExit as failure:  # the compiler's own failure, with its log's end
            if os.environ.get(SWITCH) == "1":
                raise RuntimeError(str(failure)) from None
            self.app.display_warning(f"splitmq: a pure-Python wheel, mypyc failed: {failure}")
            return
        for path in written:
            build_data["force_include"][str(path)] = path.relative_to(self._work).as_posix()
        build_data["pure_python"] = False
        build_data["infer_tag"] = True

    def finalize(self, version: str, build_data: dict[str, Any], artifact_path: str) -> None:
        work = getattr(self, "_work", None)
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)
