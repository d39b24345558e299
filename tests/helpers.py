"""Small test helpers: wait for events with a timeout instead of sleeping; skip, with the
reason, where an optional package is not installed."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from importlib.util import find_spec
from typing import Self

import pytest

from splitmq.transport import InboundMessage


def needs(module: str, extra: str) -> pytest.MarkDecorator:
    """Skip the test where ``module`` (of the ``extra`` extra) is not installed."""
    return pytest.mark.skipif(
        find_spec(module) is None, reason=f"needs {module}: pip install -e '.[{extra}]'"
    )


class Collector:
    """A handler that records messages and the threads they arrived on."""

    def __init__(self) -> None:
        self.messages: list[InboundMessage] = []
        self.threads: set[str] = set()
        self._cond = threading.Condition()

    def __call__(self, message: InboundMessage) -> None:
        with self._cond:
            self.messages.append(message)
            self.threads.add(threading.current_thread().name)
            self._cond.notify_all()

    def wait_for(self, count: int, timeout_s: float = 10.0) -> list[InboundMessage]:
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.messages) >= count, timeout_s):
                raise AssertionError(f"got {len(self.messages)} of {count} messages")
            return list(self.messages)


def wait_until(predicate: Callable[[], bool], timeout_s: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what or predicate}")
        time.sleep(0.01)


class Periodic:
    """Runs :meth:`tick` every ``period_s`` on a thread while the ``with`` block lasts."""

    def __init__(self, period_s: float):
        self.period_s = period_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            self.tick()

    def tick(self) -> None:
        raise NotImplementedError
