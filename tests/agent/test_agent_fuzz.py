"""Property tests of the agent's message handlers with hostile input (hypothesis).

One agent over the in-memory transport hosts both stages of the digits model; its shards
are wrapped in a spy that records every input it is asked to run. Random bytes, mutated
valid messages and well-formed CBOR that lies (shapes, dtypes, truncated bytes, routes,
callbacks, deadlines) go to its stage handler, its command handler and its pool handler.
The handlers never raise, the spy never sees an input that does not match the shard,
nothing but the commands' issuer-checked coordinator gets obeyed, results and errors
only ever go to a client's result topic, and the agent answers a good request exactly
afterwards.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cbor2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from splitmq.agent import Agent, AgentConfig, agent_will, load_profile
from splitmq.agent.requests import Job, now_ms
from splitmq.coordinator.pool_service import PoolService
from splitmq.transport import InboundMessage, MemoryBroker, Transport
from splitmq.wire import (
    REQUEST_ID_BYTES,
    CommandReply,
    ErrorMessage,
    LoadShard,
    Message,
    Ping,
    Result,
    ShardChunk,
    ShardReady,
    UnloadShard,
    decode,
    encode,
)
from splitmq.wire.topics import COMMANDS, POOL_CHUNKS, STAGE

from ..helpers import wait_until
from ..unit.samples import sample_messages
from .conftest import CutModel, load_command, request
from .events import Inbox, command, events, ready_for
from .hostile import CALLBACK, hostile_activations, lying_activations

AGENT = "fuzz-agent"
DEPLOYMENT = "d"
MARKS = "fuzz-test/settled"
"""Where the watcher sends itself markers (outside the namespace: never recorded)."""


class SpyShard:
    """A loaded shard that records what it is asked to run and whether it fits."""

    def __init__(self, shard: Any):
        self._shard = shard
        self.runs = 0
        self.misfits: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._shard, name)

    def run(self, arrays: dict[str, np.ndarray]) -> Any:
        specs = {s.name: s for s in self._shard.inputs}
        if set(arrays) != set(specs):
            self.misfits.append(f"inputs {sorted(arrays)}")
        for name, array in arrays.items():
            spec = specs.get(name)
            if spec is None or tuple(array.shape) != tuple(spec.shape):
                self.misfits.append(f"{name} shape {array.shape}")
            elif array.dtype.name != spec.dtype:
                self.misfits.append(f"{name} dtype {array.dtype}")
        self.runs += 1
        return self._shard.run(arrays)


@dataclass
class Target:
    agent: Agent
    spies: list[SpyShard]
    answers: Inbox
    watcher: Transport
    published: list[tuple[str, bytes | bytearray]] = field(default_factory=list)
    marks: set[bytes] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, message: InboundMessage) -> None:
        with self.lock:
            self.published.append((message.topic, message.payload))

    def mark(self, message: InboundMessage) -> None:
        with self.lock:
            self.marks.add(bytes(message.payload))

    def settle(self, timeout_s: float = 60.0) -> None:
        """Return once the watcher has recorded everything published before the call.

        The watcher records on its own inbox thread, which lags the publishers when the
        machine is loaded; a marker it sends itself is handled after all of that (one
        FIFO, one worker). The marker goes again if a full inbox dropped it.
        """
        mark = os.urandom(8)
        deadline = time.monotonic() + timeout_s

        def marked() -> bool:
            with self.lock:
                return mark in self.marks

        while not marked():
            if time.monotonic() > deadline:
                raise AssertionError(f"the watcher did not catch up within {timeout_s} s")
            self.watcher.publish(MARKS, mark)
            retry = time.monotonic() + 1.0
            while not marked() and time.monotonic() < retry:
                time.sleep(0.01)


@pytest.fixture(scope="module")
def target(digits: CutModel, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    broker = MemoryBroker()
    pool_transport = broker.transport("pool")
    pool_transport.start()
    pool = PoolService(pool_transport, chunk_bytes=8192)
    pool.start()
    config = AgentConfig(
        agent_id=AGENT,
        profile=load_profile("host"),
        cache_dir=Path(tmp_path_factory.mktemp("fuzz-cache")),
        xnnpack=False,
        telemetry_period_s=60.0,
        bench_runs=1,
        battery="simulated",  # type: ignore[arg-type]
        threads=1,
    )
    agent = Agent(config, broker.transport(AGENT, will=agent_will(config)))
    agent.start()
    coordinator = broker.transport("coordinator")
    coordinator.start()
    inbox = events(coordinator)
    for shard in digits.shards:
        pool.add(shard.data)  # type: ignore[attr-defined]
        load = load_command(shard, DEPLOYMENT, command_id=f"load-{shard.stage}")  # type: ignore[attr-defined]
        command(coordinator, AGENT, load)
    for shard in digits.shards:
        inbox.wait_for(ShardReady, ready_for(f"load-{shard.stage}"))  # type: ignore[attr-defined]
    spies = []
    for hosted in agent._stages.values():
        spy = SpyShard(hosted.shard)
        hosted.shard = spy
        spies.append(spy)
    watcher = broker.transport("watcher")
    watcher.start()
    made = Target(agent, spies, Inbox(watcher, CALLBACK), watcher)
    watcher.subscribe("splitmq/v1/#", made.record)
    watcher.subscribe(MARKS, made.mark)
    yield made
    agent.stop()
    for transport in (watcher, coordinator, pool_transport):
        transport.close()


def handle_stage(target: Target, payload: bytes) -> None:
    """What the stage worker does with a message on each hosted stage, and the inbox with
    one on a stage it does not host; synchronously, so a raise fails the example."""
    agent = target.agent
    for (deployment, stage), hosted in list(agent._stages.items()):
        topic = STAGE.name(deployment=deployment, stage=stage, agent=AGENT)
        agent.workers.process(hosted, Job(InboundMessage(topic, payload), now_ms()))
    stray = STAGE.name(deployment="elsewhere", stage=0, agent=AGENT)
    agent.workers.on_stage(InboundMessage(stray, payload))
    assert not any(spy.misfits for spy in target.spies), [s.misfits for s in target.spies]


def valid_sample(digits: CutModel) -> bytes:
    return encode(request(digits, DEPLOYMENT, ((AGENT,), (AGENT,)), callback=CALLBACK))


@pytest.mark.slow  # seconds of work: the full tier runs it (make test)
@settings(
    max_examples=2000,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_hostile_activations_are_refused_and_never_computed(
    target: Target, digits: CutModel, data: st.DataObject
) -> None:
    input_name = digits.input_name
    choice = data.draw(st.sampled_from(["bytes", "mutated", "lying"]))
    if choice == "bytes":
        payload = data.draw(st.binary(max_size=512))
    elif choice == "mutated":
        mutated = bytearray(valid_sample(digits))
        for _ in range(data.draw(st.integers(1, 4))):
            position = data.draw(st.integers(0, len(mutated) - 1))
            mutated[position] = data.draw(st.integers(0, 255))
        if data.draw(st.booleans()):
            del mutated[data.draw(st.integers(0, len(mutated))) :]
        payload = bytes(mutated)
    else:
        payload = data.draw(lying_activations(DEPLOYMENT, input_name))
    handle_stage(target, payload)


def answerable(payload: bytes) -> bytes | None:
    """The request id of a payload that names one and a client's result topic to answer on."""
    try:
        body = cbor2.loads(payload)
    except Exception:  # garbage, or nested too deep: nothing to answer
        return None
    if not isinstance(body, dict) or body.get("callback") != CALLBACK:
        return None
    request_id = body.get("request_id")
    if isinstance(request_id, bytes) and len(request_id) == REQUEST_ID_BYTES:
        return request_id
    return None


