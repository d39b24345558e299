"""The client's first hop's topic: rendered once per deployment message, stage and
agent, and again when a new deployment message places the agent at another site."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from splitmq.client import ClientConfig
from splitmq.client.engine import RequestEngine
from splitmq.transport import MemoryBroker, MemoryTransport
from splitmq.wire import Activation, Deployment, Tensor
from splitmq.wire.topics import SITE_STAGE, STAGE

from ..unit.samples import REQUEST_ID, sample_messages


def deployment() -> Deployment:
    (sample,) = [m for m in sample_messages() if isinstance(m, Deployment) and m.sites]
    return replace(sample, sites={})


def activation(deployment: str, agent: str) -> Activation:
    return Activation(
        request_id=REQUEST_ID,
        attempt=0,
        deployment=deployment,
        stage=0,
        route=((agent,), ("other",)),
        callback="splitmq/v1/clients/c/result",
        deadline_ms=0,
        tensors=(Tensor("x", np.zeros(3, np.float32)),),
    )


def test_a_new_deployment_message_moves_the_first_hops_topic() -> None:
    engine = RequestEngine(
        MemoryTransport(MemoryBroker(), "c"),
        "c",
        namespace="splitmq/v1",
        config=ClientConfig(model="m"),
        recorder=None,
        on_telemetry=None,
    )
    first = deployment()
    engine._plans.on_deployment(first)
    request = activation(first.deployment, "rpi-1")
    here = STAGE.name("splitmq/v1", deployment=first.deployment, stage=0, agent="rpi-1")
    assert engine._hop_topic(request) == here
    assert engine._hop_topic(request) == here  # remembered
    moved = replace(first, epoch=first.epoch + 1, sites={"rpi-1": "north-campus"})
    engine._plans.on_deployment(moved)
    away = SITE_STAGE.name(
        "splitmq/v1", site="north-campus", deployment=first.deployment, stage=0, agent="rpi-1"
    )
    assert engine._hop_topic(request) == away
