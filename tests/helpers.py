"""Small test helpers: wait for events with a timeout instead of sleeping; skip, with the
reason, where an optional package is not installed."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from importlib.util import find_spec

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
