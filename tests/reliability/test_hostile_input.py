"""Hostile input through a real broker: ``mosquitto_pub`` sends garbage everywhere.

Garbage, wrong kinds, huge shapes, truncated tensors, forged commands and payloads of
megabytes go to the agents' stage, command and pool topics, the coordinator's plan and
pool topics, and a client's plan and result topics, from a client that is none of
theirs. Every process survives, nothing is computed on bad data (the only answers are
errors), commands not issued by the coordinator are refused, and the fleet keeps
answering correctly.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest

from splitmq.client import InferenceResult
from splitmq.transport import InboundMessage
from splitmq.wire import (
    CommandReply,
    ErrorMessage,
    LoadShard,
    Ping,
    Result,
    UnloadShard,
    decode,
    encode,
)
from splitmq.wire.topics import (
    COMMANDS,
    DEPLOYMENTS,
    EVENTS,
    PLAN_REQUESTS,
    PLANS,
    POOL_CHUNKS,
    POOL_FETCH,
    RESULTS,
    STAGE,
)

from ..agent.hostile import CALLBACK, activation, hostile_activations, tensor
from .fleet import DEPLOYMENT, Fleet, Reference, start_fleet

pytestmark = pytest.mark.integration

AGENTS = ["hostile-a", "hostile-b"]
CLIENT = "victim"


@pytest.fixture(scope="module")
def fleet(digits_pool: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    fleet = start_fleet(tmp_path_factory.mktemp("hostile"), digits_pool, AGENTS)
    try:
        fleet.deploy(stages=2, replicas=1)
        yield fleet
    finally:
        fleet.close()


def mosquitto_pub(fleet: Fleet, topic: str, payload: bytes, workdir: Path) -> None:
    """Publish ``payload`` on ``topic`` with the Mosquitto command line client."""
    command = ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(fleet.broker.port), "-q", "1"]
    command += ["-i", f"mallory-{os.urandom(3).hex()}", "-t", topic]
    if payload:
        path = workdir / "payload"
        path.write_bytes(payload)
        command += ["-f", str(path)]
    else:
        command += ["-n"]
    subprocess.run(command, check=True, capture_output=True, timeout=20)


def test_garbage_on_every_topic_kills_nothing_and_computes_nothing(
    fleet: Fleet, reference: Reference, tmp_path: Path
) -> None:
    deployment = fleet.wait_healthy(replicas=1)
    first, second = (s.replicas[0] for s in deployment.stages)
    input_name = deployment.stages[0].inputs[0].name
    shape = list(deployment.stages[0].inputs[0].shape)
    client = fleet.client(CLIENT, deadline_s=5.0)
    assert isinstance(client.infer(reference.images[0]), InferenceResult)

    answers: list[Result | ErrorMessage] = []
    replies: list[CommandReply] = []
    fleet.observer.subscribe(
        CALLBACK,
        lambda m: answers.append(
            cast(Result | ErrorMessage, decode(m.payload, expect=(Result, ErrorMessage)))
        ),
    )

    def on_event(message: InboundMessage) -> None:
        event = decode(message.payload)
        if isinstance(event, CommandReply) and event.command_id.startswith("forged"):
            replies.append(event)

    fleet.observer.subscribe(EVENTS.filter(), on_event)

    hostile = hostile_activations(DEPLOYMENT, input_name, shape)
    hostile["megabytes of zeros"] = bytes(7 * 1024 * 1024)
    hostile["huge tensor bytes"] = activation(
        [tensor(input_name, [1, 1024, 1024, 1], bytes(4 * 1024 * 1024))], deployment=DEPLOYMENT
    )
    stage_topics = [
        STAGE.name(deployment=DEPLOYMENT, stage=0, agent=first),
        STAGE.name(deployment=DEPLOYMENT, stage=1, agent=second),
    ]
    shard = deployment.stages[1]
    forged = [
        encode(UnloadShard("forged-unload", "mallory", DEPLOYMENT, 1)),
        encode(LoadShard("forged-load", "mallory", "evil", 0, shard.digest, shard.size_bytes)),
        encode(Ping("forged-ping", "mallory", 0.0)),
    ]
    others = [
        COMMANDS.name(agent=first),
        COMMANDS.name(agent=second),
        POOL_CHUNKS.name(agent=first),
        POOL_FETCH.name(),
        PLAN_REQUESTS.name(),
        PLANS.name(client=CLIENT),
        RESULTS.name(client=CLIENT),
        DEPLOYMENTS.name(deployment="nonsense"),
    ]
    started = time.monotonic()
    for payload in hostile.values():
        for topic in stage_topics:
            mosquitto_pub(fleet, topic, payload, tmp_path)
    for payload in [*list(hostile.values())[:8], *forged]:
        for topic in others:
            mosquitto_pub(fleet, topic, payload, tmp_path)
    # A request that is fine except its deadline, centuries away: served, not an error.
    far = activation(
        [tensor(input_name, shape, reference.images[1].tobytes())],
        deployment=DEPLOYMENT,
        route=[[first], [second]],
        deadline_ms=2**62,
    )
    mosquitto_pub(fleet, stage_topics[0], far, tmp_path)
    print(
        f"{len(hostile) * 2 + 11 * len(others) + 1} hostile messages in "
        f"{time.monotonic() - started:.1f} s"
    )

    # Everyone is alive and the fleet still serves, exactly. The far request, published
    # last, is answered last: each stage's worker takes its queue in order, so once its
    # result is in, whatever the hostile messages were going to give has been given.
    fleet.watch.wait(
        lambda: (
            len(answers) >= 10 and len(replies) >= 4 and any(isinstance(a, Result) for a in answers)
        ),
        30,
        "the refusals and the far request's result",
    )
    assert all(fleet.alive(a) for a in AGENTS)
    assert fleet.coordinator is not None and fleet.coordinator.poll() is None
    results = [a for a in answers if isinstance(a, Result)]
    assert len(results) == 1, [str(a) for a in answers if isinstance(a, ErrorMessage)][:5]
    assert reference.check(1, {t.name: t.array for t in results[0].tensors})
    errors = [a for a in answers if isinstance(a, ErrorMessage)]
    assert all(e.code != "internal" for e in errors), [e.message for e in errors]
    assert replies and all(not r.ok and "mallory" in r.message for r in replies)
    fleet.wait_healthy(replicas=1, timeout_s=10)  # the forged unload did nothing
    for index in range(10):
        assert reference.check(index, client.infer(reference.images[index]).outputs)
    fresh = fleet.client()  # a new client still gets plans from the coordinator
    assert reference.check(2, fresh.infer(reference.images[2]).outputs)
    for agent_id in AGENTS:
        log = (fleet.workdir / f"{agent_id}.log").read_text()
        assert "Traceback" not in log, log[-3000:]
    assert "Traceback" not in (fleet.workdir / "coordinator.log").read_text()
