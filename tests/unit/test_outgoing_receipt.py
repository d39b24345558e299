"""A publish's receipt: its event is made only when somebody waits, and no finish is
missed however the two threads interleave."""

from __future__ import annotations

import threading

import pytest

from splitmq.errors import TransportError
from splitmq.transport.mqtt import _Outgoing
from splitmq.transport.mqtt_errors import PublishRefused


def _message() -> _Outgoing:
    return _Outgoing("t", [b"x"], 1, 1, False, None)


def test_finished_before_the_wait_returns_at_once_without_an_event() -> None:
    message = _message()
    message.finish()
    message.wait(0.0)
    assert message._event is None


def test_the_error_it_finished_with_is_raised() -> None:
    message = _message()
    message.finish(PublishRefused("t", "quota exceeded"))
    with pytest.raises(PublishRefused, match="quota exceeded"):
        message.wait(1.0)


def test_an_unfinished_wait_times_out_saying_so() -> None:
    with pytest.raises(TransportError, match=r"not acknowledged in 0\.01 s"):
        _message().wait(0.01)


def test_a_finish_racing_the_wait_is_never_missed() -> None:
    for _ in range(2000):
        message = _message()
        finisher = threading.Thread(target=message.finish)
        finisher.start()
        message.wait(30.0)  # a missed finish would wait out the 30 s and raise
        finisher.join()
