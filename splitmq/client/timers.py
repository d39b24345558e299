"""The client's clock: a heap of functions to call at ``time.monotonic()`` times, on one
thread, and the effects the client runs once its lock is released.

The client decides under its lock and collects what to do about it (publish, call the
recorder, resolve a future) as *effects*: argument-less functions run afterwards by
:func:`apply_effects`, so no callback ever runs with the lock held.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

Effect = Callable[[], None]
Effects = list[Effect]


def apply_effects(effects: Effects) -> None:
    """Run each effect; one that raises is logged and does not stop the others."""
    for effect in effects:
        try:
            effect()
        except Exception:
            log.exception("a client callback failed")


class Timers:
    """One thread calling functions at ``time.monotonic()`` times, soonest first."""

    def __init__(self, name: str):
        self._heap: list[tuple[float, int, Effect]] = []
        self._cond = threading.Condition()
        self._sequence = itertools.count()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def call_at(self, when_s: float, function: Effect) -> None:
        with self._cond:
            heapq.heappush(self._heap, (when_s, next(self._sequence), function))
            self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(5.0)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped and (not self._heap or self._heap[0][0] > time.monotonic()):
                    self._cond.wait(self._heap[0][0] - time.monotonic() if self._heap else None)
                if self._stopped:
                    return
                function = heapq.heappop(self._heap)[2]
            apply_effects([function])
