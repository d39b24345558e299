"""A site broker bridged to a central one (``broker-config/bridge.conf``), on loopback.

Three Mosquitto processes: the central one (the coordinator, the client, agent ``c1``),
the site ``kitchen`` (agents ``k1`` and ``k2``, started with ``--site kitchen``) and the
site ``garage`` (agent ``g1``), whose bridges carry what the bridge file says.
Deployments of the digits model: float32 on ``k1 -> k2`` (within the site), int8 on
``k1 -> c1`` (across), and ``k1 -> g1`` (from one site broker to another, through the
central one). A spy on the central broker sees which hops cross. Then the site broker
restarts while requests stream: they complete once its agents and its bridge are back.
"""

from __future__ import annotations

import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from splitmq import processes
from splitmq.client import Client, ClientConfig, InferenceError, InferenceResult
from splitmq.mosquitto import Mosquitto, config_dir
from splitmq.processes import Process
from splitmq.transport import InboundMessage, MqttTransport, parse_broker_url
from splitmq.watch import Watcher
from splitmq.wire import Deployment, DeployReply, DeployRequest, Lease
from splitmq.wire.topics import (
    DEFAULT_NAMESPACE,
    DEPLOY_REPLIES,
    DEPLOY_REQUESTS,
    DEPLOYMENTS,
    LEASE,
    STATUS,
)
from tests import processes as spawn

from .fleet import Reference, paced

pytestmark = pytest.mark.integration

SITE = "kitchen"
OTHER_SITE = "garage"
OPERATOR = "bridge-ops"
NS = DEFAULT_NAMESPACE


def site_config(workdir: Path, central: Mosquitto, site: str = SITE) -> Path:
    """dev.conf with the bridge to ``central`` appended, for the broker of ``site``."""
    bridge = (config_dir() / "bridge.conf").read_text()
    bridge = bridge.replace("@SITE@", site).replace("@CENTRAL@", f"127.0.0.1:{central.port}")
    bridge = bridge.replace("@NS@", NS)
    path = workdir / f"{site}.conf"
    path.write_text((config_dir() / "dev.conf").read_text() + "\n" + bridge)
    return path


@dataclass
class Sites:
    central: Mosquitto
    site: Mosquitto
    other_site: Mosquitto
    workdir: Path
    observer: MqttTransport
    watch: Watcher
    crossing: list[str] = field(default_factory=list)  # activation topics seen centrally
    agents: dict[str, Process] = field(default_factory=dict)
    coordinator: Process | None = None

    def start_agent(self, agent_id: str, *, site: str = "") -> None:
        broker = {SITE: self.site, OTHER_SITE: self.other_site}.get(site, self.central)
        extra = ("--profile", "host", *(("--site", site) if site else ()))
        self.agents[agent_id] = spawn.start_agent(broker.url(), agent_id, self.workdir, *extra)

    def on_crossing(self, message: InboundMessage) -> None:
        self.crossing.append(message.topic)

    def deploy(self, variant: str, first: str, last: str) -> Deployment:
        request = DeployRequest(
            uuid.uuid4().hex,
            OPERATOR,
            "digits",
            variant=variant,
            stages=2,
            pin_first=first,
            pin_last=last,
            ready_timeout_s=40,
        )
        DEPLOY_REQUESTS.publish(self.observer, request).wait(10)
        reply = self.watch.wait_answer(request.request_id, 60)
        assert isinstance(reply, DeployReply) and reply.ok, reply
        self.watch.wait(
            lambda: (
                (d := self.watch.deployments.get(reply.deployment)) is not None
                and d.epoch >= reply.epoch
            ),
            10,
            "the deployment",
        )
        return self.watch.deployments[reply.deployment]

    def close(self) -> None:
        processes.stop([*self.agents.values(), *([self.coordinator] if self.coordinator else [])])
        self.observer.close()
        self.other_site.stop()
        self.site.stop()
        self.central.stop()


@pytest.fixture(scope="module")
def sites(digits_pool: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sites]:
    workdir = tmp_path_factory.mktemp("site-brokers")
    central = Mosquitto(config_dir() / "dev.conf", workdir / "central").start()
    site = Mosquitto(site_config(workdir, central), workdir / "site", files_dir=config_dir())
    site.start()
    other_site = Mosquitto(
        site_config(workdir, central, OTHER_SITE), workdir / OTHER_SITE, files_dir=config_dir()
    )
    other_site.start()
    pool = workdir / "pool"
    shutil.copytree(digits_pool.path.parents[1], pool)
    observer = MqttTransport(parse_broker_url(central.url(), reconnect_max_s=0.5))
    observer.start()
    watch = Watcher(observer).watch(STATUS).watch(DEPLOYMENTS).watch(LEASE)
    watch.watch(DEPLOY_REPLIES, client=OPERATOR)
    fleet = Sites(central, site, other_site, workdir, observer, watch)
    for pattern in ("stage/#", "sites/#", "central/#"):
        observer.subscribe(f"{NS}/{pattern}", fleet.on_crossing)
    try:
        fleet.coordinator = spawn.start_coordinator(
            central.url(), pool, workdir, "--watch-period", "0.3", "--lease-period", "0.5"
        )
        fleet.start_agent("k1", site=SITE)
        fleet.start_agent("k2", site=SITE)
        fleet.start_agent("g1", site=OTHER_SITE)
        fleet.start_agent("c1")
        watch.wait(
            lambda: all(watch.online(a) for a in ("k1", "k2", "g1", "c1")),
            60,
            "the agents online",
        )
        # A leader (it subscribed before it claimed): requests from now on reach it.
        watch.wait(lambda: any(not lease.released for lease in watch.of(Lease)), 30, "a leader")
        yield fleet
    finally:
        fleet.close()


