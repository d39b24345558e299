"""Browser agents in a real fleet: two Python agents and two agent pages in Debian's
Chromium, through a real Mosquitto (the pages over ``splitmq web``'s relay), with a
coordinator process; the digits model deployed with a stage on a page.

The pages run LiteRT.js's wasm build, the Python agents ai-edge-litert: the answers are
compared with the unsplit model run by ai-edge-litert, exactly, or within the bound
measured for the wasm build (``WASM_TOLERANCE``, docs/web.md) when they differ.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from splitmq.client import Client
from splitmq.transport import parse_broker_url
from splitmq.web.config import WebConfig
from splitmq.web.phone import WASM_TOLERANCE
from splitmq.web.server import WebServer
from splitmq.wire import AgentState, Deployment, DeployReply, DeployRequest, encode
from splitmq.wire.topics import DEPLOY_REQUESTS
from tests.reliability.fleet import MODEL, Fleet, Reference, start_fleet

from .pages import AgentPage, open_agent_page

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PYTHON_AGENTS = ["py-1", "py-2"]
PAGES = ["page-1", "page-2"]
REQUESTS = 100


@pytest.fixture(scope="module")
def reference(digits_pool: Any) -> Reference:
    from splitmq.converter.digits import load_split

    return Reference(digits_pool, load_split()[2][:64])


@pytest.fixture(scope="module")
def web_fleet(
    digits_pool: Any, tmp_path_factory: pytest.TempPathFactory, chromium: Any
) -> Iterator[tuple[Fleet, WebServer, dict[str, AgentPage]]]:
    workdir = tmp_path_factory.mktemp("browser-fleet")
    # The Python agents as Raspberry Pis on Wi-Fi (slower, 4 ms links): the planner
    # prefers the pages, so a page is the one a request goes to first.
    profiles = {agent_id: ("--profile", "rpi4") for agent_id in PYTHON_AGENTS}
    fleet = start_fleet(workdir, digits_pool, PYTHON_AGENTS, agent_options=profiles)
    pages: dict[str, AgentPage] = {}
    server = None
    try:
        config = WebConfig(
            broker=parse_broker_url(fleet.url),
            host="127.0.0.1",
            port=0,
            pool_dir=fleet.pool_dir,
            telemetry_period_s=0.3,
            fleet_view=False,
        )
        server = WebServer(config).start()
        for agent_id in PAGES:
            pages[agent_id] = open_agent_page(chromium, server.local_url, agent_id)
        fleet.wait_online([*PYTHON_AGENTS, *PAGES])
        yield fleet, server, pages
    finally:
        for page in pages.values():
            page.close()
        if server is not None:
            server.stop()
        fleet.close()


def deploy(fleet: Fleet, **options: Any) -> Deployment:
    """A deploy request as ``splitmq deploy`` sends it; the deployment once published."""
    request = DeployRequest(
        request_id=uuid.uuid4().hex,
        client_id="reliability-ops",
        model=MODEL,
        ready_timeout_s=60,
        **options,
    )
    fleet.observer.publish(DEPLOY_REQUESTS.name(), encode(request)).wait(10)
    fleet.watch.wait(lambda: request.request_id in fleet.watch.answers, 90, "the deploy reply")
    reply = fleet.watch.answers[request.request_id]
    assert isinstance(reply, DeployReply)
    assert reply.ok, reply.message
    fleet.watch.wait(
        lambda: (d := fleet.deployment(reply.deployment)) is not None and d.epoch >= reply.epoch,
        10,
        "the deployment",
    )
    deployment = fleet.deployment(reply.deployment)
    assert deployment is not None
    return deployment


def compare(reference: Reference, index: int, outputs: dict[str, np.ndarray]) -> float:
    """The largest absolute difference from the unsplit model's answer (0.0: equal)."""
    (output,) = outputs.values()
    expected = reference.outputs[index % len(reference.outputs)]
    assert output.shape == expected.shape and output.dtype == expected.dtype
    assert np.array_equal(output.argmax(axis=-1), expected.argmax(axis=-1))
    return float(np.max(np.abs(output.astype(np.float64) - expected.astype(np.float64))))


def client(fleet: Fleet) -> Client:
    return fleet.client(deadline_s=20.0, min_attempt_timeout_s=1.0, attempt_timeout_margin_s=1.0)


def test_a_page_hosts_a_stage_and_100_answers_equal_the_unsplit_model(
    web_fleet: tuple[Fleet, WebServer, dict[str, AgentPage]], reference: Reference
) -> None:
    fleet, _, pages = web_fleet
    deployment = deploy(fleet, stages=2, replicas=1, pin_first="page-1")
    assert deployment.stages[0].replicas == ("page-1",)
    digits = client(fleet)
    differences, through_page = [], 0
    results = digits.stream(
        (reference.images[i % len(reference.images)] for i in range(REQUESTS)), max_in_flight=4
    )
    for index, result in enumerate(results):
        assert not isinstance(result, Exception), f"request {index}: {result}"
        differences.append(compare(reference, index, result.outputs))
        through_page += any(e.agent_id in PAGES for e in result.trace)
    assert len(differences) == REQUESTS
    exact = sum(d == 0.0 for d in differences)
    print(f"\n{exact}/{REQUESTS} bit-exact, largest difference {max(differences):.3g}")
    assert max(differences) <= WASM_TOLERANCE
    assert through_page == REQUESTS, f"only {through_page} requests ran on a page"
    assert pages["page-1"].state()["errors"] == 0


def test_a_page_closed_mid_stream_fires_its_will_and_the_fleet_heals(
    web_fleet: tuple[Fleet, WebServer, dict[str, AgentPage]], reference: Reference
) -> None:
    """Stage 0 on a page and a fallback; the page a third of the requests went through
    is killed (its renderer crashes: no goodbye): every request still completes, the
    broker publishes the page's will, the coordinator re-deploys without it."""
    fleet, _, pages = web_fleet
    deployment = deploy(fleet, stages=2, replicas=2, pin_first="page-2")
    assert "page-2" in deployment.stages[0].replicas
    digits = client(fleet)
    differences: list[float] = []
    by_agent: dict[str, int] = {}
    victim: AgentPage | None = None
    stream = digits.stream(
        (reference.images[i % len(reference.images)] for i in range(REQUESTS)), max_in_flight=4
    )
    for index, result in enumerate(stream):
        assert not isinstance(result, Exception), f"request {index}: {result}"
        differences.append(compare(reference, index, result.outputs))
        for entry in result.trace:
            by_agent[entry.agent_id] = by_agent.get(entry.agent_id, 0) + 1
        if index == REQUESTS // 3:
            busiest = max(PAGES, key=lambda a: by_agent.get(a, 0))
            assert by_agent.get(busiest, 0) > 0, f"no request went through a page: {by_agent}"
            victim = pages[busiest]
            victim.crash()
    assert victim is not None
    assert len(differences) == REQUESTS
    assert max(differences) <= WASM_TOLERANCE
    gone = victim.agent_id
    # The will: the broker says the page is offline (the page could not say it itself).
    fleet.watch.wait(
        lambda: (s := fleet.watch.status.get(gone)) is not None and s.state is AgentState.OFFLINE,
        15,
        f"{gone}'s will",
    )
    # The coordinator re-deploys without the page, two replicas a stage again.
    fleet.watch.wait(
        lambda: (
            (d := fleet.deployment(deployment.deployment)) is not None
            and d.epoch > deployment.epoch
            and all(gone not in s.replicas and len(s.replicas) == 2 for s in d.stages)
        ),
        60,
        f"a re-deployment without {gone}",
    )
    del pages[gone]
    victim.close()
