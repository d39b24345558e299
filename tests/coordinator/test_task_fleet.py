"""A task served end to end: a real Mosquitto, the coordinator and two agents (laptop and
phone profiles) in this process on MQTT, the three digits members deployed side by side
in float32 and int8 with ``splitmq deploy --task digits``, and a client whose battery
falls while it asks the task for answers.

- deploying as members: a model of another task is refused, and a gate (``--max-shard-mb``)
  is applied to each member on its own;
- at full battery the client is served by the most accurate member, as the battery falls
  its requests move to cheaper members and end on the smallest; every answer is the
  unsplit output of the member and variant the result says served it;
- the report says which member served which requests (a table).
"""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from splitmq.agent import Agent, AgentConfig, BatteryMode, agent_will, load_profile
from splitmq.cli import main
from splitmq.client import Client, ClientConfig, PlanRefusedError
from splitmq.client.kpi import ReportInputs
from splitmq.client.report_cli import format_report
from splitmq.converter.pool import open_entry
from splitmq.converter.runner import run_model
from splitmq.coordinator.service import Coordinator, CoordinatorConfig
from splitmq.coordinator.task_choice import TaskChoiceConfig
from splitmq.mosquitto import Mosquitto
from splitmq.transport import MqttTransport, parse_broker_url
from splitmq.wire import Battery, DeploymentState, EnergyLevel
from tests.client.conftest import Records
from tests.data import DIGITS, POOL_DIR, TASK, TASK_MEMBERS, digits_test

pytestmark = pytest.mark.integration

PROFILES = {"laptop": "laptop", "phone": "phone"}
BATTERY_STEPS = (100.0, 60.0, 35.0, 10.0)
LEVELS = TaskChoiceConfig(low_battery_pct=70.0, critical_battery_pct=20.0)
"""Not the defaults (50, 20): at 60 % performance is planned as balanced."""
REQUESTS_PER_STEP = 4


@dataclass
class TaskFleet:
    url: str
    namespace: str
    pool: Path
    coordinator: Coordinator

    def deploy(self, *arguments: str) -> int:
        broker = ["--broker", self.url, "--namespace", self.namespace, "--timeout", "60"]
        return main(["-q", "deploy", "--task", TASK, *arguments, *broker])


@pytest.fixture(scope="module")
def fleet(mosquitto: Mosquitto, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TaskFleet]:
    workdir = tmp_path_factory.mktemp("task-fleet")
    pool = workdir / "pool"
    for name in (*TASK_MEMBERS, DIGITS):
        shutil.copytree(POOL_DIR / name, pool / name)
    url, namespace = mosquitto.url(), f"task-{uuid.uuid4().hex[:8]}/v1"
    coordinator = Coordinator(
        MqttTransport(parse_broker_url(url)),
        pool,
        CoordinatorConfig(namespace=namespace, watch_period_s=0.3, task_choice=LEVELS),
    )
    coordinator.start()
    agents = []
    for agent_id, profile in PROFILES.items():
        config = AgentConfig(
            agent_id=agent_id,
            profile=load_profile(profile),
            cache_dir=workdir / agent_id,
            namespace=namespace,
            xnnpack=False,
            telemetry_period_s=0.2,
            bench_runs=5,  # the median of 5: a busy machine's hiccup does not decide
            battery=BatteryMode.SIMULATED,
            battery_pct=100.0,
            threads=1,
            emulate=False,
        )
        transport = MqttTransport(
            parse_broker_url(url, client_id=f"agent-{agent_id}-{namespace[5:13]}"),
            will=agent_will(config),
        )
        agent = Agent(config, transport)
        agent.start()
        agents.append(agent)
    try:
        deadline = time.monotonic() + 20
        while set(coordinator.registry.online_ids()) != set(PROFILES):
            assert time.monotonic() < deadline, coordinator.registry.online_ids()
            time.sleep(0.05)
        yield TaskFleet(url, namespace, pool, coordinator)
    finally:
        for agent in agents:
            agent.stop()
        coordinator.stop()


def test_a_model_of_no_task_is_refused_and_gates_apply_per_member(
    fleet: TaskFleet, capsys: pytest.CaptureFixture[str]
) -> None:
    assert fleet.deploy(DIGITS, "digits-small", "--variants", "float32") == 1
    out = capsys.readouterr().out
    assert "task digits: 1 of 2 deployed" in out
    assert f"refused: {DIGITS} " in out and "is not a member of task digits" in out
    # the large member's float32 weights (277 kB) fit no shard of 50 kB; the small one's do
    code = fleet.deploy(
        "digits-small", "digits-large", "--variants", "float32", "--max-shard-mb", "0.05"
    )
    out = capsys.readouterr().out
    assert code == 1 and "task digits: 1 of 2 deployed" in out
    rows = {line.split()[0]: line for line in out.splitlines()[3:5]}
    assert "ok: deployed digits-small" in rows["digits-small"]
    assert "refused:" in rows["digits-large"]


