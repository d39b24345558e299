"""The same fleet on the embedded Python broker (``python -m splitmq.embedded_broker``, a
process of its own), for a smaller run: 60 requests, the route's first agent killed
with SIGKILL a third of the way."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from .conftest import EmbeddedBrokerProcess, Fleet, start_fleet, stop_fleet
from .streaming import (
    check_every_request_ended_once,
    check_served_after_healing,
    healed_without,
    stream_with_a_kill,
)

pytestmark = pytest.mark.integration

REQUESTS = 60
HEAL_WITHIN_S = 10.0


@pytest.fixture(scope="module")
def fleet(
    embedded_broker: EmbeddedBrokerProcess,
    digits_pool: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Fleet]:
    started = start_fleet(embedded_broker.url, tmp_path_factory.mktemp("e2e-embedded"), digits_pool)
    yield started
    stop_fleet(started)


def test_requests_survive_a_killed_agent_on_the_embedded_broker(
    fleet: Fleet, test_images: np.ndarray, reference: np.ndarray
) -> None:
    run = stream_with_a_kill(
        fleet,
        test_images,
        REQUESTS,
        kill_after=REQUESTS // 3,
        max_in_flight=16,
        ordered=True,
    )
    print(run.summary())
    check_every_request_ended_once(run, REQUESTS, reference)
    assert len(run.results) >= 0.95 * REQUESTS, f"{run.summary()}\n{fleet.logs()}"
    healed_s, healed = healed_without(fleet, run.victim, HEAL_WITHIN_S)
    print(f"healed in {healed_s - run.killed_s:.2f} s: {[s.replicas for s in healed.stages]}")
    assert healed_s - run.killed_s < HEAL_WITHIN_S
    check_served_after_healing(fleet, healed, run.victim, test_images, reference)
