"""Three coordinator processes on one Mosquitto: one leads, the others take over.

Each coordinator serves its own copy of the model pool (a new leader cuts the shards
again on demand). The lease renews every 0.5 s (expiry 1.5 s). A probe asks for a plan
every 0.2 s throughout: any coordinator answers, leader or not, so plans never stop.

1. SIGKILL the leader and, at the same moment, an agent hosting a stage: the broker
   publishes the leader's will, another coordinator takes the lease and heals the
   stage within a few seconds; requests stream on meanwhile.
2. SIGSTOP the leader (cut off from the broker: it cannot renew) and SIGCONT it after
   another has taken over: it comes back a follower, publishes no lease of its own
   again, and deployments go on in the new term with no epoch given twice.
"""

from __future__ import annotations

import re
import shutil
import signal
import threading
import time
import uuid
from collections.abc import Iterator

import pytest

from splitmq import processes
from splitmq.client import InferenceError, InferenceResult
from splitmq.coordinator.lease import term_of_epoch
from splitmq.processes import Process
from splitmq.wire import Deployment, DeployReply, DeployRequest, Lease, PlanRequest
from splitmq.wire.topics import DEPLOY_REQUESTS, LEASE, PLAN_REQUESTS, PLANS
from tests import processes as spawn
from tests.helpers import Periodic

from .fleet import DEPLOYMENT, MODEL, OPERATOR, Fleet, Reference, paced, start_fleet

pytestmark = pytest.mark.integration

AGENTS = ["fo-a", "fo-b", "fo-c", "fo-d"]
OPTIONS = ("--watch-period", "0.3", "--ready-timeout", "10", "--lease-period", "0.5")
PROBE = "failover-probe"