def crossed(sites: Sites, agent: str) -> list[str]:
    return [t for t in sites.crossing if t.endswith(f"/{agent}")]


def client(sites: Sites) -> Client:
    config = ClientConfig(model="digits", deadline_s=15.0, plan_timeout_s=2.0, plan_ttl_s=1.0)
    return Client(sites.central.url(), f"bridge-{uuid.uuid4().hex[:6]}", config=config)


def retire(sites: Sites, variant: str) -> None:
    request = DeployRequest(uuid.uuid4().hex, OPERATOR, "digits", variant=variant, retire=True)
    DEPLOY_REQUESTS.publish(sites.observer, request).wait(10)
    reply = sites.watch.wait_answer(request.request_id, 30)
    assert isinstance(reply, DeployReply) and reply.ok, reply


def test_hops_within_a_site_stay_there_and_hops_across_cross(
    sites: Sites, reference: Reference
) -> None:
    local = sites.deploy("float32", "k1", "k2")
    assert local.sites == {"k1": SITE, "k2": SITE}
    assert sites.watch.status["k1"].site == SITE, "the site's statuses reach the central broker"
    with client(sites) as within:
        for index in range(3):
            outcome = within.infer(reference.images[index])
            assert isinstance(outcome, InferenceResult)
            assert reference.check(index, outcome.outputs)
    # The client (central) reached k1 through the bridge; k1 -> k2 stayed at the site.
    assert crossed(sites, "k1")
    assert all(f"/sites/{SITE}/stage/" in t for t in crossed(sites, "k1"))
    assert crossed(sites, "k2") == [], "a hop within the site crossed the bridge"

    retire(sites, "float32")
    across = sites.deploy("int8", "k1", "c1")
    assert across.sites == {"k1": SITE}
    with client(sites) as spanning:
        for index in range(3):
            outcome = spanning.infer(reference.images[index])
            assert isinstance(outcome, InferenceResult)
            assert outcome.plan.deployment == "digits-int8"
            assert [t.agent_id for t in outcome.trace] == ["k1", "c1"]
    # k1 -> c1 came out of the site onto the central broker's own stage topic.
    assert crossed(sites, "c1")
    assert all(t.startswith(f"{NS}/stage/") for t in crossed(sites, "c1"))


def test_requests_complete_after_the_site_broker_restarts(
    sites: Sites, reference: Reference
) -> None:
    if "digits-int8" not in sites.watch.deployments:
        sites.deploy("int8", "k1", "c1")
    with client(sites) as streaming:
        assert isinstance(streaming.infer(reference.images[0]), InferenceResult)

        restarted_at: list[float] = []

        def restart_site() -> None:
            sites.site.kill()  # its agents and its bridge lose the broker
            sites.site.start()
            restarted_at.append(time.monotonic())

        restarter = threading.Timer(0.5, restart_site)
        restarter.start()
        started = time.monotonic()
        outcomes = [streaming.infer_async(image) for image in paced(reference.images, 60, 20.0)]
        last_sent = time.monotonic()
        restarter.join()
        results = [f.exception(timeout=30) or f.result() for f in outcomes]
    assert restarted_at and restarted_at[0] < last_sent, "the restart fell within the stream"
    failed = [str(r) for r in results if isinstance(r, InferenceError)]
    assert not failed, failed[:3]
    assert all(
        isinstance(r, InferenceResult) and [t.agent_id for t in r.trace] == ["k1", "c1"]
        for r in results
    )
    print(f"\n60 requests across a site broker restart in {time.monotonic() - started:.1f} s")


def test_a_request_crosses_from_one_site_broker_to_another(
    sites: Sites, reference: Reference
) -> None:
    """k1 (kitchen) -> g1 (garage): the hop leaves the kitchen's broker on
    sites/garage/stage/..., crosses the central broker and enters the garage's broker,
    whose bridge puts it on g1's own stage topic; the answer comes back to the central
    client."""
    for deployment in list(sites.watch.deployments.values()):
        if deployment.state == "active":
            retire(sites, deployment.variant)
    spanning = sites.deploy("float32", "k1", "g1")
    assert spanning.sites == {"k1": SITE, "g1": OTHER_SITE}
    sites.crossing.clear()
    with client(sites) as across:
        for index in range(3):
            outcome = across.infer(reference.images[index])
            assert isinstance(outcome, InferenceResult)
            assert reference.check(index, outcome.outputs)
            assert [t.agent_id for t in outcome.trace] == ["k1", "g1"]
    assert crossed(sites, "g1"), "the hop to the other site never reached the central broker"
    assert all(t.startswith(f"{NS}/sites/{OTHER_SITE}/stage/") for t in crossed(sites, "g1"))
    retire(sites, "float32")
