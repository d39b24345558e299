"""The agent over the in-memory transport: commands, shards, stages, errors, telemetry."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from splitmq.agent import Agent
from splitmq.wire import (
    Activation,
    AgentState,
    AgentStatus,
    CommandReply,
    ErrorCode,
    ErrorMessage,
    Ping,
    Pong,
    Result,
    ShardReady,
    Telemetry,
    UnloadShard,
    decode,
    encode,
)
from splitmq.wire.topics import STAGE, STATUS, TELEMETRY

from ..helpers import Collector, wait_until
from .conftest import CALLBACK, CutModel, MemoryFleet, load_command, request
from .events import Inbox, command, events, ready_for, reply_to


def deploy(
    fleet: MemoryFleet, events_inbox: Inbox, placements: list[tuple[Agent, object]], dep: str
) -> None:
    client = fleet.client(f"coordinator-{dep}")
    for i, (agent, shard) in enumerate(placements):
        fleet.pool.add(shard.data)  # type: ignore[attr-defined]
        command(client, agent.agent_id, load_command(shard, dep, command_id=f"{dep}-{i}"))
    for i, (agent, _) in enumerate(placements):
        wanted = f"{dep}-{i}"
        ready = events_inbox.wait_for(ShardReady, ready_for(wanted))
        assert ready.agent_id == agent.agent_id
        assert ready.bench_ms > 0


def send(
    fleet: MemoryFleet, activation: Activation, agent_id: str, payload: bytes | None = None
) -> None:
    client = fleet.client(f"sender-{os.urandom(4).hex()}")
    topic = STAGE.name(deployment=activation.deployment, stage=activation.stage, agent=agent_id)
    client.publish(topic, encode(activation) if payload is None else payload)


def outputs_match(result: Result, model: CutModel) -> None:
    (out,) = result.tensors
    (name,) = model.expected
    assert out.name == name
    np.testing.assert_array_equal(out.array, model.expected[name])


def test_birth_status_is_retained_and_the_will_marks_it_offline(fleet: MemoryFleet) -> None:
    agent = fleet.agent("rpi-1")
    status = decode(fleet.broker.retained(STATUS.name(agent="rpi-1")), expect=AgentStatus)  # type: ignore[arg-type]
    assert status.state is AgentState.ONLINE
    assert status.runtime == "litert" and status.runtime_version
    assert status.cores >= 1 and status.memory_bytes > 0
    assert status.profile == "host" and status.version
    assert status.site is None, "no site said"
    agent.transport.crash()  # type: ignore[attr-defined]
    gone = decode(fleet.broker.retained(STATUS.name(agent="rpi-1")), expect=AgentStatus)  # type: ignore[arg-type]
    assert gone.state is AgentState.OFFLINE


def test_the_status_says_the_agents_site(fleet: MemoryFleet) -> None:
    fleet.agent("pi-9", site="kitchen")
    status = decode(fleet.broker.retained(STATUS.name(agent="pi-9")), expect=AgentStatus)  # type: ignore[arg-type]
    assert status.site == "kitchen"


def test_two_agents_chain_and_answer_bit_exact(fleet: MemoryFleet, digits: CutModel) -> None:
    a, b = fleet.agent("a"), fleet.agent("b")
    client = fleet.client("alice")
    ev, results = events(client), Inbox(client, CALLBACK)
    deploy(fleet, ev, [(a, digits.shards[0]), (b, digits.shards[1])], "d2")
    activation = request(digits, "d2", (("a",), ("b",)))
    send(fleet, activation, "a")
    result = results.wait_for(Result)
    assert result.request_id == activation.request_id and result.agent_id == "b"
    outputs_match(result, digits)
    assert [(t.stage, t.agent_id) for t in result.trace] == [(0, "a"), (1, "b")]
    for entry in result.trace:
        assert entry.received_ms <= entry.started_ms <= entry.finished_ms
    assert result.trace[0].bytes_in > 0


@pytest.mark.parametrize("qos", [0, 1])
def test_the_next_hop_and_the_result_go_at_the_qos_the_request_came_at(
    fleet: MemoryFleet, digits: CutModel, qos: int
) -> None:
    """The client chooses its requests' QoS (``ClientConfig.hop_qos``); each agent keeps
    it for what it sends on: the next stage's activation and the result. An error goes
    at its topic's QoS 1 whatever the request's."""
    a, b = fleet.agent("a"), fleet.agent("b")
    client = fleet.client("alice")
    deploy(fleet, events(client), [(a, digits.shards[0]), (b, digits.shards[1])], "dq")
    forwarded, answered = Collector(), Collector()
    client.subscribe(STAGE.name(deployment="dq", stage=1, agent="b"), forwarded)
    client.subscribe(CALLBACK, answered)
    activation = request(digits, "dq", (("a",), ("b",)))
    topic = STAGE.name(deployment="dq", stage=0, agent="a")
    client.publish(topic, encode(activation), qos=qos)
    (hop,) = forwarded.wait_for(1)
    (result,) = answered.wait_for(1)
    assert (hop.qos, result.qos) == (qos, qos)
    assert decode(result.payload, expect=Result).request_id == activation.request_id
    wrong = replace(activation, request_id=os.urandom(16), stage=1)  # stage 1 sent to a
    client.publish(topic, encode(wrong), qos=qos)
    error = answered.wait_for(2)[1]
    assert decode(error.payload, expect=ErrorMessage).code == "bad_message"
    assert error.qos == 1


@pytest.mark.parametrize("model_name", ["digits3", "digits_int8"])
def test_stages_on_one_agent_run_in_process(
    fleet: MemoryFleet, model_name: str, request_fixture: pytest.FixtureRequest
) -> None:
    model: CutModel = request_fixture.getfixturevalue(model_name)
    solo = fleet.agent("solo")
    client = fleet.client("alice")
    ev, results = events(client), Inbox(client, CALLBACK)
    hops = Collector()
    client.subscribe(STAGE.filter(), hops)
    deploy(fleet, ev, [(solo, shard) for shard in model.shards], "local")
    activation = request(model, "local", tuple(("solo",) for _ in model.shards))
    send(fleet, activation, "solo")
    result = results.wait_for(Result)
    outputs_match(result, model)
    assert [t.stage for t in result.trace] == list(range(len(model.shards)))
    assert len(hops.messages) == 1, "a stage hop went through the broker"


@pytest.fixture
def request_fixture(request: pytest.FixtureRequest) -> pytest.FixtureRequest:
    return request


def test_a_cached_shard_is_never_fetched_twice_and_survives_restart(
    fleet: MemoryFleet, digits: CutModel
) -> None:
    shard = digits.shards[0]
    agent = fleet.agent("pi", fetch_chunk_bytes=1000)
    client = fleet.client("coordinator")
    ev = events(client)
    fleet.pool.add(shard.data)  # type: ignore[attr-defined]
    command(client, "pi", load_command(shard, "d", command_id="first"))
    ev.wait_for(ShardReady, lambda m: m.command_id == "first")
    chunks = fleet.pool.chunks_sent
    assert chunks >= shard.size_bytes // 8192  # type: ignore[attr-defined]
    assert fleet.pool.bytes_sent == shard.size_bytes  # type: ignore[attr-defined]
    assert shard.sha256 in agent.cache  # type: ignore[attr-defined]
    status = decode(fleet.broker.retained(STATUS.name(agent="pi")), expect=AgentStatus)  # type: ignore[arg-type]
    assert shard.sha256 in status.cached_shards  # type: ignore[attr-defined]
    agent.stop()
    fleet.agents.remove(agent)
    fleet.agent("pi")  # same cache directory, a new process would see the same
    command(client, "pi", load_command(shard, "d", command_id="again"))
    ev.wait_for(ShardReady, lambda m: m.command_id == "again")
    assert fleet.pool.chunks_sent == chunks


def test_a_shard_whose_bytes_do_not_match_the_digest_is_refused(
    fleet: MemoryFleet, digits: CutModel
) -> None:
    fleet.agent("pi")
    client = fleet.client("coordinator")
    ev = events(client)
    shard = digits.shards[0]
    forged = fleet.pool.add(bytes(shard.data[:-1]) + b"\x00")  # type: ignore[attr-defined]
    load = load_command(shard, "d", command_id="forged")
    # the pool serves other bytes under the announced digest
    fleet.pool._store[shard.sha256] = fleet.pool._store.pop(forged)  # type: ignore[attr-defined]
    command(client, "pi", load)
    reply = ev.wait_for(CommandReply, lambda m: m.command_id == "forged")
    assert not reply.ok and "hash" in reply.message
    command(client, "pi", load_command(shard, "d", command_id="missing", digest="0" * 64))
    reply = ev.wait_for(CommandReply, lambda m: m.command_id == "missing")
    assert not reply.ok and "no shard" in reply.message


def test_commands_from_others_than_the_coordinator_are_refused(
    fleet: MemoryFleet, digits: CutModel
) -> None:
    fleet.agent("pi")
    client = fleet.client("mallory")
    ev = events(client)
    fleet.pool.add(digits.shards[0].data)  # type: ignore[attr-defined]
    command(client, "pi", load_command(digits.shards[0], "d", command_id="evil", issuer="mallory"))
    reply = ev.wait_for(CommandReply, lambda m: m.command_id == "evil")
    assert not reply.ok and "coordinator" in reply.message
    command(client, "pi", Ping(command_id="p", issuer="coordinator", sent_ms=1.0))
    pong = ev.wait_for(Pong, lambda m: m.command_id == "p")
    assert pong.agent_id == "pi" and pong.sent_ms == 1.0
    assert not ev.of(ShardReady)


def test_errors_go_to_the_callback_and_the_agent_keeps_serving(
    fleet: MemoryFleet, digits: CutModel
) -> None:
    a = fleet.agent("a")
    client = fleet.client("alice")
    ev, results = events(client), Inbox(client, CALLBACK)
    deploy(fleet, ev, [(a, digits.shards[0]), (a, digits.shards[1])], "d")
    route = (("a",), ("a",))

    def expect_error(activation: Activation, code: ErrorCode, payload: bytes | None = None) -> None:
        send(fleet, activation, "a", payload)
        error = results.wait_for(ErrorMessage, lambda m: m.request_id == activation.request_id)
        assert error.code is code, error.message
        assert error.agent_id == "a" and error.message
        good = request(digits, "d", route)
        send(fleet, good, "a")
        outputs_match(results.wait_for(Result, lambda m: m.request_id == good.request_id), digits)

    wrong_shape = request(digits, "d", route, image=np.zeros((1, 9, 9, 1), np.float32))
    expect_error(wrong_shape, ErrorCode.SHAPE_MISMATCH)
    wrong_dtype = request(digits, "d", route, image=digits.image.astype(np.float16))
    expect_error(wrong_dtype, ErrorCode.SHAPE_MISMATCH)
    expect_error(request(digits, "d", route, name="not_the_input"), ErrorCode.SHAPE_MISMATCH)
    late = request(digits, "d", route, deadline_ms=int(time.time() * 1000) - 1)
    expect_error(late, ErrorCode.DEADLINE_EXCEEDED)
    malformed = request(digits, "d", route)
    payload = encode(malformed).replace(b"deadline_ms", b"deadline_xx")
    expect_error(malformed, ErrorCode.BAD_MESSAGE, payload)
    unknown = request(digits, "elsewhere", route)
    expect_error(unknown, ErrorCode.UNKNOWN_DEPLOYMENT)
    stage_not_here = Activation(**{**request(digits, "d", route).__dict__, "stage": 5})
    expect_error(stage_not_here, ErrorCode.SHARD_NOT_LOADED)

    send(fleet, request(digits, "d", route), "a", b"\xff not cbor")
    wait_until(lambda: a.counters.unroutable == 1, 5, "the garbage to be counted")
    stray = request(digits, "d", route, callback="splitmq/v1/agents/b/cmd")
    send(fleet, stray, "a")
    wait_until(lambda: a.counters.unroutable == 2, 5, "a non-result callback to be refused")


def test_a_duplicate_delivery_is_computed_once(fleet: MemoryFleet, digits: CutModel) -> None:
    a, b = fleet.agent("a"), fleet.agent("b")
    client = fleet.client("alice")
    ev, results = events(client), Inbox(client, CALLBACK)
    deploy(fleet, ev, [(a, digits.shards[0]), (b, digits.shards[1])], "d")
    activation = request(digits, "d", (("a",), ("b",)))
    send(fleet, activation, "a")
    send(fleet, activation, "a")
    retry = Activation(**{**activation.__dict__, "attempt": 1})
    send(fleet, retry, "a")
    wait_until(lambda: len(results.of(Result)) == 2, 10, "two results")
    wait_until(lambda: a.counters.duplicates == 1, 5, "the duplicate to be counted")
    assert sorted(r.attempt for r in results.of(Result)) == [0, 1]
    assert b.counters.duplicates == 0


class GatedShard:
    """A loaded shard whose runs wait for ``gate``: its stage worker stays busy, holding
    the request it took, until the test opens the gate."""

    def __init__(self, shard: Any, gate: threading.Event):
        self._shard = shard
        self._gate = gate
        self.entered = threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._shard, name)

    def run(self, arrays: dict[str, np.ndarray]) -> Any:
        self.entered.set()
        if not self._gate.wait(60):
            raise TimeoutError("the test never opened the gate")
        return self._shard.run(arrays)


def answering(activation: Activation) -> Callable[[ErrorMessage | Result], bool]:
    """A predicate: an answer (result or error) to ``activation``."""
    return lambda message: message.request_id == activation.request_id


def test_a_full_queue_answers_overloaded(fleet: MemoryFleet, digits: CutModel) -> None:
    a = fleet.agent("a", queue_size=1)
    client = fleet.client("alice")
    ev, results = events(client), Inbox(client, CALLBACK)
    deploy(fleet, ev, [(a, digits.shards[0]), (a, digits.shards[1])], "d")
    stage0 = a._stages[("d", 0)]
    gate = threading.Event()
    gated = GatedShard(stage0.shard, gate)
    stage0.shard = gated
    sent = [request(digits, "d", (("a",), ("a",))) for _ in range(6)]
    try:
        # The worker takes the first request and is busy with it; the second fills the
        # queue (one place); every one after that finds it full.
        send(fleet, sent[0], "a")
        assert gated.entered.wait(15), "the stage worker never took the first request"
        send(fleet, sent[1], "a")
        wait_until(lambda: stage0.queue.qsize() == 1, 15, "the second request to be queued")
        for activation in sent[2:]:
            send(fleet, activation, "a")
        for activation in sent[2:]:
            error = results.wait_for(ErrorMessage, answering(activation))
            assert error.code is ErrorCode.OVERLOADED, error.message
            assert error.agent_id == "a" and error.stage == 0
    finally:
        gate.set()
    # What was accepted is still served, exactly, and only the excess was refused.
    for activation in sent[:2]:
        result = results.wait_for(Result, answering(activation))
        outputs_match(result, digits)
    refused = {m.request_id for m in results.of(ErrorMessage)}
    assert refused == {s.request_id for s in sent[2:]}


def test_unload_frees_the_stage(fleet: MemoryFleet, digits: CutModel) -> None:
    a = fleet.agent("a")
    client = fleet.client("alice")
    ev, results = events(client), Inbox(client, CALLBACK)
    deploy(fleet, ev, [(a, digits.shards[0]), (a, digits.shards[1])], "d")
    assert a.hosted() == ["d/0", "d/1"]
    command(client, "a", UnloadShard(command_id="u", issuer="coordinator", deployment="d", stage=1))
    assert ev.wait_for(CommandReply, lambda m: m.command_id == "u").ok
    assert a.hosted() == ["d/0"]
    activation = request(digits, "d", (("a",), ("a",)))
    send(fleet, activation, "a")
    error = results.wait_for(ErrorMessage)
    assert error.code is ErrorCode.SHARD_NOT_LOADED and error.stage == 1
    command(
        client, "a", UnloadShard(command_id="u2", issuer="coordinator", deployment="d", stage=1)
    )
    assert not ev.wait_for(CommandReply, lambda m: m.command_id == "u2").ok


def test_the_agent_paces_its_acknowledgements_to_its_longest_stage(
    fleet: MemoryFleet, digits: CutModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The transport hears the longest time a request holds one of the agent's stages
    (its acknowledgement deadlines follow it), at load, every telemetry period, and 0
    once it hosts nothing."""
    a = fleet.agent("a")
    paced: list[float] = []
    monkeypatch.setattr(a.transport, "pace_acks", paced.append)
    client = fleet.client("alice")
    ev = events(client)
    deploy(fleet, ev, [(a, digits.shards[0]), (a, digits.shards[1])], "d")
    held_ms = [s.compute_ms for s in a.hosted_stages()]
    assert all(ms is not None and ms > 0 for ms in held_ms)
    longest_s = max(ms for ms in held_ms if ms is not None) / 1000.0
    wait_until(lambda: paced[-1:] == [longest_s], what="the agent's longest stage-time paced")
    for stage in (0, 1):
        command_id = f"u{stage}"
        unload = UnloadShard(
            command_id=command_id, issuer="coordinator", deployment="d", stage=stage
        )
        command(client, "a", unload)
        assert ev.wait_for(CommandReply, reply_to(command_id)).ok
    wait_until(lambda: paced[-1:] == [0.0], what="nothing hosted: the configured deadlines")


