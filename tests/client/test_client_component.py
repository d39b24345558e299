"""The client over the in-memory transport, against real agents serving the digits shards."""

from __future__ import annotations

import itertools
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from splitmq.agent import Agent, AgentConfig, BatteryMode, load_profile
from splitmq.client import (
    Client,
    ClientConfig,
    DeadlineError,
    InferenceError,
    InferenceResult,
    PlanRefusedError,
)
from splitmq.client.routes import PROBE_EVERY
from splitmq.client.timers import Timer
from splitmq.coordinator.planner import AgentView, DeploymentView, StageView, plan
from splitmq.errors import ConfigError
from splitmq.transport import InboundMessage, MemoryTransport, Transport
from splitmq.wire import (
    Activation,
    AgentState,
    AgentStatus,
    DeploymentState,
    ErrorCode,
    ErrorMessage,
    Link,
    Plan,
    PlanRefused,
    PlanRequest,
    Result,
    decode,
    encode,
)
from splitmq.wire.topics import DEPLOYMENTS, RESULTS, STAGE, STATUS

from ..agent.conftest import CutModel
from ..helpers import Collector, needs, wait_until
from .conftest import ClientFleet, Records, always, fixed_plan, slow_profile

Expected = Callable[[int], np.ndarray]


def only_output(result: InferenceResult) -> np.ndarray:
    (output,) = result.outputs.values()
    return output


def test_infer_gives_the_unsplit_models_output_with_its_trace(
    fleet_with_coordinator: ClientFleet, digits: CutModel
) -> None:
    env = fleet_with_coordinator
    env.fleet.agent("a"), env.fleet.agent("b")
    env.deploy(digits, [["a"], ["b"]])
    env.answer(always(fixed_plan((("a",), ("b",)))))
    records = Records()
    client = env.client(records=records)
    result = client.infer(digits.image)
    (name,) = digits.expected
    assert list(result.outputs) == [name]
    np.testing.assert_array_equal(result.outputs[name], digits.expected[name])
    assert [(e.stage, e.agent_id, e.attempt) for e in result.trace] == [(0, "a", 0), (1, "b", 0)]
    record = result.record
    assert record.ok and record.deployment == "d" and record.variant == "float32"
    assert [(a.attempt, a.route, a.outcome) for a in record.attempts] == [(0, ("a", "b"), "result")]
    assert record.bytes_sent > digits.image.nbytes and record.bytes_received > 0
    assert record.top[0][0] == int(np.argmax(digits.expected[name]))
    assert result.top(1) == record.top[:1] and result.plan.route == (("a",), ("b",))
    assert records.wait_for(1) == [record]
    again = client.infer(digits.image[0])  # no batch axis: the client adds it
    np.testing.assert_array_equal(only_output(again), digits.expected[name])
    assert env.coordinator.plans_asked() == 1, "the plan is cached for its epoch"


def test_a_new_epoch_or_a_retired_deployment_drops_the_cached_plan(
    fleet_with_coordinator: ClientFleet, digits: CutModel
) -> None:
    env = fleet_with_coordinator
    env.on_one_agent(digits)
    client = env.client()
    client.infer(digits.image)
    client.infer(digits.image)
    assert env.coordinator.plans_asked() == 1
    deployment = env.deploy(digits, [["a"], ["a"]], epoch=2)
    env.answer(always(fixed_plan((("a",), ("a",)), epoch=2)))
    wait_until(lambda: client.deployment("d") == deployment, 5, "epoch 2 to arrive")
    assert client.infer(digits.image).record.epoch == 2
    assert env.coordinator.plans_asked() == 2
    retired = replace(deployment, state=DeploymentState.RETIRED)
    env.fleet.client("operator").publish(
        DEPLOYMENTS.name(deployment="d"), encode(retired), retain=True
    )
    wait_until(lambda: client.deployment("d") == retired, 5, "the retirement to arrive")
    client.infer(digits.image)  # the agents still serve it; the plan was asked again
    assert env.coordinator.plans_asked() == 3


def test_async_and_three_stages(fleet_with_coordinator: ClientFleet, digits3: CutModel) -> None:
    env = fleet_with_coordinator
    for agent_id in ("a", "b", "c"):
        env.fleet.agent(agent_id)
    env.deploy(digits3, [["a"], ["b"], ["c"]])
    env.answer(always(fixed_plan((("a",), ("b",), ("c",)))))
    client = env.client()
    futures = [client.infer_async(digits3.image) for _ in range(5)]
    (name,) = digits3.expected
    for future in futures:
        result = future.result(timeout=10)
        np.testing.assert_array_equal(result.outputs[name], digits3.expected[name])
        assert [e.agent_id for e in result.trace] == ["a", "b", "c"]
    assert len({f.result().record.request_id for f in futures}) == 5


@pytest.mark.parametrize("ordered", [True, False])
def test_stream_keeps_many_in_flight_and_yields_every_result(
    fleet_with_coordinator: ClientFleet,
    digits: CutModel,
    test_images: np.ndarray,
    expected_outputs: Expected,
    ordered: bool,
) -> None:
    env = fleet_with_coordinator
    env.fleet.agent("a"), env.fleet.agent("b")
    env.deploy(digits, [["a"], ["b"]])
    env.answer(always(fixed_plan((("a",), ("b",)))))
    records = Records()
    client = env.client(records=records)
    peak = 0

    def frames() -> Iterator[np.ndarray]:  # a camera: frames produced as the stream asks for them
        nonlocal peak
        for i in range(40):
            peak = max(peak, client.in_flight)
            yield test_images[i]

    items = list(client.stream(frames(), ordered=ordered, max_in_flight=8))
    assert all(isinstance(item, InferenceResult) for item in items)
    indexes = [item.index for item in items]
    assert sorted(indexes) == list(range(40))  # type: ignore[type-var]
    if ordered:
        assert indexes == list(range(40))
    for item in items:
        assert isinstance(item, InferenceResult) and item.index is not None
        np.testing.assert_array_equal(only_output(item), expected_outputs(item.index))
    assert 1 < peak <= 8
    assert len({r.request_id for r in records.wait_for(40)}) == 40
    assert client._timers.pending() == 0  # every deadline, timeout and plan wait cancelled


