"""Agents as separate processes against a real Mosquitto, on LiteRT and tflite-runtime 2.14.

Each runtime gets its own pair of agent processes (``python -m splitmq.agent``); the test
process plays the coordinator (commands, the model pool) and the client.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from splitmq.coordinator.pool_service import PoolService
from splitmq.mosquitto import Mosquitto
from splitmq.transport import MqttTransport, parse_broker_url
from splitmq.wire import (
    Activation,
    AgentState,
    AgentStatus,
    ErrorCode,
    ErrorMessage,
    Result,
    ShardReady,
    Telemetry,
    encode,
)
from splitmq.wire.topics import STAGE, STATUS, TELEMETRY
from tests import processes as spawn

from .conftest import CALLBACK, CutModel, load_command, request
from .events import Inbox, command, events, ready_for

pytestmark = pytest.mark.integration

TFLITE214 = os.environ.get("SPLITMQ_TFLITE214_PYTHON")
RUNTIMES = [
    pytest.param((sys.executable, "litert"), id="litert"),
    pytest.param(
        (TFLITE214 or "", "tflite-runtime"),
        id="tflite-runtime-2.14",
        marks=pytest.mark.skipif(
            not TFLITE214,
            reason="SPLITMQ_TFLITE214_PYTHON is unset (make test sets it to .venv-tflite214)",
        ),
    ),
]


def start_agent(
    python: str, broker: Mosquitto, agent_id: str, workdir: Path, *extra: str
) -> subprocess.Popen[bytes]:
    return spawn.start_agent(broker.url(), agent_id, workdir, *extra, python=python)


def wait_status(
    inbox: Inbox, agent_id: str, state: AgentState, timeout_s: float = 40
) -> AgentStatus:
    return inbox.wait_for(
        AgentStatus, lambda s: s.agent_id == agent_id and s.state is state, timeout_s
    )


@dataclass
class ProcessFleet:
    python: str
    runtime: str
    broker: Mosquitto
    client: MqttTransport
    statuses: Inbox
    results: Inbox
    first: str
    second: str
    workdir: Path
    model: CutModel


@pytest.fixture(scope="module", params=RUNTIMES)
def process_fleet(
    request: pytest.FixtureRequest,
    mosquitto: Mosquitto,
    digits: CutModel,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ProcessFleet]:
    python, runtime = request.param
    workdir = tmp_path_factory.mktemp(f"agents-{runtime}")
    client = MqttTransport(parse_broker_url(mosquitto.url()))
    client.start()
    pool = PoolService(client, chunk_bytes=4096)
    for shard in digits.shards:
        pool.add(shard.data)  # type: ignore[attr-defined]
    pool.start()
    statuses = Inbox(client, STATUS.filter())
    results = Inbox(client, CALLBACK)
    ev = events(client)
    first, second = f"pi-{runtime}", f"phone-{runtime}"
    processes = [
        start_agent(python, mosquitto, first, workdir, "--profile", "host"),
        start_agent(python, mosquitto, second, workdir, "--profile", "phone", "--no-emulate"),
    ]
    try:
        for agent_id in (first, second):
            status = wait_status(statuses, agent_id, AgentState.ONLINE)
            assert status.runtime == runtime
        deployment = f"digits-{runtime}"
        for agent_id, shard in zip((first, second), digits.shards, strict=True):
            command(client, agent_id, load_command(shard, deployment, command_id=agent_id))
        for agent_id in (first, second):
            wanted = agent_id
            ready = ev.wait_for(ShardReady, ready_for(wanted), 60)
            assert ready.runtime == runtime and ready.bench_ms > 0
        yield ProcessFleet(
            python, runtime, mosquitto, client, statuses, results, first, second, workdir, digits
        )
    finally:
        spawn.stop(processes)
        client.close()


def send(fleet: ProcessFleet, activation: Activation, payload: bytes | None = None) -> None:
    topic = STAGE.name(deployment=activation.deployment, stage=0, agent=fleet.first)
    fleet.client.publish(topic, encode(activation) if payload is None else payload).wait(10)


def good_request(fleet: ProcessFleet, **overrides: object) -> Activation:
    return request(
        fleet.model,
        f"digits-{fleet.runtime}",
        ((fleet.first,), (fleet.second,)),
        **overrides,  # type: ignore[arg-type]
    )


def check_answer(fleet: ProcessFleet, activation: Activation) -> None:
    result = fleet.results.wait_for(Result, lambda r: r.request_id == activation.request_id)
    assert [t.agent_id for t in result.trace] == [fleet.first, fleet.second]
    (name,) = fleet.model.expected
    (out,) = result.tensors
    assert out.name == name
    if fleet.runtime == "litert":  # the same kernels as the unsplit reference: same bits
        np.testing.assert_array_equal(out.array, fleet.model.expected[name])
    else:
        np.testing.assert_allclose(out.array, fleet.model.expected[name], rtol=1e-5, atol=1e-6)


def test_two_agent_processes_answer_a_request_end_to_end(process_fleet: ProcessFleet) -> None:
    activation = good_request(process_fleet)
    send(process_fleet, activation)
    check_answer(process_fleet, activation)


@pytest.mark.parametrize("fault", ["malformed", "wrong_shape", "expired_deadline"])
def test_a_bad_request_gets_its_error_and_the_next_one_succeeds(
    process_fleet: ProcessFleet, fault: str
) -> None:
    fleet = process_fleet
    if fault == "wrong_shape":
        bad = good_request(fleet, image=np.zeros((1, 4, 4, 1), np.float32))
        payload, code = None, ErrorCode.SHAPE_MISMATCH
    elif fault == "expired_deadline":
        bad = good_request(fleet, deadline_ms=int(time.time() * 1000) - 5)
        payload, code = None, ErrorCode.DEADLINE_EXCEEDED
    else:
        bad = good_request(fleet)
        payload, code = encode(bad).replace(b"tensors", b"tensorz"), ErrorCode.BAD_MESSAGE
    send(fleet, bad, payload)
    error = fleet.results.wait_for(ErrorMessage, lambda m: m.request_id == bad.request_id)
    assert error.code is code and error.agent_id == fleet.first and error.message
    good = good_request(fleet)
    send(fleet, good)
    check_answer(fleet, good)


def test_telemetry_and_battery_drain_appear(process_fleet: ProcessFleet) -> None:
    fleet = process_fleet
    activation = good_request(fleet)
    send(fleet, activation)
    check_answer(fleet, activation)
    telemetry = Inbox(fleet.client, TELEMETRY.name(agent=fleet.second))
    first = telemetry.wait_for(Telemetry, lambda t: t.broker_rtt_ms is not None)
    later = telemetry.wait_for(Telemetry, lambda t: t.ts_ms >= first.ts_ms + 300)
    assert later.battery.simulated and later.profile == "phone"
    assert later.battery.pct < first.battery.pct <= 80.0
    assert later.energy_j > first.energy_j
    deployment_stage = f"digits-{fleet.runtime}/1"
    assert later.compute_ms[deployment_stage] > 0 and later.queue_depth[deployment_stage] == 0
    assert first.broker_rtt_ms is not None and 0 <= first.broker_rtt_ms < 1000
    assert later.msgs_in > 0 and later.bytes_out > 0


def test_the_last_will_fires_when_the_agent_is_killed(process_fleet: ProcessFleet) -> None:
    fleet = process_fleet
    agent_id = f"doomed-{fleet.runtime}"
    process = start_agent(fleet.python, fleet.broker, agent_id, fleet.workdir)
    try:
        wait_status(fleet.statuses, agent_id, AgentState.ONLINE)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    # keep-alive need not expire: the broker sees the socket close and publishes the will
    wait_status(fleet.statuses, agent_id, AgentState.OFFLINE)
