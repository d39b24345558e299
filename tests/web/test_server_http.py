"""The web server's HTTP side: files, types, isolation headers, config.json, shards, QR."""

from __future__ import annotations

import gzip
import hashlib
import http.client
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("aiohttp", reason="needs aiohttp: pip install -e '.[web]'")

import splitmq
from splitmq.coordinator.model_pool import INDEX_FILE, SHARDS_DIR
from splitmq.errors import ConfigError
from splitmq.mosquitto import Mosquitto
from splitmq.transport import TransportConfig, parse_broker_url
from splitmq.web import qr
from splitmq.web.config import WebConfig, page_config
from splitmq.web.server import WebServer
from splitmq.web.shards import RESCAN_INTERVAL_S

ISOLATION = {
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-embedder-policy": "require-corp",
}


def write_shard(pool: Path, name: str, data: bytes) -> str:
    """A shard file and its index, laid out as ModelPool writes them."""
    directory = pool / "digits" / "v1" / SHARDS_DIR / "float32" / f"cuts-{name}"
    directory.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(data).hexdigest()
    (directory / f"{name}.tflite").write_bytes(data)
    index = {"shards": [{"stage": 0, "digest": digest, "file": f"{name}.tflite"}]}
    (directory / INDEX_FILE).write_text(json.dumps(index))
    return digest


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("site")
    (root / "static" / "wasm").mkdir(parents=True)
    (root / "static" / "agent.html").write_text("<!doctype html><title>agent</title>")
    (root / "static" / "agent.js").write_text("export const agent = 1;")
    (root / "static" / "wasm" / "litert.wasm").write_bytes(b"\x00asm\x01\x00\x00\x00")
    (root / "static" / "wasm" / "big.wasm").write_bytes(b"\x00asm\x01\x00\x00\x00" * 4096)
    (root / "static" / ".hidden").write_text("no")
    (root / "secret.txt").write_text("outside the static directory")
    (root / "pool").mkdir()
    return root


@pytest.fixture(scope="module")
def server(site: Path) -> Iterator[WebServer]:
    config = WebConfig(
        broker=parse_broker_url("mqtt://127.0.0.1:1"),
        host="127.0.0.1",
        port=0,
        fleet_view=False,
        static_dir=site / "static",
        pool_dir=site / "pool",
        agent_username="phone-1",
        agent_password="pw",
        telemetry_period_s=0.5,
        profile="phone",
    )
    web = WebServer(config).start()
    yield web
    web.stop()


def get_new_shard(server: WebServer, digest: str):
    """GET a shard written after the server read the indexes: found at the first request
    (a miss within a second of the last scan waits for the next one)."""
    return get(server, f"/shards/{digest}")