def test_a_stream_paces_the_clients_acknowledgements_by_its_period(
    fleet_with_coordinator: ClientFleet,
    digits: CutModel,
    test_images: np.ndarray,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """One request at a time tells the transport nothing (the configured deadlines); a
    stream tells it the period between its results, within the stream's span, and 0
    once requests go one at a time again (also whenever the window emptied: a caller
    that did not ask again before every answer was in)."""
    env = fleet_with_coordinator
    env.fleet.agent("a")
    env.fleet.agent("b", profile=load_profile(slow_profile(tmp_path, 100)))  # a stage-time
    env.deploy(digits, [["a"], ["b"]])
    env.answer(always(fixed_plan((("a",), ("b",)))))
    client = env.client()
    paced: list[float] = []
    monkeypatch.setattr(client.transport, "pace_acks", paced.append)
    for i in range(12):
        client.infer(test_images[i])
    assert paced == [], "one request at a time has no period"
    began = time.monotonic()
    items = list(client.stream(iter(test_images[:40]), max_in_flight=4))
    span_s = time.monotonic() - began
    assert all(isinstance(item, InferenceResult) for item in items)
    periods = [period for period in paced if period]  # 0: its window had emptied
    assert periods and all(period < span_s for period in periods), (paced, span_s)
    for i in range(2):
        client.infer(test_images[i])
    assert paced[-1] == 0.0, "one at a time again: the configured deadlines"


def test_a_stage_agent_crashing_mid_stream_loses_and_duplicates_nothing(
    fleet_with_coordinator: ClientFleet,
    digits: CutModel,
    test_images: np.ndarray,
    expected_outputs: Expected,
    tmp_path: Path,
) -> None:
    env = fleet_with_coordinator
    slow = load_profile(slow_profile(tmp_path, 300))
    env.fleet.agent("a"), env.fleet.agent("a2")
    # Queues with room for the retries a loaded machine makes once b2 carries everything
    # (attempts that time out leave their copies queued): overload is tested elsewhere.
    b = env.fleet.agent("b", profile=slow, queue_size=64)
    env.fleet.agent("b2", profile=slow, queue_size=64)
    env.deploy(digits, [["a", "a2"], ["b", "b2"]])
    env.answer(always(fixed_plan((("a", "a2"), ("b", "b2")))))
    records = Records()
    client = env.client(records=records)
    items = []
    crashed_ms: float | None = None
    for item in client.stream(test_images[:60], max_in_flight=8):
        items.append(item)
        # once the stream is going, crash b while it holds requests (the client routes
        # by measured speed: on a loaded machine b2 may carry everything for a while, and
        # the crash comes late in the stream)
        if len(items) >= 15 and crashed_ms is None and any(b.telemetry().queue_depth.values()):
            b.transport.crash()  # type: ignore[attr-defined]
            crashed_ms = time.time() * 1000.0  # b can send nothing from here on
    assert crashed_ms is not None, "b never held a request to lose: nothing was tested"
    assert [i.index for i in items] == list(range(60))
    for item in items:
        assert isinstance(item, InferenceResult), item
        assert item.index is not None
        np.testing.assert_array_equal(only_output(item), expected_outputs(item.index))
    done = records.wait_for(60)
    assert len({r.request_id for r in done}) == 60 and all(r.ok for r in done)
    lost_at_b = [r for r in done if any(a.outcome == "offline" for a in r.attempts)]
    # b held requests when it crashed: its will had the client retry their attempts at
    # once (offline), unless, on a loaded machine, they had timed out first (b is slow)
    # and gone to b2 then; either way b answered none of them.
    timed_out_at_b = [
        r
        for r in done
        if r.trace[1].agent_id == "b2"
        and any(a.route[1] == "b" and a.outcome == "timeout" for a in r.attempts)
    ]
    assert lost_at_b or timed_out_at_b, "no request held at b was retried"
    for record in lost_at_b:
        offline = next(a for a in record.attempts if a.outcome == "offline")
        assert offline.route[1] == "b"
        answered = next(a for a in record.attempts if a.outcome == "result")
        assert answered.route[1] == "b2"
        # the retry answered, or an earlier attempt on b2 that had timed out (the first
        # result wins)
        late = answered.message == "answered after its timeout"
        assert answered.attempt > offline.attempt or late, record.attempts
    for record in done:  # one answer per request, whatever the attempts were
        assert [a.outcome for a in record.attempts].count("result") == 1
    # Whenever the crash came: b answered only what it finished before it, and every
    # request sent after it went through b2.
    results = [item for item in items if isinstance(item, InferenceResult)]
    by_b = [item for item in results if item.trace[1].agent_id == "b"]
    assert all(item.trace[1].finished_ms <= crashed_ms for item in by_b)
    later = [item for item in results if item.record.sent_ms > crashed_ms]
    assert all(item.trace[1].agent_id == "b2" for item in later), [
        (item.index, item.trace[1].agent_id) for item in later
    ]
    # answers to attempts that lost the race were counted and dropped, never yielded
    assert client.duplicates <= sum(len(r.attempts) - 1 for r in done)


@pytest.mark.parametrize("hop_qos", [2, -1, True])
def test_a_hop_qos_other_than_0_or_1_is_refused_with_the_reason(hop_qos: int) -> None:
    with pytest.raises(ConfigError, match=r"hop_qos must be 0 .* or 1"):
        ClientConfig(hop_qos=hop_qos)


def test_a_slow_replica_that_still_answers_is_routed_around(
    fleet_with_coordinator: ClientFleet, digits: CutModel
) -> None:
    env = fleet_with_coordinator
    # b's sends wait 100 ms: slower than b2 by far more than a busy machine's stalls
    # (b2's measured time, four requests deep, stays far below b's), so only the
    # probes go back to b
    slow_link = replace(load_profile("host"), link=Link(bandwidth_mbps=100.0, latency_ms=100.0))
    env.fleet.agent("a"), env.fleet.agent("b2")
    env.fleet.agent("b", profile=slow_link)
    env.deploy(digits, [["a"], ["b", "b2"]])
    env.answer(always(fixed_plan((("a",), ("b", "b2")))))
    client = env.client(min_attempt_timeout_s=2.0)  # slow, but never too slow
    items = list(client.stream([digits.image] * 80, max_in_flight=4))
    results = [item for item in items if isinstance(item, InferenceResult)]
    assert len(results) == 80 and all(len(r.record.attempts) == 1 for r in results)
    lasts = [result.trace[1].agent_id for result in results]
    assert lasts[:2] == ["b", "b2"]  # nothing known: the stream is spread over both...
    later = lasts[PROBE_EVERY + 10 :]
    # ...then b's answers came late: b gets the probes (one request in PROBE_EVERY, 3 of
    # these 50), and on a busy machine a spread pick or two (b2 four deep, stalled a
    # moment, looks slower than an idle b); routing by speed broken, b gets a dozen
    assert later.count("b2") >= len(later) - 5, lasts
    assert "b" in later  # ...still measuring b


def test_an_unexplained_timeout_asks_for_a_plan_then_rotates_to_the_fallbacks(
    fleet_with_coordinator: ClientFleet, digits: CutModel
) -> None:
    env = fleet_with_coordinator
    for agent_id in ("a", "a2", "b", "b2"):
        env.fleet.agent(agent_id)
    env.deploy(digits, [["a", "a2"], ["b", "b2"]])
    env.answer(always(fixed_plan((("a", "a2"), ("b", "b2")))))
    b = env.fleet.agents[2]
    b.transport.unsubscribe(STAGE.filter(agent="b"))  # alive, but drops every request
    client = env.client()
    started = time.monotonic()
    result = client.infer(digits.image)
    assert time.monotonic() - started < 5.0  # one short attempt timeout, not the 10 s deadline
    attempts = [(a.attempt, a.route, a.outcome) for a in result.record.attempts]
    assert attempts == [(0, ("a", "b"), "timeout"), (1, ("a2", "b2"), "result")]
    assert env.coordinator.plans_asked() == 2
    assert [e.attempt for e in result.trace] == [1, 1]


def test_an_error_is_retried_on_the_next_fallback_with_a_higher_attempt(
    fleet_with_coordinator: ClientFleet, digits: CutModel
) -> None:
    env = fleet_with_coordinator
    for agent_id in ("a", "a2", "b"):
        env.fleet.agent(agent_id)
    env.deploy(digits, [["a2"], ["b", "a"]])  # a knows the deployment, not its stage 0
    env.answer(always(fixed_plan((("a", "a2"), ("b",)))))
    client = env.client()
    result = client.infer(digits.image)
    attempts = [(a.attempt, a.route, a.outcome) for a in result.record.attempts]
    assert attempts == [(0, ("a", "b"), "shard_not_loaded"), (1, ("a2", "b"), "result")]
    assert "stage 0 on a" in result.record.attempts[0].message
    assert [(e.agent_id, e.attempt) for e in result.trace] == [("a2", 1), ("b", 1)]
    assert env.coordinator.plans_asked() == 1


def test_an_error_caused_by_the_input_is_not_retried(
    fleet_with_coordinator: ClientFleet, digits: CutModel
) -> None:
    env = fleet_with_coordinator
    for agent_id in ("a", "a2", "b"):
        env.fleet.agent(agent_id)

    def float16_input(spec):  # the published spec lies: the client sends float16
        if spec.stage:
            return spec
        return replace(spec, inputs=tuple(replace(s, dtype="float16") for s in spec.inputs))

    env.deploy(digits, [["a", "a2"], ["b"]], lie=float16_input)
    env.answer(always(fixed_plan((("a", "a2"), ("b",)))))
    with pytest.raises(InferenceError) as failure:
        env.client().infer(digits.image)
    assert failure.value.code == "shape_mismatch"
    assert [a.outcome for a in failure.value.record.attempts] == ["shape_mismatch"]
    assert "float16" in str(failure.value)


def test_spent_fallbacks_ask_for_a_new_plan(
    fleet_with_coordinator: ClientFleet, digits: CutModel
) -> None:
    env = fleet_with_coordinator
    for agent_id in ("a", "a2", "b"):
        env.fleet.agent(agent_id)
    env.deploy(digits, [["a2"], ["b", "a"]])
    env.answer(always(fixed_plan((("a",), ("b",))), fixed_plan((("a2",), ("b",)))))
    result = env.client().infer(digits.image)
    routes = [(a.route, a.outcome) for a in result.record.attempts]
    assert routes == [(("a", "b"), "shard_not_loaded"), (("a2", "b"), "result")]
    assert env.coordinator.plans_asked() == 2


def test_when_every_attempt_fails_one_error_lists_every_reason(
    fleet_with_coordinator: ClientFleet, digits: CutModel
) -> None:
    env = fleet_with_coordinator
    for agent_id in ("a", "a2", "b"):
        env.fleet.agent(agent_id)
    env.deploy(digits, [[], ["b", "a", "a2"]])  # nobody serves stage 0
    env.answer(always(fixed_plan((("a", "a2"), ("b",)))))
    records = Records()
    with pytest.raises(InferenceError) as failure:
        env.client(records=records, max_attempts=3).infer(digits.image)
    error = failure.value
    assert error.code == "attempts_spent"
    attempts = [(a.attempt, a.route[0], a.outcome) for a in error.record.attempts]
    assert attempts == [
        (0, "a", "shard_not_loaded"),
        (1, "a2", "shard_not_loaded"),
        (2, "a", "shard_not_loaded"),  # after a new plan: the agent that failed longest ago
    ]
    text = str(error)
    assert "attempt 0 via a > b: shard_not_loaded" in text and "attempt 2 via a > b" in text
    assert env.coordinator.plans_asked() == 2
    (record,) = records.wait_for(1)
    assert not record.ok and record.error_code == "attempts_spent" and record is error.record


def test_a_refused_plan_raises_plan_refused_with_the_constraint(
    fleet_with_coordinator: ClientFleet, digits: CutModel
) -> None:
    env = fleet_with_coordinator
    env.answer(always(PlanRefused("", "digits", "max_latency_ms", "the fastest takes 9 ms")))
    records = Records()
    with pytest.raises(PlanRefusedError) as failure:
        env.client(records=records).infer(digits.image, max_latency_ms=1.0)
    assert failure.value.constraint == "max_latency_ms" and "9 ms" in str(failure.value)
    assert (
        failure.value.record.attempts == () and records.wait_for(1)[0].error_code == "plan_refused"
    )
    (asked,) = env.coordinator.requests
    assert asked.max_latency_ms == 1.0 and asked.model == "digits" and asked.client_id == "alice"


def test_a_stage_with_no_replica_online_is_waited_for_within_the_deadline(
    fleet_with_coordinator: ClientFleet, digits: CutModel
) -> None:
    env = fleet_with_coordinator
    env.fleet.agent("a")
    env.deploy(digits, [["a"], ["a"]])
    healing = PlanRefused("", "digits", "unavailable", "stage 0 of d has no replica online")
    env.answer(always(healing, healing, fixed_plan((("a",), ("a",)))))
    client = env.client(replan_wait_s=0.05)
    result = client.infer(digits.image)  # asked three times: the deployment healed
    np.testing.assert_array_equal(only_output(result), next(iter(digits.expected.values())))
    assert env.coordinator.plans_asked() == 3
    env.answer(always(healing))  # never heals: a clear refusal by the deadline
    started = time.monotonic()
    with pytest.raises(PlanRefusedError) as failure:
        client.infer(digits.image, model="other", deadline_s=2.0)
    assert failure.value.constraint == "unavailable" and "no replica online" in str(failure.value)
    assert time.monotonic() - started < 2.0 + 5.0  # not held past the deadline by the asking
    env.answer(always(healing, None))  # refused, then asked again and never answered
    with pytest.raises(PlanRefusedError) as failure:
        client.infer(digits.image, model="third", deadline_s=1.0)
    assert failure.value.constraint == "unavailable", "the refusal, not a bare deadline"


def test_plans_from_the_real_planner(fleet_with_coordinator: ClientFleet, digits: CutModel) -> None:
    env = fleet_with_coordinator
    env.fleet.agent("a"), env.fleet.agent("b")
    deployment = env.deploy(digits, [["a", "b"], ["b", "a"]])
    view = DeploymentView(
        deployment="d",
        epoch=1,
        model="digits",
        version="v1",
        variant="float32",
        fidelity=1.0,
        stages=tuple(
            StageView(s.stage, s.replicas, {"a": 1.0, "b": 2.0}, 256, 4096)
            for s in deployment.stages
        ),
    )
    agents = {"a": AgentView("a"), "b": AgentView("b")}
    env.answer(lambda request: plan(request, [view], agents))
    client = env.client()
    result = client.infer(digits.image, energy_level="performance")
    (name,) = digits.expected
    np.testing.assert_array_equal(result.outputs[name], digits.expected[name])
    assert result.plan.route == (("a", "b"), ("a", "b"))
    with pytest.raises(PlanRefusedError) as refused:
        client.infer(digits.image, max_latency_ms=0.5)
    assert refused.value.constraint == "max_latency_ms"
    with pytest.raises(PlanRefusedError) as refused:
        client.infer(digits.image, min_fidelity=1.5)
    assert refused.value.constraint == "min_fidelity"


def test_a_deadline_that_cannot_be_met_fails_fast(
    fleet_with_coordinator: ClientFleet, digits: CutModel
) -> None:
    env = fleet_with_coordinator
    env.fleet.agent("a")
    env.deploy(digits, [["a"], ["a"]])
    env.answer(always(fixed_plan((("a",), ("a",)), predicted_latency_ms=60_000.0)))
    sent = Collector()
    spy = env.fleet.client("spy")
    spy.subscribe(STAGE.filter(), sent)
    started = time.monotonic()
    with pytest.raises(DeadlineError) as failure:
        env.client().infer(digits.image, deadline_s=30.0)
    assert time.monotonic() - started < 10.0  # at once, not at the deadline
    assert "60000 ms" in str(failure.value) and failure.value.record.attempts == ()
    assert sent.messages == []


def test_no_coordinator_and_no_deployment_end_in_clear_errors(
    fleet_with_coordinator: ClientFleet, digits: CutModel
) -> None:
    env = fleet_with_coordinator  # the coordinator stays silent
    started = time.monotonic()
    with pytest.raises(InferenceError) as failure:
        env.client(plan_timeout_s=0.3).infer(digits.image, deadline_s=1.0)
    assert failure.value.code == "no_plan" and "coordinator" in str(failure.value)
    assert "plan requests (0.3 s each)" in str(failure.value)
    assert env.coordinator.plans_asked() >= 3  # asked again while the deadline allowed
    assert time.monotonic() - started < 1.0 + 4.0  # given up at the deadline
    env.answer(always(fixed_plan((("a",), ("a",)), deployment="never-published")))
    with pytest.raises(DeadlineError) as late:
        env.client("bob").infer(digits.image, deadline_s=0.5)
    assert "deployment" in str(late.value)


def test_a_plan_request_no_coordinator_answered_is_asked_again_within_the_deadline(
    fleet_with_coordinator: ClientFleet, digits: CutModel
) -> None:
    env = fleet_with_coordinator
    env.fleet.agent("a")
    env.deploy(digits, [["a"], ["a"]])
    # silent at first: restarting, or not yet subscribed again after a broker restart
    env.answer(always(None, fixed_plan((("a",), ("a",)))))
    result = env.client(plan_timeout_s=0.3).infer(digits.image, deadline_s=5.0)
    np.testing.assert_array_equal(only_output(result), next(iter(digits.expected.values())))
    assert env.coordinator.plans_asked() == 2


def test_an_input_that_does_not_fit_fails_before_sending(
    fleet_with_coordinator: ClientFleet, digits: CutModel
) -> None:
    env = fleet_with_coordinator
    env.on_one_agent(digits)
    with pytest.raises(InferenceError) as failure:
        env.client().infer(np.zeros(5, np.float32))
    assert failure.value.code == "bad_input" and failure.value.record.attempts == ()
    assert "expects shape (1, 8, 8, 1)" in str(failure.value)


def test_duplicate_results_are_counted_and_ignored(
    fleet_with_coordinator: ClientFleet, digits: CutModel
) -> None:
    env = fleet_with_coordinator
    env.on_one_agent(digits)
    records = Records()
    client = env.client(records=records)
    answers = Collector()
    spy = env.fleet.client("spy")
    spy.subscribe(RESULTS.name(client="alice"), answers)
    result = client.infer(digits.image)
    (answer,) = answers.wait_for(1)
    spy.publish(answer.topic, answer.payload)  # a QoS 1 redelivery, say
    wait_until(lambda: client.duplicates == 1, 5, "the duplicate to be counted")
    assert records.wait_for(1) == [result.record] and client.in_flight == 0
    stranger = decode(answer.payload, expect=Result)
    spy.publish(answer.topic, _with_request_id(stranger, bytes(16)))
    wait_until(lambda: client.unknown == 1, 5, "an unknown request id to be counted")


def _with_request_id(result: Result, request_id: bytes) -> bytes:
    return encode(replace(result, request_id=request_id))


class Relay:
    """A slow hop in front of a real agent: forwards each activation after ``delay_s``."""

    def __init__(self, env: ClientFleet, name: str, target: str, delay_s: float):
        self.transport = env.fleet.client(f"relay-{name}")
        self.target, self.delay_s = target, delay_s
        self.transport.subscribe(STAGE.filter(agent=name), self._forward)

    def _forward(self, message: InboundMessage) -> None:
        time.sleep(self.delay_s)
        params = STAGE.parse(message.topic)
        assert params is not None
        topic = STAGE.name(
            deployment=params["deployment"], stage=params["stage"], agent=self.target
        )
        self.transport.publish(topic, message.payload)


class Busy:
    """A hop that refuses its first ``refusals`` activations as ``overloaded`` (noting when
    each came), then forwards the others to a real agent."""

    def __init__(self, env: ClientFleet, name: str, target: str, refusals: int):
        self.transport = env.fleet.client(f"busy-{name}")
        self.name, self.target, self.refusals = name, target, refusals
        self.arrivals: list[float] = []
        self.transport.subscribe(STAGE.filter(agent=name), self._on_activation)

    def _on_activation(self, message: InboundMessage) -> None:
        self.arrivals.append(time.monotonic())
        activation = decode(message.payload, expect=Activation)
        if len(self.arrivals) <= self.refusals:
            refusal = ErrorMessage(
                request_id=activation.request_id,
                attempt=activation.attempt,
                stage=activation.stage,
                agent_id=self.name,
                code=ErrorCode.OVERLOADED,
                message="queue full",
                deployment=activation.deployment,
            )
            self.transport.publish(activation.callback, encode(refusal))
            return
        topic = STAGE.name(
            deployment=activation.deployment, stage=activation.stage, agent=self.target
        )
        self.transport.publish(topic, message.payload)


def test_overloaded_answers_wait_before_going_back_and_spend_no_attempt(
    fleet_with_coordinator: ClientFleet, digits: CutModel
) -> None:
    env = fleet_with_coordinator
    env.fleet.agent("a")
    env.deploy(digits, [["a"], ["a"]])
    busy = Busy(env, "busy", "a", refusals=3)
    env.answer(always(fixed_plan((("busy",), ("a",)))))  # no fallback: back to the busy one
    client = env.client(max_attempts=2, overload_backoff_s=0.1)
    result = client.infer(digits.image)
    outcomes = [a.outcome for a in result.record.attempts]
    assert outcomes == ["overloaded", "overloaded", "overloaded", "result"]
    gaps = [later - earlier for earlier, later in itertools.pairwise(busy.arrivals)]
    # at least 0.1 s, doubled for each refusal, times a jitter of 0.5 to 1.5
    assert all(gap >= 0.05 * 2**i * 0.9 for i, gap in enumerate(gaps)), gaps
    np.testing.assert_array_equal(only_output(result), next(iter(digits.expected.values())))


def test_a_fleet_that_stays_busy_fails_fast_as_overloaded_not_at_the_deadline(
    fleet_with_coordinator: ClientFleet, digits: CutModel
) -> None:
    env = fleet_with_coordinator
    env.fleet.agent("a")
    env.deploy(digits, [["a"], ["a"]])
    Busy(env, "busy", "a", refusals=1000)
    env.answer(always(fixed_plan((("busy",), ("a",)))))
    client = env.client(max_attempts=2, overload_backoff_s=0.1)
    started = time.monotonic()
    with pytest.raises(InferenceError) as info:
        client.infer(digits.image, deadline_s=3.0)
    took = time.monotonic() - started
    assert info.value.code == "overloaded", info.value
    # waits of 0.1, 0.2, 0.4 s... (x jitter 0.5-1.5) until the next did not fit in what
    # was left: that may be close to the deadline (a wait that just fits), never past it
    found = re.search(
        r"wait ([0-9.]+) s first, .* of the ([0-9.]+) s to the deadline", str(info.value)
    )
    assert found, info.value
    assert float(found[1]) > float(found[2]) - 0.02  # less the plan's 5 ms, rounded
    assert took < 3.0, took
    outcomes = {a.outcome for a in info.value.record.attempts}
    assert outcomes == {"overloaded"}


def test_two_busy_replicas_are_not_tried_in_turn_without_waiting(
    fleet_with_coordinator: ClientFleet, digits: CutModel
) -> None:
    env = fleet_with_coordinator
    env.fleet.agent("a")
    env.deploy(digits, [["a"], ["a"]])
    first, second = Busy(env, "busy1", "a", refusals=2), Busy(env, "busy2", "a", refusals=2)
    env.answer(always(fixed_plan((("busy1", "busy2"), ("a",)))))
    client = env.client(max_attempts=2, overload_backoff_s=0.1)
    result = client.infer(digits.image)
    outcomes = [(a.route[0], a.outcome) for a in result.record.attempts]
    assert outcomes[:2] == [
        ("busy1", "overloaded"),
        ("busy2", "overloaded"),
    ]  # the fallback at once
    assert outcomes[-1][1] == "result" and len(outcomes) == 5
    arrivals = sorted([*first.arrivals, *second.arrivals])
    gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals)]
    # back to an agent that refused: at least 0.1 s (x jitter 0.5), doubled per refusal
    assert all(gap >= 0.05 * 2 ** (i + 1) * 0.9 for i, gap in enumerate(gaps[1:])), gaps


