"""The web server's settings, and the ``/config.json`` the agent page starts from."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from splitmq import __version__
from splitmq.errors import ConfigError
from splitmq.transport import TransportConfig
from splitmq.wire.topics import DEFAULT_NAMESPACE, check_segment

PACKAGE_DIR = Path(__file__).resolve().parent
STATIC_DIR = PACKAGE_DIR / "static"
"""The built agent page (``web/`` builds into it; the wheel ships it)."""
PAGES_DIR = PACKAGE_DIR / "pages"
"""The fleet page: plain HTML and an ES module, no build step."""

DEFAULT_PORT = 8080
RELAY_PATH = "/mqtt"
MQTT_SUBPROTOCOLS = ("mqtt", "mqttv3.1")
"""WebSocket subprotocols MQTT clients offer (MQTT 5.0 §6 and 3.1.1 §6: "mqtt"; older
clients "mqttv3.1"). The relay answers with the first one the client offers."""


@dataclass(frozen=True)
class WebConfig:
    """Settings of one web server.

    Attributes:
        broker: the broker the relay connects to (its TCP or TLS listener) and the fleet
            page subscribes to. The relay carries the page's own CONNECT, so the
            broker's user name and password here are only the fleet view's.
        host: the address to listen on (``0.0.0.0``: every interface, so a phone on the
            same network reaches it).
        port: the port to listen on (0: a free one, see :attr:`WebServer.port`).
        namespace: the topic prefix of the fleet.
        pool_dir: the model pool whose shards ``/shards/{sha256}`` serves (None: none).
        static_dir: the built agent page (the package's ``static/`` by default).
        certfile: the server's TLS certificate: HTTPS and ``wss://`` when given.
        keyfile: its key.
        agent_username: the user name ``config.json`` gives agent pages (None: the page
            asks for it in its URL, ``?user=..&password=..``). Anyone who reaches the
            page reads it: on an open network pass credentials in the URL instead.
        agent_password: its password.
        telemetry_period_s: how often a page publishes its telemetry.
        profile: a device profile the pages announce (None: the page's own reading).
        profile_figures: that profile's energy figures (the fields of
            ``splitmq/agent/profiles/*.json``), which the page reports in its status so
            the planner's energy model has them (None: the page's defaults).
        coordinator_id: the only command issuer the pages obey (the coordinator's
            ``--id``).
        max_message_bytes: the largest WebSocket message the relay accepts; the
            broker's ``max_packet_size`` plus a frame's worth of slack.
        fleet_view: subscribe to the fleet for the front page (off in benchmarks).
        site: the site the pages are at ('' : the central broker), when this server
            relays to a site broker (``broker-config/bridge.conf``): pages announce it
            and route their hops by it, as ``splitmq agent --site`` does.
    """

    broker: TransportConfig
    host: str = "0.0.0.0"
    port: int = DEFAULT_PORT
    namespace: str = DEFAULT_NAMESPACE
    pool_dir: Path | None = None
    static_dir: Path = STATIC_DIR
    certfile: Path | None = None
    keyfile: Path | None = None
    agent_username: str | None = None
    agent_password: str | None = None
    telemetry_period_s: float = 2.0
    profile: str | None = None
    profile_figures: Mapping[str, Any] | None = None
    coordinator_id: str = "coordinator"
    max_message_bytes: int = 8 * 1024 * 1024 + 65536
    fleet_view: bool = True
    site: str = ""

    def __post_init__(self) -> None:
        if not 0 <= self.port < 65536:
            raise ConfigError(f"web port {self.port} is not a TCP port (0-65535)")
        if (self.certfile is None) != (self.keyfile is None):
            raise ConfigError("give both --certfile and --keyfile for HTTPS, or neither")
        for name in ("certfile", "keyfile"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise ConfigError(f"{name} {path} does not exist or is not a file")
        if self.telemetry_period_s <= 0:
            raise ConfigError("telemetry_period_s must be above 0")
        if self.site:
            try:
                check_segment("site", self.site)
            except ValueError as error:
                raise ConfigError(str(error)) from None

    @property
    def tls(self) -> bool:
        return self.certfile is not None


def page_config(config: WebConfig, host: str, secure: bool) -> dict[str, Any]:
    """``/config.json`` for a page loaded from ``host`` (the request's ``Host`` header).

    The broker URL is this server's own relay, on the address the page reached us by,
    so a phone that opened ``http://192.168.1.20:8080/agent.html`` connects to
    ``ws://192.168.1.20:8080/mqtt``.
    """
    return {
        "broker_url": f"{'wss' if secure else 'ws'}://{host}{RELAY_PATH}",
        "namespace": config.namespace,
        "username": config.agent_username,
        "password": config.agent_password,
        "telemetry_period_s": config.telemetry_period_s,
        "shard_url": "/shards/{sha256}",
        "wasm_url": "/wasm/",
        "profile": config.profile,
        "coordinator_id": config.coordinator_id,
        "version": __version__,
        **({"site": config.site} if config.site else {}),
        **({"profile_figures": dict(config.profile_figures)} if config.profile_figures else {}),
    }
