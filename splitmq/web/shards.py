"""``GET /shards/{sha256}``: the model pool's shards by digest, over plain HTTP.

The coordinator keeps every cut shard under ``POOL/NAME/VERSION/shards/VARIANT/cuts-
.../`` with an index (``shards.json``, see :mod:`splitmq.coordinator.model_pool`) that
lists each file and its sha256. :class:`ShardIndex` reads those indexes, and reads them
again when asked for a digest it does not know, at most once a second: a request that
misses within a second of the last scan waits (without holding a thread) for the next
one, so a shard cut after the server started is always found, even just after a scan,
and a stream of unknown digests costs one scan a second. The bytes are hashed as they
are served, so a file changed on disk is never served under a digest it no longer has.
Content-addressed bytes never change: the response is cacheable forever (``ETag`` is
the digest, ``immutable``).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import threading
import time
from pathlib import Path

from aiohttp import web

from splitmq.coordinator.model_pool import INDEX_FILE, SHARDS_DIR

log = logging.getLogger(__name__)

DIGEST = re.compile(r"^[0-9a-f]{64}$")
IMMUTABLE = "public, max-age=31536000, immutable"
RESCAN_INTERVAL_S = 1.0


class ShardIndex:
    """Digest -> file, from the pool's shard indexes (see the module docstring)."""

    def __init__(self, pool_dir: Path | None):
        self.pool_dir = pool_dir
        self._paths: dict[str, Path] = {}
        self._scanned_at = -RESCAN_INTERVAL_S
        self._lock = threading.Lock()

    def scan(self) -> int:
        """Read every shard index under the pool again; returns how many shards it lists."""
        found: dict[str, Path] = {}
        if self.pool_dir is not None and self.pool_dir.is_dir():
            for index in self.pool_dir.glob(f"*/*/{SHARDS_DIR}/*/*/{INDEX_FILE}"):
                try:
                    items = json.loads(index.read_text())["shards"]
                    for item in items:
                        found[str(item["digest"])] = index.parent / str(item["file"])
                except (OSError, ValueError, KeyError, TypeError) as error:
                    log.warning("skipped the unreadable shard index %s: %s", index, error)
        with self._lock:
            self._paths = found
            self._scanned_at = time.monotonic()
        return len(found)

    def path(self, digest: str) -> Path | None:
        """The file the indexes list for ``digest`` (scanning again if it is new)."""
        with self._lock:
            path = self._paths.get(digest)
            stale = time.monotonic() - self._scanned_at >= RESCAN_INTERVAL_S
        if path is None and stale:
            self.scan()
            with self._lock:
                path = self._paths.get(digest)
        return path

    def next_scan_in(self) -> float:
        """Seconds until a miss may read the indexes again (0: at once)."""
        with self._lock:
            return max(0.0, self._scanned_at + RESCAN_INTERVAL_S - time.monotonic())

    def read(self, digest: str) -> bytes | None:
        """The bytes of the shard ``digest``, checked against it; None when no file has them."""
        path = self.path(digest)
        if path is None:
            return None
        try:
            data = path.read_bytes()
        except OSError as error:
            log.warning("cannot read the shard file %s: %s", path, error)
            return None
        if hashlib.sha256(data).hexdigest() != digest:
            log.warning("the shard file %s no longer has the digest %s", path, digest[:12])
            return None
        return data


class ShardRoute:
    """The ``/shards/{digest}`` handler."""

    def __init__(self, index: ShardIndex):
        self.index = index

    async def handle(self, request: web.Request) -> web.StreamResponse:
        digest = request.match_info["digest"]
        if not DIGEST.match(digest):
            raise web.HTTPNotFound(
                text=f"{digest[:80]!r} is not a shard digest: shards are named by their "
                "sha256 in 64 lowercase hexadecimal digits\n"
            )
        if request.headers.get("If-None-Match", "").strip('W/"') == digest:
            raise web.HTTPNotModified(headers={"ETag": f'"{digest}"', "Cache-Control": IMMUTABLE})
        loop = asyncio.get_running_loop()
        body = await loop.run_in_executor(None, self.index.read, digest)
        if body is None and (wait_s := self.index.next_scan_in()) > 0:
            # The indexes were read less than a second ago, perhaps just before the
            # coordinator wrote this shard's: look again once they may be read again.
            await asyncio.sleep(wait_s)
            body = await loop.run_in_executor(None, self.index.read, digest)
        if body is None:
            where = self.index.pool_dir or "no model pool (start with --pool DIR)"
            raise web.HTTPNotFound(
                text=f"no shard with sha256 {digest} in {where}: deploy the model first, "
                "or point the server at the coordinator's pool\n"
            )
        return web.Response(
            body=body,
            content_type="application/octet-stream",
            headers={"ETag": f'"{digest}"', "Cache-Control": IMMUTABLE},
        )