def test_a_late_result_of_an_earlier_attempt_wins_and_the_next_is_a_duplicate(
    fleet_with_coordinator: ClientFleet, digits: CutModel
) -> None:
    env = fleet_with_coordinator
    env.fleet.agent("a")
    env.deploy(digits, [["a"], ["a"]])
    Relay(env, "slow1", "a", 0.6)
    Relay(env, "slow2", "a", 0.6)
    env.answer(always(fixed_plan((("slow1", "slow2"), ("a",)))))
    client = env.client(max_attempts=2, min_attempt_timeout_s=0.25, attempt_timeout_factor=0.0)
    result = client.infer(digits.image)  # attempt 1, the last, waits until the deadline
    attempts = [(a.attempt, a.route[0], a.outcome) for a in result.record.attempts]
    assert attempts == [(0, "slow1", "result"), (1, "slow2", "superseded")]
    assert [e.attempt for e in result.trace] == [0, 0]
    wait_until(lambda: client.duplicates == 1, 5, "the second answer to be a duplicate")


def test_the_client_runs_its_own_agent_for_pinned_stages(
    fleet_with_coordinator: ClientFleet, digits: CutModel, tmp_path: Path
) -> None:
    env = fleet_with_coordinator
    env.fleet.agent("b")
    mine = AgentConfig(
        agent_id="alice",
        profile=load_profile("host"),
        cache_dir=tmp_path / "alice-cache",
        xnnpack=False,
        telemetry_period_s=0.05,
        bench_runs=1,
        battery=BatteryMode.SIMULATED,
        threads=1,
    )
    client = env.client("alice", agent=mine)
    assert client.agent is not None and client.agent.agent_id == "alice"
    env.deploy(digits, [["alice"], ["b"]])
    env.answer(always(fixed_plan((("alice",), ("b",)))))
    result = client.infer(digits.image)
    (name,) = digits.expected
    np.testing.assert_array_equal(result.outputs[name], digits.expected[name])
    assert [e.agent_id for e in result.trace] == ["alice", "b"]
    client.close()
    status = env.broker.retained(STATUS.name(agent="alice"))
    assert status is not None and decode(status, expect=AgentStatus).state is AgentState.OFFLINE


