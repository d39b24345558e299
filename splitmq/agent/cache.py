"""A content-addressed shard cache on disk: ``DIR/<sha256>.tflite``, evicted by size.

Files are named by the sha256 of their bytes, written to a temporary name and renamed
into place, so a crash never leaves a half-written shard under a digest. The cache
survives restarts (it is the directory); a file whose bytes no longer match its name
is deleted when read. When the total passes ``max_bytes`` the least recently used
shards go first, never one that is loaded (``pinned``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
from collections.abc import Iterable
from pathlib import Path

from splitmq.errors import SplitMQError

log = logging.getLogger(__name__)

_DIGEST = re.compile(r"[0-9a-f]{64}")
SUFFIX = ".tflite"


class DigestMismatch(SplitMQError):
    """Bytes whose sha256 is not the one they were announced with.

    Attributes:
        expected: the digest asked for.
        actual: the digest of the bytes received.
    """

    def __init__(self, expected: str, actual: str):
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"shard bytes hash to {actual}, not the announced {expected}: the pool "
            "served other bytes or they were corrupted on the way; the shard was not stored"
        )


def sha256_hex(data: bytes | bytearray | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def check_digest(digest: str) -> str:
    if not _DIGEST.fullmatch(digest):
        raise ValueError(f"{digest!r} is not a lower-case hex sha256 digest")
    return digest


class ShardCache:
    """Shards by digest in ``directory``, at most ``max_bytes`` in total."""

    def __init__(self, directory: Path, max_bytes: int):
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        for stale in self.directory.glob("*.partial"):
            stale.unlink(missing_ok=True)

    def path(self, digest: str) -> Path:
        return self.directory / f"{check_digest(digest)}{SUFFIX}"

    def digests(self) -> list[str]:
        """Every cached digest, most recently used first."""
        files = [p for p in self.directory.glob(f"*{SUFFIX}") if _DIGEST.fullmatch(p.stem)]
        files.sort(key=lambda p: p.stat().st_mtime_ns, reverse=True)
        return [p.stem for p in files]

    def total_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.directory.glob(f"*{SUFFIX}"))

    def __contains__(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def get(self, digest: str) -> bytes | None:
        """The shard's bytes, verified, or None when absent (or found corrupt and dropped)."""
        path = self.path(digest)
        with self._lock:
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                return None
            if sha256_hex(data) != digest:
                log.warning("cached shard %s is corrupt: deleted", digest[:12])
                path.unlink(missing_ok=True)
                return None
            os.utime(path)  # most recently used
            return data

    def put(self, data: bytes, digest: str, *, pinned: Iterable[str] = ()) -> Path:
        """Store verified bytes under ``digest``, then evict down to ``max_bytes``.

        Raises:
            DigestMismatch: ``data`` does not hash to ``digest``; nothing is stored.
        """
        actual = sha256_hex(data)
        if actual != digest:
            raise DigestMismatch(digest, actual)
        path = self.path(digest)
        with self._lock:
            partial = path.with_suffix(".partial")
            partial.write_bytes(data)
            partial.replace(path)
            self._evict(keep={digest, *pinned})
        return path

    def evict(self, *, pinned: Iterable[str] = ()) -> list[str]:
        with self._lock:
            return self._evict(keep=set(pinned))

    def _evict(self, keep: set[str]) -> list[str]:
        evicted = []
        total = self.total_bytes()
        for digest in reversed(self.digests()):  # least recently used first
            if total <= self.max_bytes:
                break
            if digest in keep:
                continue
            path = self.path(digest)
            size = path.stat().st_size
            path.unlink(missing_ok=True)
            total -= size
            evicted.append(digest)
            log.info("evicted shard %s (%d bytes) from the cache", digest[:12], size)
        return evicted
