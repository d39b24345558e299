"""Fixtures of the client tests: the agent tests' digits shards and in-memory fleets (real
agents serving real shards), a fake coordinator answering plan requests, deployments
published retained as a coordinator would, and clients that record what they finish."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from splitmq.client import Client, ClientConfig, RequestRecord
from splitmq.transport import InboundMessage, MemoryBroker, Transport
from splitmq.wire import (
    Deployment,
    Plan,
    PlanRefused,
    PlanRequest,
    ShardReady,
    StageSpec,
    decode,
    encode,
)
from splitmq.wire.topics import DEPLOYMENTS, PLAN_REQUESTS, PLANS
from tests.data import digits_test

from ..agent.conftest import (  # the agent tests' fixtures, shared
    CutModel,
    MemoryFleet,
    digits,
    digits3,
    digits_entry,
    digits_int8,
    fleet,
    load_command,
)
from ..agent.events import command, events, ready_for

__all__ = ["digits", "digits3", "digits_entry", "digits_int8", "fleet"]

MODEL = "digits"
Route = tuple[tuple[str, ...], ...]
Answer = Callable[[PlanRequest], Plan | PlanRefused | None]


def fixed_plan(
    route: Route,
    *,
    deployment: str = "d",
    epoch: int = 1,
    predicted_latency_ms: float = 5.0,
    variant: str = "float32",
) -> Plan:
    """A plan as a coordinator would send it (its request id is filled in on answering)."""
    return Plan(
        request_id="",
        deployment=deployment,
        epoch=epoch,
        model=MODEL,
        version="v1",
        variant=variant,
        route=route,
        predicted_latency_ms=predicted_latency_ms,
        predicted_energy_j=0.01,
    )


class FakeCoordinator:
    """Answers plan requests with whatever ``answer`` returns (None: stays silent)."""

    def __init__(self, transport: Transport, answer: Answer):
        self.answer = answer
        self.requests: list[PlanRequest] = []
        self._lock = threading.Lock()
        self.transport = transport
        transport.start()
        transport.subscribe(PLAN_REQUESTS.name(), self._on_request)

    def _on_request(self, message: InboundMessage) -> None:
        request = decode(message.payload, expect=PlanRequest)
        with self._lock:
            self.requests.append(request)
        answer = self.answer(request)
        if answer is not None:
            reply = replace(answer, request_id=request.request_id)
            self.transport.publish(PLANS.name(client=request.client_id), encode(reply))

    def plans_asked(self) -> int:
        with self._lock:
            return len(self.requests)


def always(*answers: Plan | PlanRefused | None) -> Answer:
    """Answer the n-th plan request with ``answers[n]`` (the last one ever after)."""
    count = iter(range(1_000_000))
    return lambda _request: answers[min(next(count), len(answers) - 1)]


class Records:
    """A recorder: every finished request's record, waited for with a timeout."""

    def __init__(self) -> None:
        self.records: list[RequestRecord] = []
        self._cond = threading.Condition()

    def __call__(self, record: RequestRecord) -> None:
        with self._cond:
            self.records.append(record)
            self._cond.notify_all()

    def wait_for(self, count: int, timeout_s: float = 10.0) -> list[RequestRecord]:
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.records) >= count, timeout_s):
                raise AssertionError(f"{len(self.records)} of {count} records")
            return list(self.records)


@dataclass
class ClientFleet:
    """A memory fleet, its fake coordinator, the deployments published, the clients made."""

    fleet: MemoryFleet
    coordinator: FakeCoordinator
    clients: list[Client]

    @property
    def broker(self) -> MemoryBroker:
        return self.fleet.broker

    def answer(self, answer: Answer) -> None:
        self.coordinator.answer = answer

    def deploy(
        self,
        model: CutModel,
        placements: Sequence[Sequence[str]],
        *,
        deployment: str = "d",
        epoch: int = 1,
        lie: Callable[[StageSpec], StageSpec] | None = None,
    ) -> Deployment:
        """Load stage ``s`` on every agent of ``placements[s]``; publish the deployment.

        ``lie`` may rewrite the published stage specs (to make the client send what the
        agents refuse).
        """
        operator = self.fleet.client(f"operator-{deployment}-{epoch}")
        try:
            return deploy(
                operator,
                self.fleet.pool,
                model,
                placements,
                deployment=deployment,
                epoch=epoch,
                lie=lie,
            )
        finally:
            operator.close()

    def on_one_agent(self, model: CutModel) -> Deployment:
        """Agent ``a`` hosts both stages of ``model``; every plan request is answered with
        that route."""
        self.fleet.agent("a")
        deployment = self.deploy(model, [["a"], ["a"]])
        self.answer(always(fixed_plan((("a",), ("a",)))))
        return deployment

    def client(
        self, client_id: str = "alice", *, records: Records | None = None, **overrides: Any
    ) -> Client:
        settings: dict[str, Any] = {
            "model": MODEL,
            "deadline_s": 5.0,
            "min_attempt_timeout_s": 0.3,
            "attempt_timeout_margin_s": 0.2,
            "plan_timeout_s": 2.0,
        }
        agent = overrides.pop("agent", None)
        settings.update(overrides)
        client = Client(
            self.broker, client_id, config=ClientConfig(**settings), recorder=records, agent=agent
        )
        client.start()
        self.clients.append(client)
        return client


