"""Files from a directory, with the right types, and the headers every response needs.

WebAssembly threads need ``SharedArrayBuffer``, which a browser gives only to a
cross-origin isolated page: the document is served with ``Cross-Origin-Opener-Policy:
same-origin`` and ``Cross-Origin-Embedder-Policy: require-corp``, and everything it
loads must be same-origin or say ``Cross-Origin-Resource-Policy``. Every response of
this server carries the three (:func:`isolation_headers`). Browsers compile wasm
streamed only from ``application/wasm``: types come from our own table, not from the
host's ``/etc/mime.types``. Text, scripts and wasm go gzipped to a browser that
accepts it (compressed once per version of a file, kept in memory).
"""

from __future__ import annotations

import asyncio
import gzip
import threading
from pathlib import Path, PurePosixPath

from aiohttp import web
from aiohttp.typedefs import Handler

ISOLATION_HEADERS = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "Cross-Origin-Resource-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
}

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".map": "application/json",
    ".wasm": "application/wasm",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".tflite": "application/octet-stream",
    ".txt": "text/plain; charset=utf-8",
}


@web.middleware
async def isolation_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Add :data:`ISOLATION_HEADERS` to every response, errors included."""
    try:
        response: web.StreamResponse = await handler(request)
    except web.HTTPException as error:
        error.headers.update(ISOLATION_HEADERS)
        raise
    if not response.prepared:  # a WebSocket is prepared by its handler
        response.headers.update(ISOLATION_HEADERS)
    return response


def resolve(root: Path, name: str) -> Path | None:
    """The file ``name`` (a URL path below ``root``) names, or None.

    None for anything that is not a plain relative path to a regular file inside
    ``root``: ``..``, absolute paths, backslashes, NUL, hidden files, directories, and
    symbolic links that lead outside.
    """
    if not name or "\\" in name or "\x00" in name:
        return None
    parts = PurePosixPath(name).parts
    if not parts or parts[0] == "/" or any(p in ("..", ".") or p.startswith(".") for p in parts):
        return None
    root = root.resolve()
    path = root.joinpath(*parts).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        return None
    return path


def file_response(path: Path, *, cache: str = "no-cache") -> web.FileResponse:
    """``path`` with its type from :data:`CONTENT_TYPES`; ``no-cache`` revalidates by ETag."""
    content_type = CONTENT_TYPES.get(path.suffix.lower(), "application/octet-stream")
    return web.FileResponse(path, headers={"Content-Type": content_type, "Cache-Control": cache})


COMPRESSIBLE = frozenset({".wasm", ".js", ".mjs", ".html", ".css", ".json", ".map", ".tflite"})
"""Types worth gzip: the wasm builds shrink about 3x (a phone's first load: 10 MB -> 3)."""
MIN_COMPRESS_BYTES = 1024


class GzipCache:
    """Each file's gzip, made once per version of the file (path, size, mtime)."""

    def __init__(self) -> None:
        self._entries: dict[Path, tuple[tuple[int, int], bytes]] = {}
        self._lock = threading.Lock()

    def get(self, path: Path) -> tuple[bytes, str]:
        """The file gzipped, and an ETag for that version."""
        stat = path.stat()
        version = (stat.st_size, stat.st_mtime_ns)
        with self._lock:
            cached = self._entries.get(path)
        if cached is None or cached[0] != version:
            cached = (version, gzip.compress(path.read_bytes(), compresslevel=6, mtime=0))
            with self._lock:
                self._entries[path] = cached
        return cached[1], f'"{version[1]:x}-{version[0]:x}-gzip"'


def accepts_gzip(request: web.Request) -> bool:
    return "gzip" in request.headers.get("Accept-Encoding", "").lower()


async def gzip_response(request: web.Request, path: Path, cache: GzipCache) -> web.Response:
    """``path`` gzipped (from ``cache``), revalidated by ETag like a plain file."""
    body, etag = await asyncio.get_running_loop().run_in_executor(None, cache.get, path)
    headers = {
        "Content-Encoding": "gzip",
        "Cache-Control": "no-cache",
        "ETag": etag,
        "Vary": "Accept-Encoding",
    }
    if request.headers.get("If-None-Match") == etag:
        return web.Response(status=304, headers=headers)
    content_type = CONTENT_TYPES.get(path.suffix.lower(), "application/octet-stream")
    return web.Response(body=body, headers={**headers, "Content-Type": content_type})


class StaticFiles:
    """Serves the files under ``root`` at ``/{name}``; a missing file is a plain 404.

    Args:
        root: the directory.
        what: what its files are, for the 404's words.
        built_by: how ``root`` is made, said when it lacks ``marker`` (None: a source
            directory, always there).
        marker: the file whose absence means ``root`` was never built.
    """

    def __init__(self, root: Path, what: str, built_by: str | None = None, marker: str = ""):
        self.root = root
        self.what = what
        self.built_by = built_by
        self.marker = marker
        self._gzip = GzipCache()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info.get("name", "")
        path = resolve(self.root, name)
        if path is None:
            if self.built_by is not None and not (self.root / self.marker).is_file():
                raise web.HTTPNotFound(
                    text=f"the {self.what} is not built in {self.root}: {self.built_by}\n"
                )
            raise web.HTTPNotFound(text=f"no {self.what} file {name!r} here\n")
        if (
            path.suffix.lower() in COMPRESSIBLE
            and accepts_gzip(request)
            and path.stat().st_size >= MIN_COMPRESS_BYTES
        ):
            return await gzip_response(request, path, self._gzip)
        return file_response(path)
