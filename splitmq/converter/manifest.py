"""Reading a model pool manifest from disk. No TensorFlow.

The manifest types live in :mod:`splitmq.wire.manifest`: the converter writes them, the
coordinator reads them, and neither imports the other for it.
"""

from __future__ import annotations

import json
from pathlib import Path

from splitmq.errors import ModelReadError
from splitmq.wire.manifest import Manifest

__all__ = ["MANIFEST_FILE", "load_manifest"]

MANIFEST_FILE = "manifest.json"


def load_manifest(path: str | Path) -> Manifest:
    """Read a manifest file, or the ``manifest.json`` of an entry directory.

    Raises:
        ModelReadError: missing, not JSON, or not a manifest this version understands.
    """
    file = Path(path)
    if file.is_dir():
        file = file / MANIFEST_FILE
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except OSError as error:
        raise ModelReadError(
            f"cannot read the manifest {file}: {error.strerror or error}; pass a pool entry "
            "directory POOL/NAME/VERSION or its manifest.json",
            path=file,
        ) from error
    except json.JSONDecodeError as error:
        raise ModelReadError(f"{file} is not valid JSON: {error}", path=file) from error
    if not isinstance(data, dict):
        raise ModelReadError(f"{file} is not a manifest (not a JSON object)", path=file)
    try:
        return Manifest.from_json(data)
    except (KeyError, TypeError, ValueError) as error:
        raise ModelReadError(f"{file} is a malformed manifest: {error!r}", path=file) from error
