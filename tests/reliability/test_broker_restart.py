"""The broker crashes mid-stream and comes back on the same port.

Mosquitto runs without persistence (broker-config/dev.conf): a crash loses every
session, every queued message and every retained one. Agents, the coordinator and the
client must reconnect on their own, subscribe again, say again what was retained
(presence, deployments), and the requests that were in flight must be retried and
complete.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from splitmq.client import InferenceError, InferenceResult

from .fleet import Fleet, Reference, paced, start_fleet

pytestmark = pytest.mark.integration

AGENTS = ["broker-a", "broker-b", "broker-c"]


@pytest.fixture(scope="module")
def fleet(digits_pool: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    fleet = start_fleet(tmp_path_factory.mktemp("broker-restart"), digits_pool, AGENTS)
    try:
        fleet.deploy(stages=2, replicas=2)
        yield fleet
    finally:
        fleet.close()


@pytest.mark.parametrize("hop_qos", [1, 0])
def test_a_broker_crash_mid_stream_loses_no_request(
    fleet: Fleet, reference: Reference, hop_qos: int
) -> None:
    """At either hop QoS: at QoS 0 nothing waits in an outbox for the broker to come
    back, and the attempts lost with it are sent again by the client's timeouts."""
    client = fleet.client(deadline_s=20.0, hop_qos=hop_qos)
    assert isinstance(client.infer(reference.images[0]), InferenceResult)  # plan cached
    before = fleet.deployment()
    assert before is not None

    def crash() -> None:
        time.sleep(1.0)
        fleet.restart_broker(down_s=1.5)

    crasher = threading.Thread(target=crash)
    crasher.start()
    count = 400
    outcomes = list(
        client.stream(paced(reference.images, count, 100.0), ordered=False, max_in_flight=16)
    )
    crasher.join()
    failed = [str(o) for o in outcomes if isinstance(o, InferenceError)]
    assert not failed, failed[:3]
    assert sorted(o.index for o in outcomes) == list(range(count))  # type: ignore[type-var]
    assert all(reference.check(o.index, o.outputs) for o in outcomes)  # type: ignore[union-attr,arg-type]
    # Requests sent while the broker was down waited for it (in paho's queue, or resent
    # by a retry) rather than failing.
    spanning = [o for o in outcomes if o.latency_ms > 1000]  # type: ignore[union-attr]
    assert spanning, "no request was in flight during the crash?"
    assert client.transport.stats.reconnects >= 1

    # What was retained is retained again: presence, telemetry and the deployment.
    fleet.wait_online(AGENTS, timeout_s=15)
    fleet.watch.wait(
        lambda: (d := fleet.deployment()) is not None and d.epoch >= before.epoch,
        15,
        "the deployment retained again",
    )
    # A client that starts now knows nothing: it needs all of that, and a coordinator.
    late = fleet.client()
    result = late.infer(reference.images[3])
    assert reference.check(3, result.outputs)
