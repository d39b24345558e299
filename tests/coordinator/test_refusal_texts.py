"""The words of every refusal a user meets: the planner's, the deployer's, the CLIs'.

Each says what failed, with figures written as a person reads them (``0.01 ms``, not
``0.0 ms``), and a next step that fits the case.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from splitmq.client.errors import PlanRefusedError
from splitmq.client.records import RequestRecord
from splitmq.coordinator.deployer import Deployer, DeployerConfig
from splitmq.coordinator.model_pool import ModelPool
from splitmq.coordinator.planner import AgentView, DeploymentView, PlannerConfig, figure, plan
from splitmq.coordinator.registry import Registry
from splitmq.wire import (
    AgentState,
    AgentStatus,
    Battery,
    DeployRequest,
    Link,
    PlanRefused,
    PlanRequest,
    Telemetry,
)
from tests.coordinator.test_planner import LAPTOP, PHONE, PI, deployment, fleet, with_queues

# One stage on "pi" (20 ms, 4 W, plugged), 100 kB in and out at 1000 Mbit/s: a route
# takes 0.5 + 20 + 0.8 + 0.5 = 21.8 ms and 4 W x 20 ms + 0.1 J/MB x 0.2 MB = 0.1 J.
ONE_STAGE = deployment([{"pi": 20.0}], fidelity=0.98)
# The laptop: 11.8 ms for 0.17 J; the phone: 41.8 ms for 0.14 J.
TWO_WAYS = deployment([{"laptop": 10.0, "phone": 40.0}])


def refusal(
    deployments: list[DeploymentView], agents: dict[str, AgentView], **asked: object
) -> PlanRefused:
    fields: dict[str, object] = {"model": "m", **asked}
    request = PlanRequest(request_id="r", client_id="c", **fields)  # type: ignore[arg-type]
    answer = plan(request, deployments, agents)
    assert isinstance(answer, PlanRefused), answer
    return answer


@pytest.mark.parametrize(
    ("value", "text"),
    [(0.01, "0.01"), (0.0001, "0.0001"), (0.125, "0.125"), (21.84, "21.8"), (1234.5, "1234")],
)
def test_figures_read_as_a_person_writes_them(value: float, text: str) -> None:
    assert figure(value) == text


@pytest.mark.parametrize(
    ("deployments", "agents", "asked", "constraint", "message"),
    [
        (
            [deployment([{"pi": 1.0}], name="d-other")],
            {"pi": PI},
            {"model": "nosuchmodel"},
            "model",
            "no deployment of nosuchmodel (deployed: m): check the name, or deploy it first "
            "(`splitmq deploy nosuchmodel`)",
        ),
        (
            [],
            {"pi": PI},
            {},
            "model",
            "no deployment of m (nothing is deployed): check the name, or deploy it first "
            "(`splitmq deploy m`)",
        ),
        (
            [ONE_STAGE],
            {"pi": PI},
            {"version": "v9"},
            "model",
            "no deployment of m version v9 (deployed: version v1): ask for a deployed "
            "version, or deploy this one (`splitmq deploy m --version v9`)",
        ),
        (
            [ONE_STAGE],
            {"pi": PI},
            {"min_fidelity": 0.999},
            "min_fidelity",
            "the most faithful deployed variant of m (float32) has fidelity 0.9800, below "
            "the 0.9990 asked for: ask for less, or deploy a more faithful variant "
            "(`splitmq deploy m --variant float32`)",
        ),
        (
            [ONE_STAGE],
            {"pi": AgentView("pi", online=False)},
            {},
            "unavailable",
            "stage 0 of d1 has no replica online (pi): the coordinator re-deploys it when an "
            "agent can take it; ask again shortly",
        ),
        (
            [ONE_STAGE],
            {"pi": AgentView("pi", battery_pct=5.0, plugged=False)},
            {},
            "battery",
            "stage 0 of d1 has no replica above the battery floor (15%) or plugged in (pi): "
            "plug one in or charge it, or let the coordinator move the stage",
        ),
        (
            [ONE_STAGE],
            {"pi": PI},
            {"max_latency_ms": 0.01},
            "max_latency_ms",
            "the fastest route takes 21.8 ms, above the 0.01 ms allowed: allow more time, "
            "or deploy on faster agents",
        ),
        (
            # Four requests queued on pi, each holding it 20.8 ms (compute, then send).
            [with_queues(ONE_STAGE, {0: {"pi": 4}})],
            {"pi": PI},
            {"max_latency_ms": 50.0},
            "max_latency_ms",
            "the fastest route takes 105 ms (83.2 ms of it waiting behind queued requests: "
            "the fleet is busy), above the 50 ms allowed: allow more time, or deploy on "
            "faster agents",
        ),
        (
            [ONE_STAGE],
            {"pi": PI},
            {"energy_j": 0.0001},
            "energy_j",
            "the thriftiest route needs 0.1 J, above the budget of 0.0001 J: allow more "
            "energy, or deploy on thriftier agents",
        ),
        (
            [TWO_WAYS],
            fleet(LAPTOP, PHONE),
            {"max_latency_ms": 20.0, "energy_j": 0.15},
            "max_latency_ms+energy_j",
            "no route meets both budgets: those within 20 ms need more than 0.15 J, and "
            "those within 0.15 J take more than 20 ms: relax one of them",
        ),
    ],
)
def test_the_planners_refusals(
    deployments: list[DeploymentView],
    agents: dict[str, AgentView],
    asked: dict[str, object],
    constraint: str,
    message: str,
) -> None:
    answer = refusal(deployments, agents, **asked)
    assert (answer.constraint, answer.message) == (constraint, message)


def test_the_client_adds_no_hint_of_its_own_to_a_refusal() -> None:
    answer = refusal([deployment([{"pi": 1.0}])], {"pi": PI}, model="nosuchmodel")
    record = RequestRecord("00" * 16, "nosuchmodel", 0.0, 1.0, ok=False)
    error = PlanRefusedError(record, answer.constraint, answer.message)
    assert error.reason == (
        "the coordinator refused a plan (model): no deployment of nosuchmodel (deployed: "
        "m): check the name, or deploy it first (`splitmq deploy nosuchmodel`)"
    )


# -- the deployer's replies ------------------------------------------------------------------


def registry(*agents: str, pages: tuple[str, ...] = ()) -> Registry:
    """Agents online, plugged, with a speed and a link; ``pages`` declare LiteRT.js's
    tensor dtypes (float32, int32, uint8)."""
    fleet = Registry(clock=lambda: 100.0)
    for agent in (*agents, *pages):
        page = agent in pages
        fleet.on_status(
            AgentStatus(
                agent,
                AgentState.ONLINE,
                runtime="litert.js" if page else "",
                speed_gflops=1.0,
                link=Link(100.0, 1.0),
                tensor_dtypes=("float32", "int32", "uint8") if page else None,
            )
        )
        fleet.on_telemetry(
            Telemetry(agent, 0, 1.0, 0.0, 2_000_000_000, Battery(100.0, plugged=True))
        )
    return fleet


def deploy(pool: Path, fleet: Registry, **asked: object) -> str:
    deployer = Deployer(
        ModelPool(pool),
        fleet,
        None,  # type: ignore[arg-type]  # refused before any command is sent
        publish=lambda _d: None,
        deployments=dict,
        config=DeployerConfig(planner=PlannerConfig()),
    )
    request = DeployRequest(request_id="r", client_id="op", **asked)  # type: ignore[arg-type]
    reply = deployer.deploy(request)
    assert not reply.ok, reply
    return reply.message


@pytest.fixture
def pool(digits_pool: object) -> Path:
    return digits_pool.path.parents[1]  # type: ignore[attr-defined, no-any-return]


def test_the_deployers_refusals(pool: Path, digits_pool: object, tmp_path: Path) -> None:
    name = digits_pool.name  # type: ignore[attr-defined]
    assert deploy(tmp_path, registry("a"), model="nosuchmodel") == (
        f"no model 'nosuchmodel' in the pool {tmp_path}; convert it first with "
        f"`splitmq convert MODEL --name nosuchmodel --pool {tmp_path}`"
    )
    assert deploy(pool, registry(), model=name) == (
        "no agent is online and above the battery floor (15%) or plugged in: start one "
        "(`splitmq agent`), or plug one in"
    )
    assert deploy(pool, registry("a"), model=name, replicas=0) == (
        "replicas must be at least 1, not 0 [request]"
    )
    gate = deploy(pool, registry("a"), model=name, stages=1, max_latency_ms=0.01)
    assert gate.startswith("best predicted latency ") and gate.endswith(
        " ms exceeds the gate of 0.01 ms (1 stage: a): raise max_latency_ms, or add faster "
        "agents or links [max_latency_ms]"
    )
    assert deploy(pool, registry("a"), model=name, retire=True) == (
        f"nothing to retire: {name} is not deployed"
    )
    assert deploy(pool, registry("a"), model=name, retire=True, variant="int8") == (
        f"nothing to retire: {name} int8 is not deployed"
    )


def test_the_deployers_refusals_of_dtypes_an_agent_cannot_pass(
    pool: Path, digits_pool: object
) -> None:
    name = digits_pool.name  # type: ignore[attr-defined]
    assert deploy(pool, registry(pages=("page-1",)), model=name, variant="int8") == (
        f"no agent online can pass the tensors at the boundaries of {name} int8: page-1 "
        "(litert.js) passes only float32, int32, uint8; int8 variant boundaries carry int8: "
        f"deploy the float32 variant (`splitmq deploy {name} --variant float32`), or start "
        "an agent whose runtime passes int8 (`splitmq agent`)"
    )
    assert deploy(
        pool, registry("pi-1", pages=("page-1",)), model=name, variant="int8", pin_last="page-1"
    ) == (
        "pin_last agent page-1 (litert.js) passes only float32, int32, uint8; int8 variant "
        f"boundaries carry int8: deploy the float32 variant (`splitmq deploy {name} --variant "
        "float32`), or pin another agent [pin_last]"
    )


# -- the command line ------------------------------------------------------------------------


def cli(*argv: str) -> int:
    from splitmq.cli import main

    return main(list(argv))


def test_the_command_lines_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli("deploy", "m", "--stages", "two") == 2
    assert capsys.readouterr().err == (
        "splitmq deploy: error: --stages must be a number or auto, not 'two'\n"
    )
    missing = tmp_path / "missing.png"
    assert cli("infer", "digits", str(missing)) == 2
    assert capsys.readouterr().err.endswith(
        f"splitmq infer: error: {missing}: no such file or directory\n"
    )
    (tmp_path / "x.npy").write_bytes(b"")
    assert cli("infer", "digits", str(tmp_path / "x.npy"), "--pixel-range", "0-1") == 2
    assert capsys.readouterr().err.endswith(
        "splitmq infer: error: --pixel-range '0-1' must be LOW,HIGH (e.g. 0,1 or 0,255)\n"
    )
    assert cli("report", "--db", str(tmp_path / "none.db")) == 2
    assert capsys.readouterr().err == (
        f"splitmq report: error: no results database at {tmp_path / 'none.db'}: record some "
        "requests first, or give --db PATH or --jsonl EXPORT\n"
    )


def test_a_refused_deployment_is_said_on_stderr(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from splitmq.coordinator import cli as coordinator_cli
    from splitmq.wire import DeployReply

    def refused(_args: argparse.Namespace, request: DeployRequest, _timeout_s: float) -> object:
        return DeployReply(
            request.request_id, ok=False, message="nothing to retire: m is not deployed"
        )

    monkeypatch.setattr(coordinator_cli, "request_deployment", refused)
    assert cli("deploy", "m", "--retire") == 1
    out, err = capsys.readouterr()
    assert out == "" and err == "splitmq deploy: refused: nothing to retire: m is not deployed\n"
