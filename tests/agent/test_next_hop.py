"""An agent's next hop: checked and rendered once per callback and route, and rendered
again when the deployments move an agent to another site."""

from __future__ import annotations

import numpy as np
import pytest

from splitmq.agent.requests import RequestFailed
from splitmq.wire import Activation, Tensor
from splitmq.wire.topics import SITE_STAGE, STAGE
from tests.agent.conftest import MemoryFleet


def activation(route: tuple[tuple[str, ...], ...], callback: str) -> Activation:
    return Activation(
        request_id=b"r" * 16,
        attempt=0,
        deployment="d",
        stage=0,
        route=route,
        callback=callback,
        deadline_ms=0,
        tensors=(Tensor("x", np.zeros((1, 2), np.float32)),),
    )


GOOD = "splitmq/v1/clients/c1/result"


def test_the_next_hop_follows_the_sites_and_bad_ones_fail_every_time(fleet: MemoryFleet) -> None:
    agent = fleet.agent("pi-1")
    workers = agent.workers
    request = activation((("pi-1",), ("pi-2",)), GOOD)
    assert workers._next_hop(request) == STAGE.name(deployment="d", stage=1, agent="pi-2")
    assert workers._next_hop(activation((("pi-1",),), GOOD)) is None  # the last stage
    agent.sites._sites = {"pi-2": "home"}  # a deployment put pi-2 behind a site broker
    assert workers._next_hop(request) == SITE_STAGE.name(
        site="home", deployment="d", stage=1, agent="pi-2"
    )
    for _ in range(2):  # not remembered: refused each time
        with pytest.raises(RequestFailed, match="not a result topic"):
            workers._next_hop(activation((("pi-1",), ("pi-2",)), "splitmq/v1/agents/x/cmd"))
        with pytest.raises(RequestFailed, match="names no agent"):
            workers._next_hop(activation((("pi-1",), ()), GOOD))