def deploy(
    operator: Transport,
    pool: Any,
    model: CutModel,
    placements: Sequence[Sequence[str]],
    *,
    deployment: str = "d",
    epoch: int = 1,
    lie: Callable[[StageSpec], StageSpec] | None = None,
) -> Deployment:
    """What a coordinator does: shards into ``pool``, load commands, wait, publish retained."""
    inbox = events(operator)
    for stage, agent_ids in enumerate(placements):
        shard = model.shards[stage]
        pool.add(shard.data)  # type: ignore[attr-defined]
        for agent_id in agent_ids:
            load = load_command(shard, deployment, command_id=f"{deployment}-{stage}-{agent_id}")
            command(operator, agent_id, load)
    for stage, agent_ids in enumerate(placements):
        for agent_id in agent_ids:
            inbox.wait_for(ShardReady, ready_for(f"{deployment}-{stage}-{agent_id}"))
    stages = tuple(
        StageSpec(
            stage=stage,
            start_op=shard.start,  # type: ignore[attr-defined]
            end_op=shard.end,  # type: ignore[attr-defined]
            digest=shard.sha256,  # type: ignore[attr-defined]
            size_bytes=shard.size_bytes,  # type: ignore[attr-defined]
            inputs=shard.inputs,  # type: ignore[attr-defined]
            outputs=shard.outputs,  # type: ignore[attr-defined]
            replicas=tuple(placements[stage]),
        )
        for stage, shard in enumerate(model.shards[: len(placements)])
    )
    if lie is not None:
        stages = tuple(lie(spec) for spec in stages)
    message = Deployment(
        deployment=deployment,
        model=MODEL,
        version="v1",
        variant="float32",
        epoch=epoch,
        stages=stages,
    )
    operator.publish(DEPLOYMENTS.name(deployment=deployment), encode(message), retain=True).wait(10)
    return message


@pytest.fixture
def fleet_with_coordinator(fleet: MemoryFleet) -> Iterator[ClientFleet]:
    coordinator = FakeCoordinator(fleet.client("coordinator-fake"), always(None))
    made = ClientFleet(fleet, coordinator, [])
    yield made
    for client in made.clients:
        client.close()
    coordinator.transport.close()


@pytest.fixture(scope="session")
def test_images() -> np.ndarray:
    """Held-out digits, ``(N, 8, 8, 1)`` float32."""
    return digits_test()[0]


@pytest.fixture(scope="session")
def expected_outputs(digits: CutModel, test_images: np.ndarray) -> Callable[[int], np.ndarray]:
    """The unsplit float32 model's output for test image ``i`` (computed once each)."""
    from splitmq.converter.runner import make_interpreter, run_model

    interpreter = make_interpreter(digits.model)
    cache: dict[int, np.ndarray] = {}

    def expected(index: int) -> np.ndarray:
        if index not in cache:
            (output,) = run_model(interpreter, [test_images[index : index + 1]]).values()
            cache[index] = output
        return cache[index]

    return expected


def slow_profile(tmp_path: Path, factor: float) -> Path:
    """The ``host`` profile computing ``factor`` times slower (the agent sleeps)."""
    path = tmp_path / f"slow-{factor:g}.json"
    path.write_text(
        json.dumps(
            {
                "name": f"slow-{factor:g}",
                "active_power_w": 1,
                "idle_power_w": 1,
                "radio_j_per_mb": 1,
                "battery_wh": 1,
                "compute_factor": factor,
            }
        )
    )
    return path
