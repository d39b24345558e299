"""Stopping the demo: Ctrl-C, ``kill`` (SIGTERM) and a closed terminal (SIGHUP) alike.

Within :func:`stop_on_signals` each of these signals raises :class:`Stopped` in the
main thread, wherever the demo is (starting the fleet, streaming, or keeping it up),
so the ``with`` blocks that own the fleet unwind and stop every process they started.
While that cleanup runs, a second signal is ignored rather than cutting it short.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Stopped(BaseException):
    """A stop signal arrived. A BaseException, as KeyboardInterrupt is: no ``except
    Exception`` on the way swallows it.

    Attributes:
        signum: the signal.
    """

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"stopped by {signal.Signals(signum).name}")

    @property
    def exit_status(self) -> int:
        """The shell's convention for a process ended by a signal: 128 + its number."""
        return 128 + self.signum


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """Raise :class:`Stopped` on SIGINT, SIGTERM or SIGHUP (once); restore on leaving.

    Call it from the main thread: only it can set signal handlers.
    """
    stopping = False

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        if stopping:
            return  # already stopping: let the cleanup finish
        stopping = True
        raise Stopped(signum)

    previous = {signum: signal.signal(signum, on_signal) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