class Coordinators:
    """The coordinator processes by name (``coordinator`` is the fleet's own)."""

    def __init__(self, fleet: Fleet):
        self.fleet = fleet
        assert fleet.coordinator is not None
        self.processes: dict[str, Process] = {"coordinator": fleet.coordinator}

    def start(self, name: str) -> None:
        pool = self.fleet.workdir / f"pool-{name}"
        shutil.copytree(self.fleet.pool_dir, pool, ignore=shutil.ignore_patterns("shards"))
        self.processes[name] = spawn.start_coordinator(
            self.fleet.url, pool, self.fleet.workdir, *OPTIONS, name=name
        )

    def log(self, name: str) -> str:
        return (self.fleet.workdir / f"{name}.log").read_text()

    def holder_of(self, name: str) -> str | None:
        """The connection id of the process (from its log, once it led)."""
        found = re.findall(r"lease: (\S+) leading, term", self.log(name))
        return found[-1] if found else None

    def leader(self, timeout_s: float = 20.0) -> tuple[str, Lease]:
        """The leading process and its latest lease, once one leads."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            lease = self.latest_lease()
            if lease is not None:
                for name, process in self.processes.items():
                    if process.poll() is None and self.holder_of(name) == lease.holder:
                        return name, lease
            time.sleep(0.05)
        raise TimeoutError(f"no leader within {timeout_s} s")

    def latest_lease(self) -> Lease | None:
        leases = [m for m in self.fleet.watch.of(Lease) if not m.released]
        return leases[-1] if leases else None

    def close(self) -> None:
        processes.stop([p for n, p in self.processes.items() if n != "coordinator"])


PATIENCE_S = 10.0
"""How long a plan request is asked again before it counts as unanswered: a busy
machine may take more than a second to answer one (a retry then is no failure)."""


class PlanProbe(Periodic):
    """Asks for a plan every 0.2 s on a thread, as a client does: a request unanswered
    after 1 s is asked again (one sent to a coordinator as it is killed is lost with
    its connection), for :data:`PATIENCE_S` in all. Records how long each plan took,
    retries included."""

    def __init__(self, fleet: Fleet):
        super().__init__(0.2)
        self.fleet = fleet
        self.waits_s: list[float] = []
        self.retries = 0
        self.unanswered = 0

    def tick(self) -> None:
        asked = time.monotonic()
        while time.monotonic() - asked < PATIENCE_S:
            request = PlanRequest(uuid.uuid4().hex, PROBE, MODEL)
            PLAN_REQUESTS.publish(self.fleet.observer, request).wait(5)
            try:
                self.fleet.watch.wait_answer(request.request_id, 1.0)
            except TimeoutError:
                self.retries += 1
                continue
            self.waits_s.append(time.monotonic() - asked)
            return
        self.unanswered += 1


@pytest.fixture(scope="module")
def fleet(digits_pool: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    fleet = start_fleet(
        tmp_path_factory.mktemp("coordinator-failover"),
        digits_pool,
        AGENTS,
        coordinator_options=OPTIONS,
    )
    fleet.watch.watch(LEASE).watch(PLANS, client=PROBE)
    try:
        yield fleet
    finally:
        fleet.close()


@pytest.fixture(scope="module")
def coordinators(fleet: Fleet) -> Iterator[Coordinators]:
    coordinators = Coordinators(fleet)
    try:
        coordinators.start("coordinator-2")
        coordinators.start("coordinator-3")
        coordinators.leader()
        fleet.deploy(stages=2, replicas=2)
        fleet.wait_healthy(replicas=2, timeout_s=30)
        yield coordinators
    finally:
        coordinators.close()


def epochs_given_once(fleet: Fleet) -> None:
    """Every epoch heard names one deployment content (a retained copy may repeat it)."""
    seen: dict[int, Deployment] = {}
    for deployment in fleet.watch.of(Deployment):
        first = seen.setdefault(deployment.epoch, deployment)
        assert first == deployment, f"epoch {deployment.epoch} was given twice"


def test_a_new_leader_heals_when_the_leader_and_an_agent_are_killed(
    fleet: Fleet, coordinators: Coordinators, reference: Reference
) -> None:
    name, lease = coordinators.leader()
    before = fleet.wait_healthy(replicas=2)
    victim = before.stages[0].replicas[0]
    client = fleet.client(deadline_s=10.0, plan_ttl_s=0.5)
    assert isinstance(client.infer(reference.images[0]), InferenceResult)

    def kill_both() -> None:
        processes.kill(coordinators.processes[name])
        fleet.kill_agent(victim)
        killed.append(time.monotonic())

    killed: list[float] = []
    killer = threading.Timer(0.5, kill_both)
    with PlanProbe(fleet) as probe:
        killer.start()
        outcomes = list(
            client.stream(paced(reference.images, 300, 50.0), ordered=False, max_in_flight=8)
        )
        killer.join()
        fleet.watch.wait(
            lambda: (
                (d := fleet.deployment()) is not None
                and all(victim not in s.replicas for s in d.stages)
                and fleet.healthy(replicas=2)
            ),
            30,
            f"the stages of {victim} healed",
        )
        healed_s = time.monotonic() - killed[0]
    print(f"\nhealed {healed_s:.1f} s after the SIGKILL of the leader and {victim}")
    failed = [str(o) for o in outcomes if isinstance(o, InferenceError)]
    assert not failed, failed[:3]
    slowest = max(probe.waits_s)
    print(f"plans: {len(probe.waits_s)}, slowest {slowest:.2f} s, {probe.retries} asked again")
    # Plans never stop: the followers answer throughout (the slowest printed above).
    assert probe.unanswered == 0, f"{probe.unanswered} plans unanswered for {PATIENCE_S:g} s"
    new_name, new_lease = coordinators.leader()
    assert new_name != name and new_lease.term > lease.term
    healed = fleet.deployment()
    assert healed is not None and term_of_epoch(healed.epoch) == new_lease.term
    assert healed_s < 15.0
    epochs_given_once(fleet)


def test_a_leader_cut_off_comes_back_a_follower(fleet: Fleet, coordinators: Coordinators) -> None:
    name, lease = coordinators.leader()
    fleet.wait_healthy(replicas=2)
    stopped = coordinators.processes[name]
    old_holder = lease.holder
    stopped.send_signal(signal.SIGSTOP)  # no renewal reaches the broker from now on
    try:
        fleet.watch.wait(
            lambda: (
                (latest := coordinators.latest_lease()) is not None and latest.holder != old_holder
            ),
            15,
            "another coordinator's lease",
        )
    finally:
        stopped.send_signal(signal.SIGCONT)
    resumed = time.monotonic()
    new_name, new_lease = coordinators.leader()
    assert new_name != name and new_lease.term > lease.term
    fleet.watch.wait(
        lambda: (
            "no renewal acknowledged in time" in coordinators.log(name)
            or "wins over our term" in coordinators.log(name)
        ),
        10,
        f"{name} stepping down",
    )
    # A deployment now: carried out once, in the new term, whoever got the request.
    request = DeployRequest(uuid.uuid4().hex, OPERATOR, MODEL, stages=2, replicas=2)
    DEPLOY_REQUESTS.publish(fleet.observer, request).wait(10)
    reply = fleet.watch.wait_answer(request.request_id, 60)
    assert isinstance(reply, DeployReply) and reply.ok, reply
    assert term_of_epoch(reply.epoch) == new_lease.term
    replies = [r for r in fleet.watch.of(DeployReply) if r.request_id == request.request_id]
    assert len(replies) == 1
    # After it woke, the old leader renewed nothing (one renewal in flight at most).
    late = [
        r.message
        for r in fleet.watch.received
        if isinstance(r.message, Lease)
        and r.message.holder == old_holder
        and r.arrived_s > resumed + 1.0
    ]
    assert late == []
    assert coordinators.leader()[0] == new_name
    assert fleet.deployment(DEPLOYMENT) is not None
    epochs_given_once(fleet)
