"""LatestByTopic: a flood of state messages is conflated per topic, never dropped or
reordered, and a waiter sees every message that arrived before it."""

from __future__ import annotations

import threading

from splitmq.transport import InboundMessage
from splitmq.transport.latest import LatestByTopic


def message(topic: str, payload: bytes) -> InboundMessage:
    return InboundMessage(topic, payload)


def pending(latest: LatestByTopic) -> int:
    return latest.pending


def test_the_newest_message_of_each_topic_is_handled_in_first_arrival_order() -> None:
    seen: list[tuple[str, bytes]] = []
    gate = threading.Event()
    superseded: list[bytes] = []

    def handler(m: InboundMessage) -> None:
        gate.wait(5)  # the first message holds the thread while the flood arrives
        seen.append((m.topic, bytes(m.payload)))

    latest = LatestByTopic("t", handler, superseded=lambda m: superseded.append(bytes(m.payload)))
    latest.start()
    try:
        assert latest.fast_path(message("a", b"0"))
        while pending(latest):  # the thread took "a"/0 and waits at the gate
            threading.Event().wait(0.001)
        for round_ in range(1, 101):
            for topic in ("b", "a", "c"):
                assert latest.fast_path(message(topic, str(round_).encode()))
        assert pending(latest) == 3  # 300 messages, three topics: three slots
        gate.set()
        assert latest.wait_caught_up(5)
    finally:
        latest.stop()
    assert seen == [("a", b"0"), ("b", b"100"), ("a", b"100"), ("c", b"100")]
    assert len(superseded) == 297 and latest.conflated == 297 and latest.handled == 4


def test_a_waiter_sees_every_message_taken_before_it() -> None:
    state: dict[str, bytes] = {}
    latest = LatestByTopic("t", lambda m: state.__setitem__(m.topic, bytes(m.payload)))
    latest.start()
    try:
        for index in range(2000):
            latest.fast_path(message(f"agent-{index % 500}", str(index).encode()))
        assert latest.wait_caught_up(5)
        assert len(state) == 500 and state["agent-499"] == b"1999"
    finally:
        latest.stop()


def test_a_failing_handler_is_logged_and_the_rest_still_handled() -> None:
    handled: list[str] = []

    def handler(m: InboundMessage) -> None:
        if m.topic == "bad":
            raise ValueError("broken")
        handled.append(m.topic)

    latest = LatestByTopic("t", handler)
    latest.start()
    try:
        for topic in ("x", "bad", "y"):
            latest.fast_path(message(topic, b""))
        assert latest.wait_caught_up(5)
    finally:
        latest.stop()
    assert handled == ["x", "y"]


def test_waiting_gives_up_after_its_timeout() -> None:
    gate = threading.Event()

    def handler(_message: InboundMessage) -> None:
        gate.wait(5)

    latest = LatestByTopic("t", handler)
    latest.start()
    try:
        latest.fast_path(message("a", b""))
        assert latest.wait_caught_up(0.05) is False
        gate.set()
        assert latest.wait_caught_up(5)
    finally:
        latest.stop()