def test_closing_fails_what_is_in_flight(
    fleet_with_coordinator: ClientFleet, digits: CutModel
) -> None:
    env = fleet_with_coordinator  # silent coordinator: the request waits for its plan
    records = Records()
    client = env.client(records=records, plan_timeout_s=30.0, deadline_s=30.0)
    future = client.infer_async(digits.image)
    client.close()
    with pytest.raises(InferenceError) as failure:
        future.result(timeout=5)
    assert failure.value.code == "closed" and records.wait_for(1)[0].error_code == "closed"


def test_many_waiting_requests_share_one_plan_request(
    fleet_with_coordinator: ClientFleet, digits: CutModel
) -> None:
    env = fleet_with_coordinator
    env.fleet.agent("a")
    env.deploy(digits, [["a"], ["a"]])
    gate = threading.Event()

    def slow_answer(_request: PlanRequest):
        gate.wait(5)
        return fixed_plan((("a",), ("a",)))

    env.answer(slow_answer)
    client = env.client()
    futures = [client.infer_async(digits.image) for _ in range(10)]
    gate.set()
    assert all(f.result(timeout=10).record.ok for f in futures)
    assert env.coordinator.plans_asked() == 1


def test_an_aged_plan_serves_while_the_coordinator_is_silent_and_is_renewed_when_it_answers(
    fleet_with_coordinator: ClientFleet, digits: CutModel
) -> None:
    env = fleet_with_coordinator
    env.fleet.agent("a"), env.fleet.agent("b")
    env.deploy(digits, [["a", "b"], ["a", "b"]])
    env.answer(always(fixed_plan((("a",), ("a",)))))
    client = env.client(plan_ttl_s=0.2, plan_timeout_s=60.0)
    client.infer(digits.image)
    back = threading.Event()

    def stuck(_request: PlanRequest) -> Plan:  # down until ``back``, then a new plan
        back.wait(60)
        return fixed_plan((("b",), ("b",)))

    env.answer(stuck)
    served = []

    def renewal_asked() -> bool:  # once the plan is older than plan_ttl_s
        served.append(client.infer(digits.image))
        return env.coordinator.plans_asked() == 2

    wait_until(renewal_asked, 10, "the plan to age and a renewal to be asked")
    # Had they waited for the stuck coordinator, they would end at their 5 s deadline.
    served += [client.infer(digits.image) for _ in range(5)]
    assert all(result.record.attempts[0].route == ("a", "a") for result in served)
    assert env.coordinator.plans_asked() == 2, "one renewal asked, however many requests"
    back.set()
    wait_until(
        lambda: client.infer(digits.image).record.attempts[0].route == ("b", "b"), 10, "new plan"
    )
    assert env.coordinator.plans_asked() == 2, "the renewal's answer replaced the plan"


