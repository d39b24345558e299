"""The web application, and :class:`WebServer`, which runs it on a thread of its own.

::

    server = WebServer(WebConfig(broker=parse_broker_url("mqtt://127.0.0.1:1883"),
                                 pool_dir=Path("pool")))
    server.start()                 # returns once it listens
    print(server.join_url)         # http://192.168.1.20:8080/agent.html
    ...
    server.stop()

The event loop runs on the server's thread; :meth:`WebServer.start` raises the error
that kept it from listening (a port in use, a broker the fleet view cannot reach).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import threading
from typing import Any

from aiohttp import web

from splitmq.coordinator.fleet_table import COLUMNS
from splitmq.errors import ConfigError, SplitMQError
from splitmq.mosquitto import free_port
from splitmq.web.config import PAGES_DIR, RELAY_PATH, WebConfig, page_config
from splitmq.web.fleet import FleetView
from splitmq.web.qr import join_url, svg_qr
from splitmq.web.relay import Relay
from splitmq.web.shards import ShardIndex, ShardRoute
from splitmq.web.static import StaticFiles, file_response, isolation_headers

log = logging.getLogger(__name__)

START_TIMEOUT_S = 30.0
BUILD_HINT = "run `make web` in the repository (npm builds web/ into it); a wheel ships it built"


def build_app(
    config: WebConfig, *, fleet: FleetView | None, agent_url: str
) -> tuple[web.Application, Relay]:
    """The routes of the module docstring of :mod:`splitmq.web`."""
    app = web.Application(middlewares=[isolation_headers], client_max_size=1024 * 1024)
    relay = Relay(config.broker, config.max_message_bytes)
    shards = ShardRoute(ShardIndex(config.pool_dir))
    static = StaticFiles(config.static_dir, "agent page", BUILD_HINT, marker="agent.html")
    pages = StaticFiles(PAGES_DIR, "fleet page")
    join_svg = svg_qr(agent_url)

    async def index(request: web.Request) -> web.StreamResponse:
        return file_response(PAGES_DIR / "index.html")

    async def config_json(request: web.Request) -> web.StreamResponse:
        body = page_config(config, request.host, secure=request.secure)
        return web.json_response(body, headers={"Cache-Control": "no-store"})

    async def fleet_json(request: web.Request) -> web.StreamResponse:
        body: dict[str, Any] = (
            fleet.snapshot()
            if fleet is not None
            else {
                "columns": list(COLUMNS),
                "agents": [],
                "deployments": [],
                "connected": False,
                "requests": {"available": False, "recent": [], "median_ms": {}, "count": 0},
            }
        )
        body["join_url"] = agent_url
        body["relay"] = vars(relay.stats)
        return web.json_response(body, headers={"Cache-Control": "no-store"})

    async def join(request: web.Request) -> web.StreamResponse:
        return web.Response(
            text=join_svg, content_type="image/svg+xml", headers={"Cache-Control": "no-cache"}
        )

    app.router.add_get("/", index)
    app.router.add_get("/config.json", config_json)
    app.router.add_get("/fleet.json", fleet_json)
    app.router.add_get("/join.svg", join)
    app.router.add_get(RELAY_PATH, relay.handle)
    app.router.add_get("/shards/{digest}", shards.handle)
    app.router.add_get("/fleet/{name:.+}", pages.handle)
    app.router.add_get("/{name:.+}", static.handle)
    return app, relay


def server_ssl_context(config: WebConfig) -> ssl.SSLContext | None:
    if config.certfile is None or config.keyfile is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(config.certfile), str(config.keyfile))
    return context


class WebServer:
    """The web application on ``config.host:config.port``, served from a thread."""

    def __init__(self, config: WebConfig):
        self.config = config
        self.port = config.port or free_port(config.host or "0.0.0.0")
        self.fleet: FleetView | None = None
        self.relay: Relay | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stopping: asyncio.Event | None = None
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        """The front page, on this machine's LAN address when it listens on every one."""
        return join_url(self.config.host, self.port, tls=self.config.tls, path="/")

    @property
    def join_url(self) -> str:
        """The agent page a phone opens."""
        return join_url(self.config.host, self.port, tls=self.config.tls)

    @property
    def local_url(self) -> str:
        """The front page on the loopback address (for tests and this machine's browser)."""
        host = "127.0.0.1" if self.config.host in ("0.0.0.0", "") else self.config.host
        scheme = "https" if self.config.tls else "http"
        return f"{scheme}://{'localhost' if self.config.tls else host}:{self.port}/"

    def start(self) -> WebServer:
        if self.config.fleet_view:
            self.fleet = FleetView(self.config.broker, self.config.namespace)
            try:
                self.fleet.start()
            except SplitMQError as error:
                self.fleet.close()
                raise ConfigError(f"the fleet page cannot watch the broker: {error}") from error
        self._thread = threading.Thread(target=self._run, name="splitmq-web", daemon=True)
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT_S):
            raise ConfigError(f"the web server did not start within {START_TIMEOUT_S} s")
        if self._error is not None:
            self.stop()
            raise ConfigError(
                f"the web server cannot listen on {self.config.host}:{self.config.port}: "
                f"{self._error}"
            ) from self._error
        return self

    def stop(self) -> None:
        loop, thread, stopping = self._loop, self._thread, self._stopping
        if loop is not None and thread is not None and stopping is not None and thread.is_alive():
            loop.call_soon_threadsafe(stopping.set)
            thread.join(10.0)
        if self.fleet is not None:
            self.fleet.close()
            self.fleet = None

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as error:  # reported to start(), which raises it
            self._error = error
            self._ready.set()
        finally:
            loop.close()

    async def _serve(self) -> None:
        self._stopping = asyncio.Event()
        app, self.relay = build_app(self.config, fleet=self.fleet, agent_url=self.join_url)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        site = web.TCPSite(
            runner, self.config.host, self.port, ssl_context=server_ssl_context(self.config)
        )
        try:
            await site.start()
            self._ready.set()
            await self._stopping.wait()
        finally:
            await runner.cleanup()