def test_named_hostile_activations_each_get_an_error_not_a_result(
    target: Target, digits: CutModel
) -> None:
    shape = list(digits.image.shape)
    payloads = hostile_activations(DEPLOYMENT, digits.input_name, shape)
    addressed = {name: rid for name, p in payloads.items() if (rid := answerable(p)) is not None}
    handlers = len(target.agent._stages) + 1  # handle_stage: each hosted stage and the stray
    # The previous test's results may still be on their way to the watcher: let them
    # land before counting, or they would pass for answers to these payloads.
    target.settle()
    runs = sum(spy.runs for spy in target.spies)
    unroutable = target.agent.counters.unroutable
    with target.lock:
        first = len(target.published)
    for name, payload in payloads.items():
        handle_stage(target, payload)
        assert sum(spy.runs for spy in target.spies) == runs, f"{name} was computed"

    def answers() -> list[Message]:
        with target.lock:
            return [decode(p) for t, p in target.published[first:] if t == CALLBACK]

    def answered(request_id: bytes) -> list[Message]:
        return [a for a in answers() if getattr(a, "request_id", None) == request_id]

    # Every handler answers every payload that names a request and a result topic; the
    # answers travel through the in-memory broker and the watcher's thread. The others
    # cannot be answered: the agent counts them as unroutable.
    wait_until(
        lambda: all(len(answered(rid)) >= handlers for rid in addressed.values()),
        60,
        "an error from every handler for every addressable hostile payload",
    )
    target.settle()  # whatever else was published for them has landed too
    for name, rid in addressed.items():
        kinds = [type(a).__name__ for a in answered(rid)]
        assert kinds == [ErrorMessage.__name__] * handlers, (name, kinds)
    assert not any(isinstance(a, Result) for a in answers())
    unanswerable = len(payloads) - len(addressed)
    assert target.agent.counters.unroutable - unroutable == handlers * unanswerable
    # Whatever it was sent, the agent only ever spoke on its own topics, to the next
    # stage of a route, or to a client's result topic: never a command, plan or deployment.
    with target.lock:
        topics = {t for t, _ in target.published}
    own = {f"splitmq/v1/agents/{AGENT}/{leaf}" for leaf in ("status", "telemetry", "events", "cmd")}
    allowed = re.compile(r"splitmq/v1/(stage/[^/]+/\d+/[^/+#]+|clients/[^/+#]+/result)")
    assert all(t in own or allowed.fullmatch(t) for t in topics), sorted(topics)
    # ... and a good request still gets the exact answer.
    good = request(digits, DEPLOYMENT, ((AGENT,), (AGENT,)), callback=CALLBACK)
    handle_stage(target, encode(good))
    result = target.answers.wait_for(Result, lambda r: r.request_id == good.request_id, 60)
    (out,) = result.tensors
    np.testing.assert_array_equal(out.array, next(iter(digits.expected.values())))


