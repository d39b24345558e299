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


class Timer:
    """One function to call when due; :meth:`cancel` keeps it from being called."""

    __slots__ = ("function",)

    def __init__(self, function: Effect):
        self.function: Effect | None = function

    def cancel(self) -> None:
        """Do not call it (if it is not being called already). Cheap: the thread drops
        it when it comes due, or sooner, and is not woken for it."""
        self.function = None

    @property
    def cancelled(self) -> bool:
        return self.function is None


class Timers:
    """One thread calling functions at ``time.monotonic()`` times, soonest first.

    The thread is woken only when a new timer is due sooner than the one it sleeps
    for, and never for a cancelled one that is not at the head of the heap: a client
    arms two timers per request (its deadline, its attempt's timeout) and cancels both
    when the answer comes, usually long before either is due.
    """

    def __init__(self, name: str):
        self._heap: list[tuple[float, int, Timer]] = []
        self._lock = threading.Lock()  # taken as it is: a Condition's own enter is Python
        self._cond = threading.Condition(self._lock)
        self._sequence = itertools.count()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def call_at(self, when_s: float, function: Effect) -> Timer:
        timer = Timer(function)
        with self._lock:
            heapq.heappush(self._heap, (when_s, next(self._sequence), timer))
            if self._heap[0][2] is timer:  # due before what the thread sleeps for
                self._cond.notify()
        return timer

    def pending(self) -> int:
        """Timers not yet called nor cancelled."""
        with self._lock:
            return sum(1 for _, _, timer in self._heap if not timer.cancelled)

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            self._cond.notify()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(5.0)

    def _run(self) -> None:
        heap = self._heap
        while True:
            with self._lock:
                while True:
                    while heap and heap[0][2].cancelled:
                        heapq.heappop(heap)
                    if self._stopped:
                        return
                    if heap and heap[0][0] <= time.monotonic():
                        break
                    self._cond.wait(heap[0][0] - time.monotonic() if heap else None)
                timer = heapq.heappop(heap)[2]
                function, timer.function = timer.function, None
            if function is not None:
                apply_effects([function])
