"""The client's timer thread: soonest first, a sooner timer wakes it, cancelled ones
never run, and a client leaves no live timer behind for a request that ended."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest

from splitmq.client.timers import Timers


def note(calls: list[str], name: str, done: threading.Event | None = None) -> Callable[[], None]:
    def call() -> None:
        calls.append(name)
        if done is not None:
            done.set()

    return call


@pytest.fixture
def timers() -> Iterator[Timers]:
    made = Timers("test-timers")
    made.start()
    yield made
    made.stop()


def test_timers_run_soonest_first(timers: Timers) -> None:
    calls: list[str] = []
    done = threading.Event()
    now = time.monotonic()
    timers.call_at(now + 0.15, note(calls, "late", done))
    timers.call_at(now + 0.05, note(calls, "early"))
    assert done.wait(2.0)
    assert calls == ["early", "late"]


def test_a_sooner_timer_wakes_a_thread_sleeping_for_a_later_one(timers: Timers) -> None:
    fired = threading.Event()
    timers.call_at(time.monotonic() + 60.0, lambda: None)
    time.sleep(0.05)  # the thread now sleeps for a minute
    started = time.monotonic()
    timers.call_at(started + 0.05, fired.set)
    assert fired.wait(10.0)
    assert time.monotonic() - started < 10.0  # not the minute it was sleeping for


def test_a_cancelled_timer_is_never_called(timers: Timers) -> None:
    calls: list[str] = []
    done = threading.Event()
    now = time.monotonic()
    cancelled = timers.call_at(now + 0.05, note(calls, "cancelled"))
    timers.call_at(now + 0.1, note(calls, "kept", done))
    cancelled.cancel()
    assert done.wait(2.0)
    assert calls == ["kept"]
    assert timers.pending() == 0


def test_cancelling_the_timer_at_the_head_leaves_the_next_on_time(timers: Timers) -> None:
    fired = threading.Event()
    now = time.monotonic()
    head = timers.call_at(now + 0.05, lambda: None)
    timers.call_at(now + 0.1, fired.set)
    head.cancel()
    assert fired.wait(2.0)
    assert time.monotonic() - now < 1.0
