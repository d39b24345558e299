"""The model pool's chunk server: answers ``FetchShard`` on ``pool/fetch``.

Agents pull shards in chunks: a :class:`FetchShard` asks for bytes ``[offset,
offset + length)`` of the shard with a given sha256; the service answers on the
asker's ``agents/{agent}/pool`` topic with a :class:`ShardChunk` of at most
``chunk_bytes`` bytes (the agent asks again for the rest), or a :class:`FetchFailed`
when it does not have the shard or the range is outside it. Shards are kept in memory
or read from files on demand, by digest::

    service = PoolService(transport)
    digest = service.add(shard_bytes)          # or service.add_file(path)
    service.start()                            # subscribes to pool/fetch
    ...
    service.stop()

Several services may run side by side: with ``group`` set they share ``pool/fetch``
through a shared subscription, so each request is answered once.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable
from pathlib import Path

from splitmq.errors import DecodeError, TransportError
from splitmq.transport import InboundMessage, Transport
from splitmq.wire import FetchFailed, FetchShard, Message, ShardChunk, encode
from splitmq.wire.topics import DEFAULT_NAMESPACE, POOL_CHUNKS, POOL_FETCH

log = logging.getLogger(__name__)

DEFAULT_CHUNK_BYTES = 256 * 1024


class PoolService:
    """Serves shard chunks from a digest -> bytes-or-file store over a transport.

    Args:
        transport: a started (or to be started by the caller) transport.
        chunk_bytes: the most bytes one chunk carries, whatever the agent asks for.
        namespace: the topic prefix.
        group: share ``pool/fetch`` with other services of this group (``$share``).
        resolve: asked for a digest this service does not hold, before refusing it: it
            may add the shard (cut it again: with a group, another coordinator may have
            cut it) and return whether it did.
    """

    def __init__(
        self,
        transport: Transport,
        *,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        namespace: str = DEFAULT_NAMESPACE,
        group: str | None = None,
        resolve: Callable[[str], bool] | None = None,
    ):
        if chunk_bytes <= 0:
            raise ValueError("chunk_bytes must be above 0")
        self.transport = transport
        self.chunk_bytes = min(chunk_bytes, max(1, transport.max_payload_bytes - 4096))
        self.namespace = namespace
        self._filter = (
            POOL_FETCH.shared_filter(group, namespace)
            if group is not None
            else POOL_FETCH.name(namespace)
        )
        self.resolve = resolve
        self._store: dict[str, bytes | Path] = {}
        self._lock = threading.Lock()
        self.chunks_sent = 0
        self.bytes_sent = 0

    def add(self, data: bytes) -> str:
        """Serve ``data``; returns its sha256 (hex)."""
        digest = hashlib.sha256(data).hexdigest()
        with self._lock:
            self._store[digest] = bytes(data)
        return digest

    def add_file(self, path: str | Path, digest: str | None = None) -> str:
        """Serve the file at ``path`` (read per chunk); hashes it unless ``digest`` is given."""
        path = Path(path)
        if digest is None:
            hasher = hashlib.sha256()
            with path.open("rb") as file:
                for block in iter(lambda: file.read(1 << 20), b""):
                    hasher.update(block)
            digest = hasher.hexdigest()
        with self._lock:
            self._store[digest] = path
        return digest

    def remove(self, digest: str) -> None:
        with self._lock:
            self._store.pop(digest, None)

    def __contains__(self, digest: str) -> bool:
        with self._lock:
            return digest in self._store

    def start(self) -> None:
        self.transport.subscribe(self._filter, self._on_fetch, qos=POOL_FETCH.qos)

    def stop(self) -> None:
        self.transport.unsubscribe(self._filter)

    def answer(self, request: FetchShard) -> ShardChunk | FetchFailed:
        """The reply to one request (no I/O besides reading the shard)."""
        with self._lock:
            source = self._store.get(request.digest)
        if source is None and self.resolve is not None and self.resolve(request.digest):
            with self._lock:
                source = self._store.get(request.digest)
        if source is None:
            return FetchFailed(digest=request.digest, message="no shard with this digest")
        total = len(source) if isinstance(source, bytes) else source.stat().st_size
        if request.offset < 0 or request.length <= 0 or request.offset >= total:
            return FetchFailed(
                digest=request.digest,
                message=(
                    f"range [{request.offset}, {request.offset + request.length}) is outside "
                    f"the shard's {total} bytes"
                ),
            )
        length = min(request.length, self.chunk_bytes, total - request.offset)
        if isinstance(source, bytes):
            data = source[request.offset : request.offset + length]
        else:
            with source.open("rb") as file:
                file.seek(request.offset)
                data = file.read(length)
        return ShardChunk(
            digest=request.digest, offset=request.offset, total_bytes=total, data=data
        )

    def _on_fetch(self, message: InboundMessage) -> None:
        try:
            request = POOL_FETCH.decode(message.payload, topic=message.topic)
        except DecodeError as error:
            log.warning("ignored a bad fetch request: %s", error)
            return
        try:
            reply: Message = self.answer(request)
            topic = POOL_CHUNKS.name(self.namespace, agent=request.agent_id)
        except (OSError, ValueError) as error:
            log.warning("cannot serve %s to %s: %s", request.digest[:12], request.agent_id, error)
            return
        try:
            POOL_CHUNKS.publish_payload(self.transport, topic, encode(reply))
        except TransportError as error:
            log.warning("could not send a chunk to %s: %s", request.agent_id, error)
            return
        if isinstance(reply, ShardChunk):
            self.chunks_sent += 1
            self.bytes_sent += len(reply.data)
