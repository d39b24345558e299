"""The secure profile with a page: Mosquitto on broker-config/secure.conf (TLS, passwords,
per-role ACLs), ``splitmq web`` over HTTPS and ``wss://`` with the development CA's
certificate, the page connecting with its own agent credentials; a coordinator and a
Python agent as processes with theirs; a client over TLS."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from splitmq.client import Client, ClientConfig
from splitmq.secure_setup import SecureSetup, make_secure_setup
from splitmq.transport import MqttTransport, parse_broker_url
from splitmq.watch import Watcher
from splitmq.web.config import WebConfig
from splitmq.web.phone import WASM_TOLERANCE
from splitmq.web.server import WebServer
from splitmq.wire import Deployment, DeployReply, DeployRequest, encode
from tests import processes as spawn
from tests.reliability.fleet import Reference, watch

from .pages import AgentPage, open_agent_page

pytestmark = [pytest.mark.integration, pytest.mark.slow]

USERS = [
    ("coordinator", "coordinator"),
    ("operator", "reliability-ops"),
    ("agent", "py-s1"),
    ("agent", "page-s1"),
    ("client", "alice"),
]


@dataclass
class SecureWebFleet:
    setup: SecureSetup
    server: WebServer
    page: AgentPage
    operator: MqttTransport
    watch: Watcher


@pytest.fixture(scope="module")
def secure_web_fleet(
    digits_pool: Any, tmp_path_factory: pytest.TempPathFactory, chromium: Any
) -> Iterator[SecureWebFleet]:
    workdir = tmp_path_factory.mktemp("secure-web")
    setup = make_secure_setup(workdir / "secure", USERS)
    pool_dir = workdir / "pool"
    target = pool_dir / digits_pool.name / digits_pool.version
    shutil.copytree(digits_pool.path, target)
    (target.parent / "latest").write_text(digits_pool.version + "\n")
    processes: list[subprocess.Popen[bytes]] = []
    cleanup: list[Any] = []
    with setup.mosquitto(workdir / "broker"):
        try:
            coordinator = setup.access("coordinator")
            processes.append(
                spawn.start_coordinator(
                    coordinator.url, pool_dir, workdir, *coordinator.cli_args()[2:]
                )
            )
            agent = setup.access("py-s1")
            processes.append(spawn.start_agent(agent.url, "py-s1", workdir, *agent.cli_args()[2:]))
            operator = MqttTransport(setup.access("reliability-ops").transport_config())
            operator.start()
            cleanup.append(operator.close)
            watcher = watch(operator)
            certs = setup.directory / "certs"
            config = WebConfig(
                # The relay needs the broker's TLS listener only: every page brings its
                # own user name and password in its CONNECT.
                broker=parse_broker_url(f"mqtts://127.0.0.1:{setup.port}", ca_certs=setup.ca_certs),
                host="127.0.0.1",
                port=0,
                pool_dir=pool_dir,
                certfile=certs / "broker.crt",
                keyfile=certs / "broker.key",
                fleet_view=False,
                telemetry_period_s=0.3,
            )
            server = WebServer(config).start()
            cleanup.append(server.stop)
            assert server.local_url.startswith("https://localhost:")
            page = open_agent_page(
                chromium,
                server.local_url,
                "page-s1",
                user="page-s1",
                password=setup.access("page-s1").password,
            )
            cleanup.append(page.close)
            watcher.wait(
                lambda: watcher.online("py-s1") and watcher.online("page-s1"), 60, "agents online"
            )
            yield SecureWebFleet(setup, server, page, operator, watcher)
        finally:
            for step in reversed(cleanup):
                step()
            spawn.stop(processes)


def test_the_page_is_a_secure_context_over_https(secure_web_fleet: SecureWebFleet) -> None:
    page = secure_web_fleet.page.page
    assert page.evaluate("self.isSecureContext") is True
    assert page.evaluate("self.crossOriginIsolated") is True
    assert page.evaluate("typeof crypto.subtle.digest") == "function"
    config = page.evaluate("fetch('/config.json').then(r => r.json())")
    assert config["broker_url"].startswith("wss://localhost:")


def test_a_page_with_its_agent_credentials_serves_over_wss(
    secure_web_fleet: SecureWebFleet, digits_pool: Any
) -> None:
    from splitmq.converter.digits import load_split
    from splitmq.wire.topics import DEPLOY_REQUESTS

    fleet = secure_web_fleet
    request = DeployRequest(
        request_id=uuid.uuid4().hex,
        client_id="reliability-ops",
        model="digits",
        stages=2,
        replicas=1,
        pin_first="page-s1",
        ready_timeout_s=60,
    )
    # The coordinator may still be subscribing: ask until it answers.
    deadline = time.monotonic() + 60
    while request.request_id not in fleet.watch.answers and time.monotonic() < deadline:
        fleet.operator.publish(DEPLOY_REQUESTS.name(), encode(request)).wait(10)
        with contextlib.suppress(TimeoutError):
            fleet.watch.wait(lambda: request.request_id in fleet.watch.answers, 3, "a reply")
    fleet.watch.wait(lambda: request.request_id in fleet.watch.answers, 60, "the deploy reply")
    reply = fleet.watch.answers[request.request_id]
    assert isinstance(reply, DeployReply)
    assert reply.ok, reply.message
    fleet.watch.wait(lambda: reply.deployment in fleet.watch.deployments, 10, "the deployment")
    deployment: Deployment = fleet.watch.deployments[reply.deployment]
    assert deployment.stages[0].replicas == ("page-s1",)

    reference = Reference(digits_pool, load_split()[2][:20])
    alice = fleet.setup.access("alice")
    config = ClientConfig(model="digits", deadline_s=20.0)
    with Client(alice.transport_config(), "alice", config=config) as client:
        for index, image in enumerate(reference.images):
            result = client.infer(image)
            (output,) = result.outputs.values()
            expected = reference.outputs[index]
            assert np.array_equal(output.argmax(-1), expected.argmax(-1))
            assert float(np.max(np.abs(output - expected))) <= WASM_TOLERANCE
            assert result.trace[0].agent_id == "page-s1"
    assert fleet.page.state()["errors"] == 0