def test_a_stale_plan_the_coordinator_refuses_to_renew_is_dropped(
    fleet_with_coordinator: ClientFleet, digits: CutModel
) -> None:
    env = fleet_with_coordinator
    env.fleet.agent("a")
    env.deploy(digits, [["a"], ["a"]])
    refusal = PlanRefused("", "digits", "max_latency_ms", "no route within 1 ms")
    refuse = threading.Event()  # the coordinator answers the renewal once the test says
    answers: Iterator[Plan | PlanRefused] = iter([fixed_plan((("a",), ("a",))), refusal])

    def answer(_request: PlanRequest) -> Plan | PlanRefused:
        given = next(answers, refusal)
        if isinstance(given, PlanRefused):
            refuse.wait(30)
        return given

    env.answer(answer)
    client = env.client(plan_ttl_s=0.1)
    client.infer(digits.image)

    def renewal_asked() -> bool:  # once the plan is older than plan_ttl_s
        assert client.infer(digits.image).record.ok, "the stale plan serves while renewal is asked"
        return env.coordinator.plans_asked() == 2

    wait_until(renewal_asked, 10, "the plan to age and a renewal to be asked")
    assert client.infer(digits.image).record.ok, "the stale plan serves while renewal is asked"
    refuse.set()
    refusals: list[PlanRefusedError] = []

    def refused() -> bool:  # the stale plan serves until the refusal arrives, then it is gone
        try:
            client.infer(digits.image)
        except PlanRefusedError as error:
            refusals.append(error)
            return True
        return False

    wait_until(refused, 10, "the refusal to arrive and the plan to be dropped")
    assert refusals[0].code == "plan_refused" and "1 ms" in str(refusals[0])


