"""The web server as a real Chromium sees it: cross-origin isolation, wasm streaming,
the relay through the browser's own WebSocket, and the live fleet page."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("aiohttp", reason="needs aiohttp: pip install -e '.[web]'")

from splitmq.mosquitto import Mosquitto
from splitmq.transport import MqttTransport, parse_broker_url
from splitmq.web.config import WebConfig
from splitmq.web.server import WebServer
from splitmq.wire import (
    AgentState,
    AgentStatus,
    Battery,
    Deployment,
    ErrorCode,
    ErrorMessage,
    Result,
    StageSpec,
    Telemetry,
    TraceEntry,
    encode,
)
from splitmq.wire.topics import DEPLOYMENTS, RESULTS, STATUS, TELEMETRY

pytestmark = pytest.mark.integration

WASM_MODULE = b"\x00asm\x01\x00\x00\x00"  # the smallest valid module (magic, version 1)
TIMEOUT_MS = 15_000


@pytest.fixture(scope="module")
def namespace() -> str:
    return f"browser-server-{os.getpid()}"


@pytest.fixture(scope="module")
def server(
    mosquitto: Mosquitto, tmp_path_factory: pytest.TempPathFactory, namespace: str
) -> Iterator[WebServer]:
    static = tmp_path_factory.mktemp("static")
    (static / "wasm").mkdir()
    (static / "wasm" / "empty.wasm").write_bytes(WASM_MODULE)
    (static / "agent.html").write_text("<!doctype html><title>agent</title><p>agent</p>")
    config = WebConfig(
        broker=parse_broker_url(mosquitto.url()),
        host="127.0.0.1",
        port=0,
        namespace=namespace,
        static_dir=static,
    )
    web = WebServer(config).start()
    yield web
    web.stop()


@pytest.fixture
def page(chromium: Any) -> Iterator[Any]:
    context = chromium.new_context()
    yield context.new_page()
    context.close()


def test_pages_are_cross_origin_isolated_and_wasm_streams(server: WebServer, page: Any) -> None:
    """COOP/COEP make the page cross-origin isolated (SharedArrayBuffer, wasm threads);
    compileStreaming accepts only application/wasm."""
    page.goto(server.local_url + "agent.html")
    assert page.evaluate("self.crossOriginIsolated") is True
    assert page.evaluate("typeof SharedArrayBuffer") == "function"
    compiled = page.evaluate(
        "WebAssembly.compileStreaming(fetch('/wasm/empty.wasm')).then(m => m instanceof "
        "WebAssembly.Module)"
    )
    assert compiled is True


def test_chromium_speaks_mqtt_through_the_relay(server: WebServer, page: Any) -> None:
    """The browser's own WebSocket (RFC 6455, subprotocol "mqtt", binary frames) carries
    a hand-written MQTT CONNECT to Mosquitto and the CONNACK back."""
    page.goto(server.local_url + "agent.html")
    result = page.evaluate(
        """async () => {
          const config = await (await fetch('/config.json')).json();
          const ws = new WebSocket(config.broker_url, 'mqtt');
          ws.binaryType = 'arraybuffer';
          const id = new TextEncoder().encode('chromium-1');
          const variable = [0, 4, 77, 81, 84, 84, 4, 2, 0, 60, 0, id.length];
          const packet = new Uint8Array([16, variable.length + id.length, ...variable, ...id]);
          return await new Promise((resolve, reject) => {
            ws.onopen = () => ws.send(packet);
            ws.onmessage = (event) => {
              resolve({protocol: ws.protocol, reply: Array.from(new Uint8Array(event.data))});
              ws.close(1000);
            };
            ws.onerror = () => reject(new Error('websocket error'));
          });
        }"""
    )
    assert result == {"protocol": "mqtt", "reply": [0x20, 2, 0, 0]}


def test_fleet_page_shows_agents_and_deployments_live(
    server: WebServer, page: Any, mosquitto: Mosquitto, namespace: str
) -> None:
    page.goto(server.local_url)
    page.wait_for_selector("#no-agents:not([hidden])", timeout=TIMEOUT_MS)
    assert page.evaluate("document.querySelector('#join img').naturalWidth") > 0
    config = parse_broker_url(mosquitto.url(), client_id="browser-fleet-agent")
    with MqttTransport(config) as agent:
        status = AgentStatus(agent_id="phone-9", state=AgentState.ONLINE, runtime="litert.js")
        agent.publish(STATUS.name(namespace, agent="phone-9"), encode(status), retain=True)
        telemetry = Telemetry(
            agent_id="phone-9",
            ts_ms=int(time.time() * 1000),
            period_s=60.0,
            cpu_pct=5.0,
            mem_free_bytes=10**9,
            battery=Battery(pct=64.0, plugged=True),
        )
        agent.publish(TELEMETRY.name(namespace, agent="phone-9"), encode(telemetry), retain=True)
        deployment = Deployment(
            deployment="digits-float32",
            model="digits",
            version="v1",
            variant="float32",
            epoch=3,
            stages=(
                StageSpec(0, 0, 4, "0" * 64, 100, (), (), ("pi-1",)),
                StageSpec(1, 4, 8, "1" * 64, 100, (), (), ("phone-9",)),
            ),
        )
        topic = DEPLOYMENTS.name(namespace, deployment="digits-float32")
        agent.publish(topic, encode(deployment), retain=True).wait(10)
        try:
            row = page.wait_for_selector('tr[data-agent="phone-9"]', timeout=TIMEOUT_MS)
            text = row.inner_text()
            assert "online" in text and "litert.js" in text and "64% plugged" in text
            row = page.wait_for_selector('tr[data-deployment="digits-float32"]', timeout=TIMEOUT_MS)
            assert "1 [4, 8): phone-9" in row.inner_text()
            assert "\t3\t" in row.inner_text()  # the epoch

            # a request's result on a callback topic: its route and latency (the trace)
            trace = (
                TraceEntry(0, "pi-1", 1000.0, 1000.5, 1003.0),
                TraceEntry(1, "phone-9", 1004.0, 1005.0, 1012.5),
            )
            result = Result(b"r" * 16, 1, "digits-float32", (), trace, "phone-9")
            results = RESULTS.name(namespace, client="alice")
            agent.publish(results, encode(result)).wait(10)
            row = page.wait_for_selector("#requests tbody tr", timeout=TIMEOUT_MS)
            assert "pi-1 \u2192 phone-9" in row.inner_text()
            assert "12.5" in row.inner_text()  # from the first arrival to the last finish
            assert "median 12.5 ms" in page.inner_text("#medians")
            failure = ErrorMessage(b"e" * 16, 0, 1, "phone-9", ErrorCode.OVERLOADED, "queue full")
            agent.publish(results, encode(failure)).wait(10)
            page.wait_for_selector("#requests tbody tr.bad", timeout=TIMEOUT_MS)
            assert "overloaded at stage 1 on phone-9" in page.inner_text("#requests")

            offline = AgentStatus(agent_id="phone-9", state=AgentState.OFFLINE)
            agent.publish(STATUS.name(namespace, agent="phone-9"), encode(offline), retain=True)
            page.wait_for_selector('tr.offline[data-agent="phone-9"]', timeout=TIMEOUT_MS)
            assert page.inner_text("#link").startswith(f"broker {mosquitto.url()} connected")
        finally:
            for name in (
                STATUS.name(namespace, agent="phone-9"),
                TELEMETRY.name(namespace, agent="phone-9"),
                topic,
            ):
                agent.publish(name, b"", retain=True).wait(10)


def test_missing_agent_page_says_how_to_build_it(tmp_path: Path, mosquitto: Mosquitto) -> None:
    """A checkout whose page is not built answers with a clear 404, not a blank page."""
    config = WebConfig(
        broker=parse_broker_url(mosquitto.url()),
        host="127.0.0.1",
        port=0,
        fleet_view=False,
        static_dir=tmp_path,
    )
    import urllib.error
    import urllib.request

    web = WebServer(config).start()
    try:
        with pytest.raises(urllib.error.HTTPError) as answer:
            urllib.request.urlopen(web.local_url + "agent.html", timeout=10)
        assert answer.value.code == 404
        assert b"make web" in answer.value.read()
    finally:
        web.stop()
