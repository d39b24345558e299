"""Waiting in a command's main thread for SIGTERM or SIGINT, with no lock in the handler.

The usual way, a handler calling ``threading.Event.set()`` while the main thread sits
in that event's ``wait()``, deadlocks when the signal lands in the few bytecodes where
``wait()`` holds the event's lock: the handler runs in the main thread and waits for
the lock its own thread holds. A SIGTERM sent right after a command prints that it is
serving meets the main thread just entering ``wait()``; a busy machine widens the
window, and the process then never stops.

Here the handler does nothing in Python: the interpreter's own C handler writes the
signal's number to a pipe (``signal.set_wakeup_fd``), and :meth:`StopSignals.wait`
reads it. A signal that came before the wait is in the pipe already.
"""

from __future__ import annotations

import os
import signal
from types import FrameType

SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _noted(_signum: int, _frame: FrameType | None) -> None:
    """The Python-level handler: the signal is in the pipe already."""


class StopSignals:
    """SIGTERM and SIGINT, from entering the ``with`` block on, as something the main
    thread waits for (:meth:`wait`). Enter it in the main thread, before starting what
    the signals should stop; leaving it restores the handlers."""

    def __init__(self) -> None:
        self._read = self._write = -1
        self._previous_fd = -1
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopSignals:
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)
        self._previous_fd = signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)
        self._previous = {signum: signal.signal(signum, _noted) for signum in SIGNALS}
        return self

    def wait(self) -> signal.Signals:
        """Until SIGTERM or SIGINT arrives (at once if one came since entering): which."""
        while True:
            data = os.read(self._read, 1)
            if data and data[0] in SIGNALS:
                return signal.Signals(data[0])

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        signal.set_wakeup_fd(self._previous_fd)
        os.close(self._read)
        os.close(self._write)