@needs("PIL", "client")
def test_the_infer_table_shows_results_and_failures(
    fleet_with_coordinator: ClientFleet, digits: CutModel, tmp_path: Path
) -> None:
    from io import StringIO

    from PIL import Image

    from splitmq.client.infer_cli import infer_inputs
    from splitmq.client.inputs import load_inputs

    env = fleet_with_coordinator
    env.on_one_agent(digits)
    np.save(tmp_path / "a-good.npy", digits.image)
    np.save(tmp_path / "b-wrong.npy", np.zeros((3, 3), np.float32))  # not a grey image
    Image.fromarray(np.zeros((16, 16), np.uint8), mode="L").save(tmp_path / "c-big.png")
    out = StringIO()
    labels = [f"digit-{i}" for i in range(10)]
    inputs = load_inputs([tmp_path])
    failed = infer_inputs(env.client(), inputs, top=2, labels=labels, out=out)
    assert failed == 1
    header, good, wrong, image, summary = out.getvalue().splitlines()
    assert header.split() == ["input", "top-1", "top-2", "latency_ms", "attempts", "route"]
    best = int(np.argmax(next(iter(digits.expected.values()))))
    assert good.split()[:2] == ["a-good.npy", f"digit-{best}"] and good.endswith("a > a")
    assert wrong.startswith("b-wrong.npy") and "failed (bad_input) after 0 attempts" in wrong
    assert "array of shape (3, 3) does not fit" in wrong and "expects shape (1, 8, 8, 1)" in wrong
    assert image.startswith("c-big.png") and image.endswith("a > a")  # an image is resized
    assert summary.startswith("2 of 3 answered; latency p50")


