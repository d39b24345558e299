"""The coordinator dies and another one starts.

The coordinator keeps no state of its own: the fleet (statuses, telemetry) and the
deployments are retained topics. While it is down, requests whose plan the client has
cached keep flowing (agents forward to each other; nobody asks the coordinator). A new
coordinator rebuilds the same view from the retained topics and takes up healing where
the old one left off, including an agent that restarted meanwhile and serves nothing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from splitmq.client import InferenceError, InferenceResult
from splitmq.coordinator.service import Coordinator, CoordinatorConfig
from splitmq.transport import MqttTransport, parse_broker_url
from splitmq.wire import Plan, PlanRequest

from .fleet import DEPLOYMENT, Fleet, Reference, paced, percentile_ms, start_fleet

pytestmark = pytest.mark.integration

AGENTS = ["coord-a", "coord-b", "coord-c"]


@pytest.fixture(scope="module")
def fleet(digits_pool: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    fleet = start_fleet(tmp_path_factory.mktemp("coordinator-restart"), digits_pool, AGENTS)
    try:
        fleet.deploy(stages=2, replicas=2)
        yield fleet
    finally:
        fleet.close()


def test_requests_flow_while_the_coordinator_is_down_and_a_new_one_rebuilds_the_state(
    fleet: Fleet, reference: Reference
) -> None:
    # The plan ages out (plan_ttl_s) during the outage: the stale plan keeps serving while
    # the client's renewals go unanswered.
    client = fleet.client(deadline_s=10.0, plan_ttl_s=1.0)
    assert isinstance(client.infer(reference.images[0]), InferenceResult)  # plan cached
    before = fleet.wait_healthy(replicas=2)
    plans_before = client.transport.stats.msgs_out

    killer = threading.Timer(0.5, fleet.kill_coordinator)
    killer.start()
    count = 300
    outcomes = list(
        client.stream(paced(reference.images, count, 100.0), ordered=False, max_in_flight=8)
    )
    killer.join()
    assert fleet.coordinator is not None and fleet.coordinator.poll() is not None
    failed = [str(o) for o in outcomes if isinstance(o, InferenceError)]
    assert not failed, failed[:3]
    results = [o for o in outcomes if isinstance(o, InferenceResult)]
    assert all(reference.check(o.index, o.outputs) for o in results)  # type: ignore[arg-type]
    assert percentile_ms([o.latency_ms for o in results], 99) < 500
    assert client.transport.stats.msgs_out >= plans_before + count

    # Meanwhile a replica restarts: it comes back serving nothing, and nobody tells it.
    victim = before.stages[0].replicas[0]
    fleet.kill_agent(victim)
    fleet.start_agent(victim)
    fleet.watch.wait(
        lambda: (
            (t := fleet.watch.telemetry.get(victim)) is not None
            and t.ts_ms > time.time() * 1000 - 1000
            and not t.queue_depth
        ),
        30,
        f"{victim} back, serving nothing",
    )
    assert not fleet.healthy(replicas=2)

    # A new coordinator rebuilds the fleet and the deployment from retained topics...
    started = time.monotonic()
    transport = MqttTransport(parse_broker_url(fleet.url))
    coordinator = Coordinator(transport, fleet.pool_dir, CoordinatorConfig(watch_period_s=0.3))
    coordinator.start()
    try:
        fleet.watch.wait(
            lambda: (
                DEPLOYMENT in coordinator.deployments()
                and set(AGENTS) <= set(coordinator.registry.online_ids())
            ),
            10,
            "the fleet and deployment rebuilt",
        )
        rebuilt = coordinator.deployments()[DEPLOYMENT]
        assert rebuilt.epoch >= before.epoch and rebuilt.stages[0].digest == before.stages[0].digest
        # ... answers plans from it ...
        answer = coordinator.plan(PlanRequest("p1", "someone", "digits"))
        assert isinstance(answer, Plan) and answer.deployment == DEPLOYMENT
        # ... and heals: the restarted agent is told to load its stages again (from its
        # cache), so every stage has its two replicas serving.
        after = fleet.wait_healthy(replicas=2, timeout_s=20)
        assert victim in after.stages[0].replicas
        assert "found in the cache" in (fleet.workdir / f"{victim}.log").read_text()
        heal_s = time.monotonic() - started
        fresh = fleet.client()  # no plan cached: needs the new coordinator
        for index in range(20):
            assert reference.check(index, fresh.infer(reference.images[index]).outputs)
        print(f"rebuilt and healed in {heal_s:.1f} s")
    finally:
        coordinator.stop()