def test_a_falling_battery_moves_requests_to_the_smaller_member(
    fleet: TaskFleet, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert fleet.deploy(*TASK_MEMBERS, "--variants", "float32,int8") == 0
    out = capsys.readouterr().out
    assert "task digits: 6 of 6 deployed" in out
    images, _ = digits_test()
    records = Records()
    served: list[tuple[float, str, str]] = []
    with Client(
        fleet.url,
        namespace=fleet.namespace,
        config=ClientConfig(deadline_s=15.0),
        recorder=records,
    ) as client:
        for step, pct in enumerate(BATTERY_STEPS):
            for i in range(REQUESTS_PER_STEP):
                image = images[step * REQUESTS_PER_STEP + i][None]
                result = client.infer(
                    image,
                    task=TASK,
                    energy_level=EnergyLevel.PERFORMANCE,
                    client_battery=Battery(pct, plugged=False),
                )
                plan = result.plan
                assert plan.task == TASK and plan.model in TASK_MEMBERS
                assert plan.accuracy is not None
                entry = open_entry(fleet.pool, plan.model)
                assert plan.accuracy == entry.manifest.accuracy(plan.variant)
                (expected,) = run_model(entry.variant_path(plan.variant), [image]).values()
                (output,) = result.outputs.values()
                np.testing.assert_array_equal(output, expected)
                assert result.record.model == plan.model and result.record.task == TASK
                assert result.served_by == (plan.model, plan.variant)
                served.append((pct, plan.model, plan.variant))
                # every member and variant deployed, weighed, and kept with the record
                weighed = {(c.model, c.variant) for c in plan.candidates or ()}
                assert weighed == {(m, v) for m in TASK_MEMBERS for v in ("float32", "int8")}
                assert result.record.candidates == plan.candidates
        # asking for more accuracy than the small member has keeps a bigger one
        low = Battery(BATTERY_STEPS[-1], plugged=False)
        result = client.infer(images[0][None], task=TASK, min_accuracy=0.9, client_battery=low)
        assert result.plan.model == "digits-medium", result.plan
        with pytest.raises(PlanRefusedError) as refused:
            client.infer(images[0][None], task=TASK, min_accuracy=0.99)
        assert refused.value.constraint == "min_accuracy"
        assert "the most accurate deployed member of task digits (digits-large" in str(
            refused.value
        )
    sizes = [list(TASK_MEMBERS).index(model) for _, model, _ in served]
    assert sizes == sorted(sizes, reverse=True), served  # never back to a bigger member
    assert served[0][1:] == ("digits-large", "float32"), served
    at_60 = {model for pct, model, _ in served if pct == 60.0}
    assert "digits-large" not in at_60, served  # the coordinator's levels, not the defaults
    assert served[-1][1] == "digits-small", served
    # the command line: each row says which member served it
    inputs = tmp_path / "inputs.npy"
    np.save(inputs, images[:3])
    options = ["--batch", "--min-accuracy", "0.9", "--no-db"]
    broker = ["--broker", fleet.url, "--namespace", fleet.namespace]
    code = main(["-q", "infer", "--task", TASK, str(inputs), *options, *broker])
    lines = capsys.readouterr().out.splitlines()
    assert code == 0 and lines[0].split()[:3] == ["input", "served", "by"], lines
    assert all("digits-medium" in line for line in lines[1:4]), lines
    report = format_report(ReportInputs(tuple(records.wait_for(len(served) + 2))).kpis())
    table = report.split("\n\n")[-1].splitlines()
    assert table[0].split()[:3] == ["task", "member", "variant"]
    rows = {tuple(line.split()[1:3]): line for line in table[2:8]}
    assert set(rows) == {(m, v) for m in TASK_MEMBERS for v in ("float32", "int8")}, table
    # retiring the task's members retires every variant of each
    assert fleet.deploy(*TASK_MEMBERS, "--retire") == 0
    out = capsys.readouterr().out
    assert "task digits: 3 of 3 retired" in out, out
    for line in out.splitlines()[3:6]:
        assert line.split()[1] == "all" and "ok: retired" in line, out
    members = [d for d in fleet.coordinator.deployments().values() if d.model in TASK_MEMBERS]
    assert {(d.model, d.variant) for d in members} >= {
        (m, v) for m in TASK_MEMBERS for v in ("float32", "int8")
    }
    assert all(d.state is DeploymentState.RETIRED for d in members), members
