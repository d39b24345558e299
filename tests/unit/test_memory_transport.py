"""The in-memory transport keeps the MQTT semantics the components rely on."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from splitmq.errors import PayloadTooLarge
from splitmq.transport import InboundMessage, MemoryBroker, Will

from ..helpers import Collector


def test_wildcards_retained_and_handler_threads() -> None:
    broker = MemoryBroker()
    publisher, subscriber = broker.transport("p"), broker.transport("s")
    publisher.start()
    subscriber.start()
    publisher.publish("ns/status/a", b"online", retain=True)
    got = Collector()
    subscriber.subscribe("ns/status/+", got)
    publisher.publish("ns/status/b", b"online")
    publisher.publish("ns/other", b"x")
    messages = got.wait_for(2)
    assert [(m.topic, m.retain) for m in messages] == [
        ("ns/status/a", True),
        ("ns/status/b", False),
    ]
    assert got.threads == {"s-inbox-0"}
    publisher.close()
    subscriber.close()


def test_shared_subscription_gives_each_message_to_one_member() -> None:
    broker = MemoryBroker()
    publisher = broker.transport("p")
    members = [broker.transport(f"m{i}") for i in range(3)]
    collectors = [Collector() for _ in members]
    publisher.start()
    for member, collector in zip(members, collectors, strict=True):
        member.start()
        member.subscribe("$share/g/jobs/+", collector)
    for i in range(9):
        publisher.publish(f"jobs/{i}", b"")
    for collector in collectors:
        collector.wait_for(3)
    assert sum(len(c.messages) for c in collectors) == 9


def test_will_on_crash_not_on_close() -> None:
    broker = MemoryBroker()
    watcher = broker.transport("w")
    watcher.start()
    got = Collector()
    watcher.subscribe("status/#", got)
    clean = broker.transport("clean", will=Will("status/clean", b"offline"))
    crashing = broker.transport("crash", will=Will("status/crash", b"offline"))
    clean.start()
    crashing.start()
    clean.close()
    crashing.crash()
    assert [m.topic for m in got.wait_for(1)] == ["status/crash"]
    assert broker.retained("status/crash") == b"offline"
    assert broker.retained("status/clean") is None


def test_overflow_is_counted_and_reported() -> None:
    broker = MemoryBroker()
    busy, release = threading.Event(), threading.Event()
    overflowed: list[str] = []

    def handler(_message: InboundMessage) -> None:
        busy.set()
        release.wait(5)

    slow = broker.transport("slow", inbox_size=2, on_overflow=lambda m: overflowed.append(m.topic))
    slow.start()
    slow.subscribe("t/#", handler)
    sender = broker.transport("sender")
    sender.start()
    sender.publish("t/0", b"")
    assert busy.wait(5)
    for i in range(1, 10):
        sender.publish(f"t/{i}", b"")
    deadline = time.monotonic() + 5
    while slow.stats.dropped_in < 7 and time.monotonic() < deadline:
        time.sleep(0.01)
    release.set()
    assert slow.stats.dropped_in == 7  # one in the handler, two queued
    assert overflowed == [f"t/{i}" for i in range(3, 10)]


def test_payload_size_is_checked() -> None:
    broker = MemoryBroker(max_packet_bytes=1000)
    transport = broker.transport("t")
    transport.start()
    with pytest.raises(PayloadTooLarge, match="above the broker's limit of 1000 bytes"):
        transport.publish("x", bytes(2000))


def test_a_fast_path_takes_what_it_can_and_leaves_the_rest_to_the_worker() -> None:
    broker = MemoryBroker()
    transport = broker.transport("agent")
    transport.start()
    taken: list[tuple[str, str]] = []
    got = Collector()

    def fast(message: InboundMessage) -> bool:
        taken.append((message.topic, threading.current_thread().name))
        return message.topic.endswith("/mine")

    transport.subscribe("stage/#", got, fast_path=fast)
    sender = broker.transport("sender")
    sender.start()
    sender.publish("stage/mine", b"")
    sender.publish("stage/other", b"")
    assert [m.topic for m in got.wait_for(1)] == ["stage/other"]
    # The fast path ran on the delivering thread, before any inbox hand-off.
    assert taken == [("stage/mine", "MainThread"), ("stage/other", "MainThread")]
    assert got.threads == {"agent-inbox-0"}


def test_a_topics_fast_path_follows_the_subscriptions_as_they_change() -> None:
    """Each topic's fast path is found once; a new, replaced or dropped subscription
    applies to the next message on a topic already seen."""
    broker = MemoryBroker()
    transport = broker.transport("agent")
    transport.start()
    taken: list[str] = []
    got = Collector()
    sender = broker.transport("sender")
    sender.start()

    def taking(label: str) -> Callable[[InboundMessage], bool]:
        def fast(message: InboundMessage) -> bool:
            taken.append(label)
            return True

        return fast

    transport.subscribe("stage/#", got, fast_path=taking("first"))
    sender.publish("stage/a", b"")
    transport.subscribe("stage/#", got, fast_path=taking("second"))
    sender.publish("stage/a", b"")
    transport.subscribe("stage/#", got)  # no fast path any more: the inbox worker
    sender.publish("stage/a", b"")
    assert [m.topic for m in got.wait_for(1)] == ["stage/a"]
    assert taken == ["first", "second"]
    transport.unsubscribe("stage/#")
    transport.subscribe("stage/+", got, fast_path=taking("third"))
    sender.publish("stage/a", b"")
    sender.publish("stage/a/b", b"")  # matches no filter now
    assert taken == ["first", "second", "third"]


def test_an_interrupted_link_loses_what_comes_in_and_holds_what_goes_out() -> None:
    broker = MemoryBroker()
    a, b = broker.transport("a"), broker.transport("b")
    events: list[bool] = []
    a.add_connection_listener(events.append)
    a.start()
    b.start()
    at_a, at_b = Collector(), Collector()
    a.subscribe("to/a", at_a)
    b.subscribe("to/b", at_b)
    a.interrupt()
    b.publish("to/a", b"lost")  # the broker keeps no session for a
    a.publish("to/b", b"held")  # waits in a's outbox
    time.sleep(0.1)
    assert at_a.messages == [] and at_b.messages == [] and a.stats.dropped_in == 1
    a.resume()
    assert [m.payload for m in at_b.wait_for(1)] == [b"held"]
    b.publish("to/a", b"after")
    assert [m.payload for m in at_a.wait_for(1)] == [b"after"]
    assert events == [True, False, True]
    a.close()
    b.close()
