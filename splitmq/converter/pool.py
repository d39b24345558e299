"""The model pool on disk: ``POOL/NAME/VERSION/{manifest.json, model-<variant>.tflite}``.

No TensorFlow. ``VERSION`` is the first 12 hex digits of a sha256 over the variant
files' digests and the calibration digest, so converting the same model with the same
calibration data twice gives the same version and any change gives a new one.
``POOL/NAME/latest`` names the version written last.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from splitmq.converter.errors import ConversionError, ModelReadError
from splitmq.converter.manifest import MANIFEST_FILE, load_manifest
from splitmq.wire.manifest import Manifest

__all__ = ["PoolEntry", "content_version", "open_entry", "variant_file", "write_entry"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
LATEST_FILE = "latest"


@dataclass(frozen=True)
class PoolEntry:
    """A converted model in the pool.

    Attributes:
        path: the entry directory ``POOL/NAME/VERSION``.
        name, version: its coordinates in the pool.
        manifest: its manifest.
    """

    path: Path
    name: str
    version: str
    manifest: Manifest

    def variant_path(self, variant: str) -> Path:
        """The full ``.tflite`` of one variant."""
        if variant not in self.manifest.variants:
            raise ConversionError(
                f"{self.name} {self.version} has no variant {variant!r}; it has "
                f"{', '.join(self.manifest.variants)}"
            )
        return self.path / self.manifest.variants[variant].file


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise ConversionError(
            f"model name {name!r} is not usable as a directory name: use letters, digits, "
            "'.', '_' and '-' (at most 64, starting with a letter or digit)"
        )
    return name


def variant_file(variant: str) -> str:
    return f"model-{variant}.tflite"


def content_version(digests: Mapping[str, str], calibration_sha256: str) -> str:
    """The content-derived version of an entry."""
    hasher = hashlib.sha256()
    for name in sorted(digests):
        hasher.update(f"{name}={digests[name]}\n".encode())
    hasher.update(f"calibration={calibration_sha256}\n".encode())
    return hasher.hexdigest()[:12]


def write_entry(pool_dir: str | Path, manifest: Manifest, models: Mapping[str, bytes]) -> PoolEntry:
    """Write the variant files and the manifest; atomic per file."""
    path = Path(pool_dir) / check_name(manifest.name) / manifest.version
    path.mkdir(parents=True, exist_ok=True)
    for variant, data in models.items():
        _write_atomic(path / variant_file(variant), data)
    _write_atomic(path / MANIFEST_FILE, manifest.dumps().encode("utf-8"))
    _write_atomic(path.parent / LATEST_FILE, (manifest.version + "\n").encode())
    return PoolEntry(path, manifest.name, manifest.version, manifest)


def _write_atomic(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_bytes(data)
    temporary.replace(path)


def open_entry(pool_dir: str | Path, name: str, version: str | None = None) -> PoolEntry:
    """Open ``POOL/NAME/VERSION`` (the latest version when ``version`` is ``None``).

    Raises:
        ModelReadError: no such model or version in the pool.
    """
    model_dir = Path(pool_dir) / check_name(name)
    if version is None:
        try:
            version = (model_dir / LATEST_FILE).read_text().strip()
        except OSError as error:
            raise ModelReadError(
                f"no model {name!r} in the pool {pool_dir}; convert it first with "
                f"`splitmq convert MODEL --name {name} --pool {pool_dir}`",
                path=model_dir,
            ) from error
    path = model_dir / version
    if not path.is_dir():
        known = (
            sorted(p.name for p in model_dir.iterdir() if p.is_dir()) if model_dir.is_dir() else []
        )
        raise ModelReadError(
            f"no version {version!r} of {name!r} in {pool_dir}; versions: {known or 'none'}",
            path=path,
        )
    manifest = load_manifest(path)
    return PoolEntry(path, manifest.name, manifest.version, manifest)
