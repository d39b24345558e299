"""The client and ``splitmq infer`` against a real Mosquitto, with in-process agents on MQTT."""

from __future__ import annotations

import argparse
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("PIL", reason="needs pillow: pip install -e '.[client]'")
from PIL import Image

from splitmq.agent import Agent, AgentConfig, BatteryMode, agent_will, load_profile
from splitmq.client import Client, ClientConfig, InferenceResult
from splitmq.client.infer_cli import add_parser
from splitmq.client.results_db import ResultsDB
from splitmq.coordinator.pool_service import PoolService
from splitmq.mosquitto import Mosquitto
from splitmq.transport import MqttTransport, Transport, parse_broker_url

from ..agent.conftest import CutModel
from .conftest import FakeCoordinator, Records, always, deploy, fixed_plan

pytestmark = pytest.mark.integration


@dataclass
class MqttFleet:
    url: str
    deployment: str
    agent_ids: tuple[str, str]


def connect(url: str, client_id: str, agent: AgentConfig | None = None) -> Transport:
    will = agent_will(agent) if agent is not None else None
    return MqttTransport(parse_broker_url(url, client_id=client_id), will=will)


@pytest.fixture
def mqtt_fleet(mosquitto: Mosquitto, digits: CutModel, tmp_path: Path) -> Iterator[MqttFleet]:
    """Two agents (stage 0, stage 1), the model pool and a fake coordinator, all on MQTT."""
    url, tag = mosquitto.url(), uuid.uuid4().hex[:6]
    pool_transport = connect(url, f"pool-{tag}")
    pool_transport.start()
    pool = PoolService(pool_transport, chunk_bytes=8192)
    pool.start()
    agents = []
    for name in ("a", "b"):
        config = AgentConfig(
            agent_id=f"{name}-{tag}",
            profile=load_profile("host"),
            cache_dir=tmp_path / name,
            xnnpack=False,
            telemetry_period_s=0.2,
            bench_runs=1,
            battery=BatteryMode.SIMULATED,
            threads=1,
        )
        agent = Agent(config, connect(url, f"agent-{name}-{tag}", config))
        agent.start()
        agents.append(agent)
    a, b = (agent.agent_id for agent in agents)
    deployment = f"d-{tag}"
    operator = connect(url, f"operator-{tag}")
    operator.start()
    deploy(operator, pool, digits, [[a], [b]], deployment=deployment)
    operator.close()
    coordinator = FakeCoordinator(
        connect(url, f"coordinator-{tag}"),
        always(fixed_plan(((a,), (b,)), deployment=deployment)),
    )
    yield MqttFleet(url, deployment, (a, b))
    coordinator.transport.close()
    for agent in agents:
        agent.stop()
    pool_transport.close()


def test_infer_and_stream_over_mosquitto(
    mqtt_fleet: MqttFleet,
    digits: CutModel,
    test_images: np.ndarray,
    expected_outputs: Callable[[int], np.ndarray],
) -> None:
    records = Records()
    config = ClientConfig(model="digits", deadline_s=10.0)
    with Client(mqtt_fleet.url, config=config, recorder=records) as client:
        result = client.infer(digits.image)
        (name,) = digits.expected
        np.testing.assert_array_equal(result.outputs[name], digits.expected[name])
        assert [e.agent_id for e in result.trace] == list(mqtt_fleet.agent_ids)
        items = list(client.stream(test_images[:20], max_in_flight=6))
    assert [item.index for item in items] == list(range(20))
    for item in items:
        assert isinstance(item, InferenceResult) and item.index is not None
        np.testing.assert_array_equal(item.outputs[name], expected_outputs(item.index))
    assert len(records.wait_for(21)) == 21 and all(r.ok for r in records.records)


def test_splitmq_infer_prints_the_table_and_records_the_run(
    mqtt_fleet: MqttFleet,
    test_images: np.ndarray,
    expected_outputs: Callable[[int], np.ndarray],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    np.save(inputs / "three.npy", test_images[:3])
    big = Image.fromarray((test_images[3, :, :, 0] * 255).astype(np.uint8), mode="L")
    big.resize((32, 32)).save(inputs / "zz-big.png")  # the client resizes it to 8x8
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    db, export = tmp_path / "results.db", tmp_path / "run.jsonl"
    command = ["infer", "digits", str(inputs), "--batch", "--broker", mqtt_fleet.url]
    command += ["--hop-qos", "0"]  # every hop at most once (the API's test covers 1)
    args = parser.parse_args(
        [*command, "--db", str(db), "--jsonl", str(export), "--run", "cli", "--top", "2"]
    )
    assert args.run(args) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:3] == ["input", "top-1", "top-2"]
    rows = {line.split()[0]: line for line in out[1:5]}
    assert set(rows) == {"three.npy[0]", "three.npy[1]", "three.npy[2]", "zz-big.png"}
    for i in range(3):
        best = int(np.argmax(expected_outputs(i)))
        assert rows[f"three.npy[{i}]"].split()[1] == str(best)
        assert " > ".join(mqtt_fleet.agent_ids) in rows[f"three.npy[{i}]"]
    assert "4 of 4 answered" in out[5]
    with ResultsDB(db) as results:
        stored = results.requests(run="cli")
    assert len(stored) == 4 and all(r.ok and len(r.trace) == 2 for r in stored)
    lines = [json.loads(line) for line in export.read_text().splitlines()]
    assert sum(1 for line in lines if line["kind"] == "request") == 4