def get(server: WebServer, path: str, headers: dict[str, str] | None = None):
    """(status, headers with lower-case names, body) of a GET sent with the raw ``path``."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    connection.request("GET", path, headers=headers or {})
    response = connection.getresponse()
    body = response.read()
    connection.close()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, body


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/agent.html", "text/html"),
        ("/agent.js", "text/javascript"),
        ("/wasm/litert.wasm", "application/wasm"),
        ("/", "text/html"),
        ("/fleet/fleet.js", "text/javascript"),
        ("/config.json", "application/json"),
        ("/join.svg", "image/svg+xml"),
    ],
)
def test_files_have_their_type_and_the_isolation_headers(server, path, content_type) -> None:
    status, headers, body = get(server, path)
    assert status == 200, body
    assert headers["content-type"].startswith(content_type)
    for name, value in ISOLATION.items():
        assert headers[name] == value


def test_errors_carry_the_isolation_headers_too(server) -> None:
    status, headers, body = get(server, "/nothing-here.js")
    assert status == 404
    assert b"no agent page file" in body
    assert headers["cross-origin-embedder-policy"] == "require-corp"


@pytest.mark.parametrize(
    "path",
    [
        "/../secret.txt",
        "/%2e%2e/secret.txt",
        "/..%2fsecret.txt",
        "/wasm/..%2f..%2fsecret.txt",
        "/%2fetc%2fpasswd",
        "/.hidden",
        "/wasm",
        "/agent.html%00.js",
        "/wasm%5c..%5c..%5csecret.txt",
    ],
)
def test_no_path_leaves_the_static_directory(server, path) -> None:
    status, _, body = get(server, path)
    assert status == 404, (path, body)
    assert b"outside the static" not in body


def test_large_files_go_gzipped_to_browsers_that_accept_it(server, site) -> None:
    original = (site / "static" / "wasm" / "big.wasm").read_bytes()
    status, headers, body = get(server, "/wasm/big.wasm", {"Accept-Encoding": "gzip, br"})
    assert status == 200
    assert headers["content-encoding"] == "gzip"
    assert headers["content-type"] == "application/wasm"
    assert headers["vary"] == "Accept-Encoding"
    assert gzip.decompress(body) == original and len(body) < len(original) / 10
    assert headers["cross-origin-embedder-policy"] == "require-corp"
    etag = headers["etag"]
    status, _, body = get(
        server, "/wasm/big.wasm", {"Accept-Encoding": "gzip", "If-None-Match": etag}
    )
    assert (status, body) == (304, b"")
    status, headers, body = get(server, "/wasm/big.wasm")  # no Accept-Encoding
    assert status == 200 and body == original and "content-encoding" not in headers


def test_config_json_points_the_page_at_our_relay_by_the_host_it_used(server) -> None:
    status, headers, body = get(server, "/config.json", {"Host": "192.168.1.20:8080"})
    assert status == 200
    assert headers["cache-control"] == "no-store"
    assert json.loads(body) == {
        "broker_url": "ws://192.168.1.20:8080/mqtt",
        "namespace": "splitmq/v1",
        "username": "phone-1",
        "password": "pw",
        "telemetry_period_s": 0.5,
        "shard_url": "/shards/{sha256}",
        "wasm_url": "/wasm/",
        "profile": "phone",
        "coordinator_id": "coordinator",
        "version": splitmq.__version__,
    }


def test_shard_by_digest_is_immutable_and_revalidates_by_etag(server, site) -> None:
    data = os.urandom(5000)
    digest = write_shard(site / "pool", "a", data)
    status, headers, body = get_new_shard(server, digest)
    assert status == 200
    assert body == data
    assert headers["etag"] == f'"{digest}"'
    assert "immutable" in headers["cache-control"]
    assert headers["content-type"] == "application/octet-stream"
    status, headers, body = get(server, f"/shards/{digest}", {"If-None-Match": f'"{digest}"'})
    assert (status, body) == (304, b"")


def test_unknown_or_malformed_digests_get_a_clear_404(server) -> None:
    status, _, body = get(server, "/shards/" + "0" * 64)
    assert status == 404
    assert b"no shard with sha256 " + b"0" * 64 in body
    for bad in ("abc", "..%2f..%2fsecret.txt", "A" * 64, "0" * 65):
        status, _, body = get(server, f"/shards/{bad}")
        assert status == 404
        assert b"not a shard digest" in body


def test_a_shard_changed_on_disk_is_not_served_under_its_old_digest(server, site) -> None:
    digest = write_shard(site / "pool", "b", b"original bytes")
    assert get_new_shard(server, digest)[0] == 200
    path = next((site / "pool").rglob("b.tflite"))
    path.write_bytes(b"tampered bytes")
    status, _, _body = get(server, f"/shards/{digest}")
    assert status == 404


def test_join_url_names_the_lan_address_when_there_is_one() -> None:
    lan = qr.lan_address()
    url = qr.join_url("0.0.0.0", 8080, tls=False)
    if lan is None:
        assert url == "http://127.0.0.1:8080/agent.html"
    else:
        assert url == f"http://{lan}:8080/agent.html"
        assert not lan.startswith("127.")
    assert qr.join_url("10.0.0.5", 443, tls=True) == "https://10.0.0.5:443/agent.html"


def test_qr_codes_draw_the_url() -> None:
    url = "http://192.168.1.20:8080/agent.html"
    art = qr.terminal_qr(url).splitlines()
    # Version 3 (29 modules) + 2 x 4 quiet zone = 37 columns; two rows per line.
    assert len(art) > 15 and {len(line) for line in art} == {len(art[0])}
    svg = qr.svg_qr(url)
    assert svg.startswith("<svg") and url in svg


def test_fleet_json_lists_agents_and_deployments_from_retained_topics(
    mosquitto: Mosquitto,
) -> None:
    from splitmq.transport import MqttTransport
    from splitmq.wire import AgentState, AgentStatus, Battery, Telemetry, encode
    from splitmq.wire.topics import STATUS, TELEMETRY

    namespace = f"web-test-{os.getpid()}"
    broker = parse_broker_url(mosquitto.url())
    with MqttTransport(parse_broker_url(mosquitto.url(), client_id="web-fleet-agent")) as agent:
        status = AgentStatus(agent_id="phone-7", state=AgentState.ONLINE, runtime="litert.js")
        agent.publish(STATUS.name(namespace, agent="phone-7"), encode(status), qos=1, retain=True)
        telemetry = Telemetry(
            agent_id="phone-7",
            ts_ms=int(time.time() * 1000),
            period_s=60.0,
            cpu_pct=12.0,
            mem_free_bytes=500_000_000,
            battery=Battery(pct=81.0, plugged=False, simulated=False),
            compute_ms={"digits-float32/1": 2.5},
            queue_depth={"digits-float32/1": 0},
        )
        agent.publish(
            TELEMETRY.name(namespace, agent="phone-7"), encode(telemetry), qos=1, retain=True
        ).wait(10)
        config = WebConfig(broker=broker, host="127.0.0.1", port=0, namespace=namespace)
        web = WebServer(config).start()
        try:
            deadline = time.monotonic() + 10
            while True:
                fleet = json.loads(get(web, "/fleet.json")[2])
                if fleet["agents"] or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            assert fleet["connected"] is True
            row = dict(zip(fleet["columns"], fleet["agents"][0], strict=True))
            assert row["agent"] == "phone-7"
            assert row["state"] == "online"
            assert row["runtime"] == "litert.js"
            assert row["battery"] == "81%"
            assert row["stages (queue, ms)"] == "digits-float32/1 (0, 2.5)"
            assert fleet["join_url"].endswith("/agent.html")
        finally:
            web.stop()
            for topic in (STATUS, TELEMETRY):
                agent.publish(topic.name(namespace, agent="phone-7"), b"", qos=1, retain=True)


def test_a_site_server_gives_its_pages_the_site_and_refuses_one_that_is_no_topic_level() -> None:
    """Pages served by a site's server announce the site and route hops by it
    (broker-config/bridge.conf); config.json says which."""
    broker = TransportConfig(host="127.0.0.1", port=1883, client_id="web")
    config = WebConfig(broker=broker, site="kitchen")
    assert page_config(config, "10.0.0.5:8080", secure=False)["site"] == "kitchen"
    assert "site" not in page_config(WebConfig(broker=broker), "10.0.0.5:8080", secure=False)
    with pytest.raises(ConfigError, match="site 'a/b' cannot be a topic level"):
        WebConfig(broker=broker, site="a/b")


def test_a_shard_written_just_after_a_scan_is_found_at_once(server, site) -> None:
    """A page asks for a shard the coordinator has just cut: a miss that scanned the
    indexes a moment before it was written must not make it a 404."""
    assert get(server, "/shards/" + "e" * 64)[0] == 404  # a miss: the indexes read now
    digest = write_shard(site / "pool", "just-cut", os.urandom(3000))
    started = time.monotonic()
    status, _, body = get(server, f"/shards/{digest}")
    assert status == 200 and hashlib.sha256(body).hexdigest() == digest
    assert time.monotonic() - started < 10 * RESCAN_INTERVAL_S
