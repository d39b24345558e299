"""The coordinator's model pool: converted entries, versions side by side, shards by digest.

The pool directory is the converter's (``POOL/NAME/VERSION/{manifest.json,
model-<variant>.tflite}``). Shards are cut on demand with the converter's cutter (which
needs only the flatbuffer schema of ai-edge-litert, never TensorFlow) and kept under
``POOL/NAME/VERSION/shards/<variant>/cuts-<k1>-<k2>.../``, so cutting the same model at
the same points twice reads the files back instead. Every shard file is served to the
agents by digest through :class:`~splitmq.coordinator.pool_service.PoolService`; at
start :meth:`ModelPool.serve_existing` serves every shard cut before, so a coordinator
restarted over the same pool keeps serving the running deployments.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from splitmq.converter.cutter import Shard, cut
from splitmq.converter.pool import PoolEntry, open_entry
from splitmq.coordinator.pool_service import PoolService
from splitmq.errors import SplitMQError
from splitmq.wire import TensorSpec
from splitmq.wire.manifest import Manifest

log = logging.getLogger(__name__)

SHARDS_DIR = "shards"
INDEX_FILE = "shards.json"


class UnknownModel(SplitMQError):
    """The pool has no such model, version or variant."""


@dataclass(frozen=True)
class ShardFile:
    """A cut shard kept on disk and served by digest."""

    stage: int
    start_op: int
    end_op: int
    digest: str
    size_bytes: int
    path: Path
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    operators: tuple[int, ...] | None = None
    """In a stage graph, the live operators the shard runs; ``None`` in a chain."""


class ModelPool:
    """Versions of converted models, and their shards cut on demand.

    Args:
        pool_dir: the converter's pool directory.
        service: serves shard files to agents by digest (optional: for offline use).
    """

    def __init__(self, pool_dir: str | Path, service: PoolService | None = None):
        self.pool_dir = Path(pool_dir)
        self.service = service
        self._lock = threading.Lock()
        self._manifests: dict[tuple[str, str], tuple[float, Manifest]] = {}

    # -- entries ------------------------------------------------------------------------

    def models(self) -> list[str]:
        if not self.pool_dir.is_dir():
            return []
        return sorted(p.name for p in self.pool_dir.iterdir() if (p / "latest").is_file())

    def versions(self, name: str) -> list[str]:
        """The versions of ``name``, oldest first (by the manifest's modification time)."""
        model_dir = self.pool_dir / name
        if not model_dir.is_dir():
            return []
        entries = [p for p in model_dir.iterdir() if (p / "manifest.json").is_file()]
        return [
            p.name
            for p in sorted(entries, key=lambda p: p.joinpath("manifest.json").stat().st_mtime)
        ]

    def entry(self, name: str, version: str | None = None) -> PoolEntry:
        """``name`` at ``version`` (the latest when None).

        Raises:
            UnknownModel: no such model or version in the pool.
        """
        try:
            return open_entry(self.pool_dir, name, version)
        except SplitMQError as error:
            raise UnknownModel(str(error)) from error

    def manifest(self, name: str, version: str) -> Manifest | None:
        """The manifest of ``name`` at ``version``, or None when the pool has no such entry.

        Read again only when the file changed (``splitmq evaluate`` rewrites it with the
        accuracies it measured): one ``stat`` per call otherwise.
        """
        path = self.pool_dir / name / version / "manifest.json"
        try:
            mtime = path.stat().st_mtime
        except OSError:
            return None
        key = (name, version)
        with self._lock:
            cached = self._manifests.get(key)
        if cached is not None and cached[0] == mtime:
            return cached[1]
        try:
            manifest = self.entry(name, version).manifest
        except UnknownModel:
            return None
        with self._lock:
            self._manifests[key] = (mtime, manifest)
        return manifest

    def task_members(self, task: str) -> list[PoolEntry]:
        """The latest version of every model in the pool that is a member of ``task``."""
        from splitmq.converter.task import task_members

        return task_members(self.pool_dir, task)

    # -- shards -------------------------------------------------------------------------

    def shards(self, entry: PoolEntry, variant: str, cut_points: Sequence[int]) -> list[ShardFile]:
        """The shards of ``variant`` cut at ``cut_points``: read back if cut before, else cut.

        Every shard is then served by digest.
        """
        if variant not in entry.manifest.variants:
            raise UnknownModel(
                f"{entry.name} {entry.version} has no variant {variant!r}; it has "
                f"{', '.join(entry.manifest.variants)}"
            )
        points = [int(k) for k in cut_points]
        directory = entry.path / SHARDS_DIR / variant / ("cuts-" + "-".join(map(str, points)))
        with self._lock:
            files = self._read_index(directory)
            if files is None:
                log.info(
                    "cutting %s %s %s at %s", entry.name, entry.version, variant, points or "-"
                )
                shards = cut(entry.variant_path(variant), points, directory)
                files = [_shard_file(shard) for shard in shards]
                self._write_index(directory, files)
        for file in files:
            self._serve(file)
        return files

    def graph_shards(
        self, entry: PoolEntry, variant: str, section: tuple[int, int]
    ) -> list[ShardFile]:
        """The shards of the Plan 2 stage graph around parallel section ``section`` of
        ``variant`` (the operators before it, one shard per branch, the operators after
        it), kept under ``shards/<variant>/graph-<start>-<end>/`` and served by digest."""
        from splitmq.converter.branches import stage_graph
        from splitmq.converter.cutter import cut_stages
        from splitmq.converter.graph import Graph

        manifest = entry.manifest.variants.get(variant)
        found = [
            s
            for s in (manifest.parallel_sections if manifest else ())
            if (s.start, s.end) == section
        ]
        if not found:
            raise UnknownModel(
                f"{entry.name} {entry.version} {variant} has no parallel section {list(section)}"
            )
        directory = entry.path / SHARDS_DIR / variant / f"graph-{section[0]}-{section[1]}"
        with self._lock:
            files = self._read_index(directory)
            if files is None:
                log.info(
                    "cutting %s %s %s around section %s",
                    entry.name,
                    entry.version,
                    variant,
                    section,
                )
                graph = Graph.load(entry.variant_path(variant).read_bytes())
                shards = cut_stages(graph, stage_graph(graph, found), directory)
                files = [replace(_shard_file(s), operators=s.operators) for s in shards]
                self._write_index(directory, files)
        for file in files:
            self._serve(file)
        return files

    def serve_existing(self) -> int:
        """Serve every shard cut before under the pool; returns how many."""
        count = 0
        if not self.pool_dir.is_dir():
            return 0
        for index in self.pool_dir.glob(f"*/*/{SHARDS_DIR}/*/*/{INDEX_FILE}"):
            files = self._read_index(index.parent)
            for file in files or []:
                self._serve(file)
                count += 1
        return count

    def _serve(self, file: ShardFile) -> None:
        if self.service is not None and file.digest not in self.service:
            self.service.add_file(file.path, file.digest)

    def _read_index(self, directory: Path) -> list[ShardFile] | None:
        """The shards listed in ``directory``'s index, if it exists and every file checks out."""
        try:
            data = json.loads((directory / INDEX_FILE).read_text())
            files = [_from_json(directory, item) for item in data["shards"]]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        for file in files:
            if not file.path.is_file() or file.path.stat().st_size != file.size_bytes:
                return None
        return files

    def _write_index(self, directory: Path, files: list[ShardFile]) -> None:
        data = {"shards": [_to_json(file) for file in files]}
        temporary = directory / f".{INDEX_FILE}.tmp"
        temporary.write_text(json.dumps(data, indent=1))
        temporary.replace(directory / INDEX_FILE)


def _shard_file(shard: Shard) -> ShardFile:
    assert shard.path is not None  # cut() was given a directory
    return ShardFile(
        stage=shard.stage,
        start_op=shard.start,
        end_op=shard.end,
        digest=shard.sha256,
        size_bytes=shard.size_bytes,
        path=shard.path,
        inputs=shard.inputs,
        outputs=shard.outputs,
    )


def _to_json(file: ShardFile) -> dict[str, object]:
    return {
        "stage": file.stage,
        "start_op": file.start_op,
        "end_op": file.end_op,
        "digest": file.digest,
        "size_bytes": file.size_bytes,
        "file": file.path.name,
        "inputs": [s.to_json() for s in file.inputs],
        "outputs": [s.to_json() for s in file.outputs],
        **({} if file.operators is None else {"operators": list(file.operators)}),
    }


def _from_json(directory: Path, item: dict[str, object]) -> ShardFile:
    return ShardFile(
        stage=int(item["stage"]),  # type: ignore[call-overload]
        start_op=int(item["start_op"]),  # type: ignore[call-overload]
        end_op=int(item["end_op"]),  # type: ignore[call-overload]
        digest=str(item["digest"]),
        size_bytes=int(item["size_bytes"]),  # type: ignore[call-overload]
        path=directory / str(item["file"]),
        inputs=tuple(TensorSpec.from_json(s) for s in item["inputs"]),  # type: ignore[attr-defined]
        outputs=tuple(TensorSpec.from_json(s) for s in item["outputs"]),  # type: ignore[attr-defined]
        operators=(
            None if item.get("operators") is None else tuple(int(i) for i in item["operators"])  # type: ignore[attr-defined]
        ),
    )