def link(transport: Transport) -> MemoryTransport:
    """A memory transport, whose link to the broker a test can interrupt and resume."""
    assert isinstance(transport, MemoryTransport)
    return transport


def through_a_and_b(env: ClientFleet, digits: CutModel, **config: Any) -> tuple[Client, Agent]:
    """A client (``config`` overrides) with its plan through agents a and b cached; b."""
    _, b = env.fleet.agent("a"), env.fleet.agent("b")
    env.deploy(digits, [["a"], ["b"]])
    env.answer(always(fixed_plan((("a",), ("b",)))))
    client = env.client(**config)
    client.infer(digits.image)
    return client, b


def one_attempt_through_a_and_b(env: ClientFleet, digits: CutModel) -> tuple[Client, Agent]:
    """:func:`through_a_and_b`, one attempt per request: without a fresh timeout after an
    outage, that attempt would wait out its 20 s deadline for an answer it swallowed."""
    return through_a_and_b(env, digits, max_attempts=1, deadline_s=20.0)


def test_an_answer_lost_in_a_broker_outage_is_asked_again_after_the_reconnection(
    fleet_with_coordinator: ClientFleet, digits: CutModel
) -> None:
    client, b = one_attempt_through_a_and_b(fleet_with_coordinator, digits)
    link(b.transport).interrupt()
    started = time.monotonic()
    future = client.infer_async(digits.image)
    wait_until(lambda: b.transport.stats.dropped_in >= 1, 5.0, "stage 1 lost in the outage")
    link(client.transport).interrupt()
    link(b.transport).resume()
    link(client.transport).resume()
    result = future.result(timeout=10.0)
    assert time.monotonic() - started < 5.0
    np.testing.assert_array_equal(only_output(result), next(iter(digits.expected.values())))
    attempts = [(a.attempt, a.route, a.outcome) for a in result.record.attempts]
    assert attempts == [(0, ("a", "b"), "lost"), (1, ("a", "b"), "result")]  # nobody blamed
    assert "of a reconnection" in result.record.attempts[0].message