COMMAND_SAMPLES = [
    encode(m).replace(b"coordinator", b"mallory-bad")
    for m in sample_messages()
    if isinstance(m, LoadShard | UnloadShard | Ping)
]


@settings(
    max_examples=1000,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_hostile_commands_never_raise_and_only_the_coordinator_is_obeyed(
    target: Target, data: st.DataObject
) -> None:
    if data.draw(st.booleans()):
        payload = data.draw(st.binary(max_size=256))
    else:
        mutated = bytearray(data.draw(st.sampled_from(COMMAND_SAMPLES)))
        for _ in range(data.draw(st.integers(0, 3))):
            position = data.draw(st.integers(0, len(mutated) - 1))
            mutated[position] = data.draw(st.integers(0, 255))
        payload = bytes(mutated)
    agent = target.agent
    hosted_before = agent.hosted()
    agent._on_command(InboundMessage(COMMANDS.name(agent=AGENT), payload))
    assert agent._commands.qsize() == 0, "a command from someone else was queued"
    assert agent.hosted() == hosted_before
    agent._fetcher.on_message(InboundMessage(POOL_CHUNKS.name(agent=AGENT), payload))


def test_a_forged_load_is_refused_with_a_reply(target: Target, digits: CutModel) -> None:
    shard = digits.shards[0]
    forged = load_command(shard, "stolen", command_id="forged", issuer="mallory")
    target.agent._on_command(InboundMessage(COMMANDS.name(agent=AGENT), encode(forged)))
    deadline = time.monotonic() + 5
    while True:
        with target.lock:
            replies = [
                decode(p)
                for t, p in target.published
                if t.endswith(f"{AGENT}/events") and b"forged" in p
            ]
        if replies or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    assert replies and isinstance(replies[0], CommandReply) and not replies[0].ok
    assert "stolen/0" not in target.agent.hosted()
    chunk = ShardChunk("ab" * 32, 0, 10, b"0123456789")  # nobody asked for it: ignored
    target.agent._fetcher.on_message(InboundMessage(POOL_CHUNKS.name(agent=AGENT), encode(chunk)))
    assert not any(d.startswith("ab") for d in target.agent.cache.digests())
