"""The newest message per topic, for topics that carry a state (retained presence,
telemetry): only the latest one matters, so a flood of them is conflated instead of
queued.

A fleet of thousands of agents sends the coordinator a burst of retained statuses and
telemetry when it subscribes, and a steady stream after. Through the transport's inbox
(bounded: a full one drops what comes next) that burst could crowd out a plan request;
through :class:`LatestByTopic` it takes one slot per agent, and nothing is lost that a
newer message on the same topic does not replace.

::

    latest = LatestByTopic("presence", on_status)
    latest.start()
    transport.subscribe(STATUS.filter(ns), on_status, fast_path=latest.fast_path)
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from splitmq.transport.base import Handler, InboundMessage

log = logging.getLogger(__name__)

Superseded = Callable[[InboundMessage], None]


class LatestByTopic:
    """A fast path that keeps the newest message of each topic; one thread hands them on.

    ``handler`` runs on that thread with each topic's newest message, in the order the
    topics first arrived. ``superseded``, if given, sees every message a newer one
    replaced before it was handled (on the network thread: it must be quick), so an
    owner can still act on a transition it must not miss (an agent that went offline
    and came back).
    """

    def __init__(self, name: str, handler: Handler, *, superseded: Superseded | None = None):
        self._handler = handler
        self._superseded = superseded
        self._pending: dict[str, InboundMessage] = {}
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=f"{name}-latest", daemon=True)
        self._arrived = 0  # messages taken so far
        self._done = 0  # of those, handled or replaced by a newer one that was handled
        self._caught_up = threading.Condition(self._lock)
        self.handled = 0
        self.conflated = 0

    def start(self) -> LatestByTopic:
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        with self._lock:
            self._stopping = True
            self._ready.notify()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)

    @property
    def pending(self) -> int:
        return len(self._pending)

    def wait_caught_up(self, timeout_s: float) -> bool:
        """Until every message taken before this call is handled (or replaced by a newer
        one that was); False if ``timeout_s`` passed first.

        What one connection sent in order stays in order: a handler of another topic
        that waits here before acting (a plan request after its sender's own statuses)
        sees the state those messages carried."""
        with self._lock:
            target = self._arrived
            return self._caught_up.wait_for(lambda: self._done >= target, timeout_s)

    def fast_path(self, message: InboundMessage) -> bool:
        """Take ``message`` (always: it is never left to the inbox)."""
        with self._lock:
            self._arrived += 1
            older = self._pending.get(message.topic)
            self._pending[message.topic] = message  # a topic keeps its place in line
            if older is None:
                self._ready.notify()
            else:
                self.conflated += 1
        if older is not None and self._superseded is not None:
            try:
                self._superseded(older)
            except Exception:
                log.exception("superseded handler failed on %s", older.topic)
        return True

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._pending and not self._stopping:
                    self._ready.wait()
                if self._stopping:
                    return
                batch, self._pending = self._pending, {}
                covered = self._arrived  # the batch answers for every arrival so far
            for message in batch.values():
                try:
                    self._handler(message)
                except Exception:
                    log.exception("handler failed on %s", message.topic)
                self.handled += 1
            with self._lock:
                self._done = covered
                self._caught_up.notify_all()