def test_an_attempt_an_agent_missed_while_away_is_asked_again_once_it_is_back(
    fleet_with_coordinator: ClientFleet, digits: CutModel
) -> None:
    client, b = one_attempt_through_a_and_b(fleet_with_coordinator, digits)
    link(b.transport).interrupt()  # the client stays connected; b is away, then announces itself
    started = time.monotonic()
    future = client.infer_async(digits.image)
    wait_until(lambda: b.transport.stats.dropped_in >= 1, 5.0, "stage 1 lost while b was away")
    link(b.transport).resume()
    result = future.result(timeout=10.0)
    assert time.monotonic() - started < 5.0
    attempts = [(a.attempt, a.route, a.outcome) for a in result.record.attempts]
    assert attempts == [(0, ("a", "b"), "lost"), (1, ("a", "b"), "result")]
    assert "of b coming online" in result.record.attempts[0].message


def test_attempts_timing_out_while_the_link_is_down_wait_for_it_instead_of_piling_up(
    fleet_with_coordinator: ClientFleet, digits: CutModel
) -> None:
    client, _ = through_a_and_b(fleet_with_coordinator, digits)
    sent = client.transport.stats.msgs_out
    timeouts = threading.Semaphore(0)
    timers = client._timers
    expiries = ("_timed_out", "_failed")  # an attempt's timeout, and one re-armed
    call_at = timers.call_at

    def counted(when_s: float, function: Callable[[], None]) -> Timer:
        """Arms ``function``; an attempt's timeout also counts once it has run. The
        client's own classes may be compiled (no method of theirs can be replaced): its
        timers, which are not, are watched instead."""
        step = function.args[0] if isinstance(function, partial) and function.args else None
        if getattr(getattr(step, "func", None), "__name__", None) not in expiries:
            return call_at(when_s, function)

        def fire() -> None:
            function()
            timeouts.release()

        return call_at(when_s, fire)

    timers.call_at = counted  # type: ignore[method-assign]
    link(client.transport).interrupt()
    futures = [client.infer_async(digits.image) for _ in range(3)]
    for _ in range(3):  # every attempt's timeout fired, with the link down
        assert timeouts.acquire(timeout=10.0), "an attempt's timeout never fired"
    assert client.transport.stats.msgs_out == sent + 3, "held sends were sent again"
    link(client.transport).resume()
    for future in futures:
        result = future.result(timeout=5.0)
        assert [a.outcome for a in result.record.attempts] == ["result"]


def test_plan_requests_tell_the_planner_the_clients_own_work(
    fleet_with_coordinator: ClientFleet, digits: CutModel
) -> None:
    env = fleet_with_coordinator
    env.on_one_agent(digits)
    client = env.client(plan_ttl_s=600.0)
    client.infer(digits.image)  # it waited for its plan: its send is not the client's work
    (first,) = env.coordinator.requests
    assert first.client_ms is None, "nothing measured before the first request"
    for _ in range(3):  # with the plan at hand: call to send, arrival to answer
        client.infer(digits.image)
    client.infer(digits.image, model="other")  # another model: a new plan request
    told = env.coordinator.requests[-1].client_ms
    assert told is not None and 0.0 < told < 1000.0, told