def test_shared_any_topic_is_served_when_asked(fleet: MemoryFleet, digits: CutModel) -> None:
    fleet.agent("a")
    client = fleet.client("alice")
    ev, results = events(client), Inbox(client, CALLBACK)
    for shard in digits.shards:
        fleet.pool.add(shard.data)  # type: ignore[attr-defined]
        command(client, "a", load_command(shard, "d", command_id=f"s{shard.stage}", shared=True))  # type: ignore[attr-defined]
    ev.wait_for(ShardReady, lambda m: m.command_id == "s1")
    ev.wait_for(ShardReady, lambda m: m.command_id == "s0")
    activation = request(digits, "d", (("any",), ("any",)))
    send(fleet, activation, "any")
    outputs_match(results.wait_for(Result), digits)


def test_telemetry_reports_load_battery_drain_and_broker_rtt(
    fleet: MemoryFleet, digits: CutModel
) -> None:
    from splitmq.agent import load_profile

    a = fleet.agent("phone-1", profile=load_profile("phone"), battery_pct=50.0, emulate=False)
    client = fleet.client("alice")
    ev, results = events(client), Inbox(client, CALLBACK)
    deploy(fleet, ev, [(a, digits.shards[0]), (a, digits.shards[1])], "d")
    send(fleet, request(digits, "d", (("phone-1",), ("phone-1",))), "phone-1")
    results.wait_for(Result)
    telemetry = Inbox(client, TELEMETRY.name(agent="phone-1"))
    first = telemetry.wait_for(Telemetry, lambda t: t.broker_rtt_ms is not None)
    later = telemetry.wait_for(Telemetry, lambda t: t.ts_ms > first.ts_ms + 100)
    assert first.battery.simulated and not first.battery.plugged
    assert 0 < later.battery.pct < first.battery.pct < 50.0
    assert later.energy_j > first.energy_j > 0
    assert first.profile == "phone" and first.period_s == 0.05
    assert set(later.compute_ms) == {"d/0", "d/1"} and all(v > 0 for v in later.compute_ms.values())
    assert later.queue_depth == {"d/0": 0, "d/1": 0}
    assert later.msgs_in > 0 and later.bytes_out > 0 and later.mem_free_bytes > 0
    assert first.broker_rtt_ms is not None and first.broker_rtt_ms >= 0
    retained = fleet.broker.retained(TELEMETRY.name(agent="phone-1"))
    assert retained is not None and decode(retained, expect=Telemetry).agent_id == "phone-1"


def test_the_emulated_link_delays_what_the_agent_sends(
    fleet: MemoryFleet, digits: CutModel, tmp_path: Path
) -> None:
    from splitmq.agent import load_profile

    profile = tmp_path / "far.toml"
    profile.write_text(
        'name = "far"\nactive_power_w = 2.0\nidle_power_w = 1.0\nradio_j_per_mb = 1.0\n'
        "battery_wh = 10.0\ncompute_factor = 1.0\n"
        "[link]\nbandwidth_mbps = 1.0\nlatency_ms = 150.0\n"
    )
    a = fleet.agent("far", profile=load_profile(profile))
    b = fleet.agent("near")
    client = fleet.client("alice")
    ev, results = events(client), Inbox(client, CALLBACK)
    deploy(fleet, ev, [(a, digits.shards[0]), (b, digits.shards[1])], "d")
    send(fleet, request(digits, "d", (("far",), ("near",))), "far")
    result = results.wait_for(Result)
    hop_ms = result.trace[1].received_ms - result.trace[0].finished_ms
    frontier_bytes = digits.shards[0].outputs[0].size_bytes  # type: ignore[attr-defined]
    assert hop_ms >= 150.0 + frontier_bytes * 8 / 1e6 * 1000 * 0.9
