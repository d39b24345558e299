"""Fetching a shard from the model pool in chunks: ``pool/fetch`` -> ``agents/{id}/pool``.

The fetcher keeps up to ``window`` chunk requests in flight, re-asks for a chunk that
has not come within ``timeout_s`` (up to ``retries`` times), assembles the bytes and
logs its progress. Chunks are handed to it by the agent's inbox handler
(:meth:`ShardFetcher.on_message`); :meth:`fetch` blocks the calling (command) thread.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from splitmq.errors import DecodeError, SplitMQError
from splitmq.transport import InboundMessage, Transport
from splitmq.wire import FetchFailed, FetchShard
from splitmq.wire.topics import POOL_CHUNKS, POOL_FETCH

log = logging.getLogger(__name__)


class FetchError(SplitMQError):
    """A shard could not be fetched from the pool.

    Attributes:
        digest: the shard asked for.
    """

    def __init__(self, digest: str, reason: str):
        self.digest = digest
        super().__init__(f"cannot fetch shard {digest[:12]}: {reason}")


@dataclass
class _Download:
    digest: str
    total_bytes: int
    buffer: bytearray
    todo: list[tuple[int, int]] = field(default_factory=list)  # (offset, length) to ask
    pending: dict[int, tuple[float, int]] = field(default_factory=dict)  # offset -> (asked, length)
    tries: dict[int, int] = field(default_factory=dict)
    received_bytes: int = 0
    failure: str | None = None
    cond: threading.Condition = field(default_factory=threading.Condition)


class ShardFetcher:
    """Downloads shards over a transport for one agent."""

    def __init__(
        self,
        transport: Transport,
        agent_id: str,
        *,
        namespace: str,
        chunk_bytes: int,
        window: int = 4,
        timeout_s: float = 10.0,
        retries: int = 3,
    ):
        self._transport = transport
        self._agent_id = agent_id
        self._namespace = namespace
        self._chunk_bytes = chunk_bytes
        self._window = max(1, window)
        self._timeout_s = timeout_s
        self._retries = retries
        self._downloads: dict[str, _Download] = {}
        self._lock = threading.Lock()

    def on_message(self, message: InboundMessage) -> None:
        """A chunk or a refusal from the pool (runs on the transport's inbox worker)."""
        try:
            reply = POOL_CHUNKS.decode(message.payload, topic=message.topic)
        except DecodeError as error:
            log.warning("ignored a bad pool message: %s", error)
            return
        with self._lock:
            download = self._downloads.get(reply.digest)
        if download is None:
            return  # a late duplicate of a finished download
        with download.cond:
            if isinstance(reply, FetchFailed):
                download.failure = f"the pool refused: {reply.message}"
            elif reply.total_bytes != download.total_bytes:
                download.failure = (
                    f"the pool says the shard has {reply.total_bytes} bytes, the load "
                    f"command said {download.total_bytes}"
                )
            elif reply.offset in download.pending:
                _, length = download.pending[reply.offset]
                end = reply.offset + len(reply.data)
                if not 0 < len(reply.data) <= length:
                    download.failure = (
                        f"chunk [{reply.offset}, {end}) does not fit the {length} bytes asked"
                    )
                else:
                    download.buffer[reply.offset : end] = reply.data
                    download.received_bytes += len(reply.data)
                    del download.pending[reply.offset]
                    if len(reply.data) < length:  # the pool serves smaller chunks
                        download.todo.insert(0, (end, length - len(reply.data)))
            download.cond.notify_all()

    def fetch(self, digest: str, size_bytes: int) -> bytes:
        """The shard's bytes (not yet verified against ``digest``).

        Raises:
            FetchError: the pool refused, stopped answering, or sent inconsistent chunks.
        """
        if size_bytes <= 0:
            raise FetchError(digest, f"size {size_bytes} is not a shard size")
        download = _Download(digest, size_bytes, bytearray(size_bytes))
        with self._lock:
            self._downloads[digest] = download
        download.todo = [
            (offset, min(self._chunk_bytes, size_bytes - offset))
            for offset in range(0, size_bytes, self._chunk_bytes)
        ]
        started = time.monotonic()
        logged_pct = -1
        try:
            with download.cond:
                while download.received_bytes < size_bytes:
                    if download.failure is not None:
                        raise FetchError(digest, download.failure)
                    now = time.monotonic()
                    while download.todo and len(download.pending) < self._window:
                        self._ask(download, *download.todo.pop(0), now)
                    for offset, (asked, length) in list(download.pending.items()):
                        if now - asked > self._timeout_s:
                            if download.tries[offset] > self._retries:
                                raise FetchError(
                                    digest,
                                    f"no answer from the pool for the chunk at {offset} "
                                    f"after {self._retries + 1} requests: is a coordinator "
                                    "with the model pool running?",
                                )
                            log.warning("re-asking the pool for %s @%d", digest[:12], offset)
                            self._ask(download, offset, length, now)
                    download.cond.wait(timeout=min(0.5, self._timeout_s))
                    pct = int(100 * download.received_bytes / size_bytes) // 10 * 10
                    if pct != logged_pct:
                        logged_pct = pct
                        log.info(
                            "fetching shard %s: %d%% of %d bytes",
                            digest[:12],
                            pct,
                            size_bytes,
                        )
        finally:
            with self._lock:
                self._downloads.pop(digest, None)
        log.info(
            "fetched shard %s (%d bytes) in %.2f s",
            digest[:12],
            size_bytes,
            time.monotonic() - started,
        )
        return bytes(download.buffer)

    def _ask(self, download: _Download, offset: int, length: int, now: float) -> None:
        download.pending[offset] = (now, length)
        download.tries[offset] = download.tries.get(offset, 0) + 1
        request = FetchShard(
            agent_id=self._agent_id, digest=download.digest, offset=offset, length=length
        )
        POOL_FETCH.publish(self._transport, request, self._namespace)
