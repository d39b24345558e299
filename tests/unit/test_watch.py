"""The one retained-topic watcher (splitmq.watch) over the in-memory broker."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from splitmq.transport import MemoryBroker, Transport
from splitmq.watch import Watcher
from splitmq.wire import AgentState, AgentStatus, Deployment, DeployReply, Ping, encode
from splitmq.wire.topics import DEPLOY_REPLIES, DEPLOYMENTS, STATUS


@pytest.fixture
def peers() -> Iterator[tuple[Transport, Transport]]:
    broker = MemoryBroker()
    publisher, watching = broker.transport("publisher"), broker.transport("watcher")
    publisher.start()
    watching.start()
    yield publisher, watching
    publisher.close()
    watching.close()


def deployment(epoch: int) -> Deployment:
    return Deployment(
        deployment="d1", model="m", version="v", variant="float32", epoch=epoch, stages=()
    )


def test_retained_state_is_there_at_once_and_the_latest_is_kept(
    peers: tuple[Transport, Transport],
) -> None:
    publisher, transport = peers
    STATUS.publish(publisher, AgentStatus("a", AgentState.ONLINE), agent="a").wait(5)
    watcher = Watcher(transport).watch(STATUS).watch(DEPLOYMENTS)
    watcher.wait(lambda: watcher.online("a"), 5, "a online")
    for epoch in (2, 1):  # an older epoch arriving late does not replace the newer one
        DEPLOYMENTS.publish(publisher, deployment(epoch), deployment="d1").wait(5)
    watcher.wait_for(Deployment, lambda d: d.epoch == 1, 5)
    assert watcher.deployments["d1"].epoch == 2
    assert [d.epoch for d in watcher.of(Deployment)] == [2, 1]
    STATUS.publish(publisher, AgentStatus("a", AgentState.OFFLINE), agent="a").wait(5)
    watcher.wait(lambda: not watcher.online("a"), 5, "a offline")
    watcher.forget()
    assert watcher.received == [] and watcher.status == {} and watcher.deployments == {}


def test_answers_are_found_by_request_id(peers: tuple[Transport, Transport]) -> None:
    publisher, transport = peers
    watcher = Watcher(transport).watch(DEPLOY_REPLIES, client="ops")
    reply = DeployReply("r-1", ok=True, message="deployed")
    DEPLOY_REPLIES.publish(publisher, reply, client="ops").wait(5)
    assert watcher.wait_answer("r-1", 5) == reply
    with pytest.raises(TimeoutError, match="an answer to r-2"):
        watcher.wait_answer("r-2", 0.05)


def test_a_strangers_garbage_is_one_warning_and_the_watch_goes_on(
    peers: tuple[Transport, Transport], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="splitmq.watch")
    publisher, transport = peers
    watcher = Watcher(transport).watch(STATUS)
    publisher.publish(STATUS.name(agent="x"), b"\xffnot cbor").wait(5)
    publisher.publish(STATUS.name(agent="y"), encode(Ping("p", "y", 0.0))).wait(5)  # wrong kind
    STATUS.publish(publisher, AgentStatus("z", AgentState.ONLINE), agent="z").wait(5)
    watcher.wait(lambda: watcher.online("z"), 5, "z online")
    assert watcher.undecodable == 2
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and all(line.startswith("ignored a bad message on ") for line in lines)


def test_waiting_for_what_never_comes_times_out_naming_it(
    peers: tuple[Transport, Transport],
) -> None:
    watcher = Watcher(peers[1]).watch(STATUS)
    with pytest.raises(TimeoutError, match=r"no Deployment within 0\.05 s"):
        watcher.wait_for(Deployment, timeout_s=0.05)
    with pytest.raises(TimeoutError, match="waiting for rpi-1 online"):
        watcher.wait(lambda: watcher.online("rpi-1"), 0.05, "rpi-1 online")
