"""``splitmq web``, and the web server of ``splitmq coordinator --web PORT``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from splitmq.broker_options import add_broker_options, namespace, transport_config
from splitmq.errors import SplitMQError
from splitmq.stop_signals import StopSignals
from splitmq.web.config import DEFAULT_PORT, WebConfig

if TYPE_CHECKING:
    from splitmq.web.server import WebServer

    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]


def add_web_options(parser: argparse.ArgumentParser, *, port_option: str = "--port") -> None:
    """The options of the web server (``--web`` is the port's name for the coordinator)."""
    group = parser.add_argument_group("web server")
    add = group.add_argument
    if port_option == "--port":
        add("--port", type=int, default=DEFAULT_PORT, help=f"port ({DEFAULT_PORT}; 0: any)")
    else:
        add(port_option, type=int, metavar="PORT", help="serve the web page on this port")
    add("--host", default="0.0.0.0", help="address to listen on (0.0.0.0: every interface)")
    add("--https-cert", type=Path, help="TLS certificate: serve HTTPS and wss://")
    add("--https-key", type=Path, help="the certificate's key")
    add("--agent-user", help="the MQTT user name config.json gives agent pages")
    add("--agent-password", help="its password (else the page's ?user=&password=)")
    add("--telemetry-period", type=float, default=2.0, help="agent pages' period, s (2)")
    add("--agent-profile", help="the device profile (energy figures) agent pages announce")
    add("--no-qr", action="store_true", help="print the URL without its QR code")
    add("--site", default="", help="the site agent pages are at, when the broker is a site broker")


def add_parser(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "web",
        help="serve the browser agent page, the live fleet page and MQTT over WebSocket",
        description="Serve the agent page (a phone joins the fleet by opening it), the "
        "shards of the model pool, a fast MQTT-over-WebSocket relay to the broker and the "
        "live fleet page; print the URL and its QR code.",
    )
    add_broker_options(parser)
    parser.add_argument("--pool", type=Path, default=Path("pool"), help="model pool directory")
    parser.add_argument(
        "--coordinator-id", default="coordinator", help="the coordinator the pages obey"
    )
    add_web_options(parser)
    parser.set_defaults(run=run_web)


PROFILE_FIGURES = (
    "active_power_w",
    "idle_power_w",
    "radio_j_per_mb",
    "battery_wh",
    "initial_battery_pct",
    "plugged",
)
"""What a page takes from a device profile: energy figures, never an emulated slow-down
or link (a page is a real device)."""


def profile_figures(name: str | None) -> dict[str, object] | None:
    """The energy figures of the device profile ``name`` (a shipped one or a file)."""
    if name is None:
        return None
    from splitmq.agent.profiles import load_profile

    profile = load_profile(name)
    return {field: getattr(profile, field) for field in PROFILE_FIGURES}


def web_config(
    args: argparse.Namespace, port: int, client_id: str, coordinator_id: str | None = None
) -> WebConfig:
    """The server's settings from the command line (``coordinator_id``: the coordinator's
    own ``--id`` when it runs the server, else ``--coordinator-id``)."""
    return WebConfig(
        broker=transport_config(args, client_id),
        host=args.host,
        port=port,
        namespace=namespace(args),
        pool_dir=args.pool,
        certfile=args.https_cert,
        keyfile=args.https_key,
        agent_username=args.agent_user,
        agent_password=args.agent_password,
        telemetry_period_s=args.telemetry_period,
        profile=args.agent_profile,
        profile_figures=profile_figures(args.agent_profile),
        coordinator_id=coordinator_id or getattr(args, "coordinator_id", None) or "coordinator",
        site=args.site,
    )


def start_server(config: WebConfig, *, qr: bool, out: TextIO = sys.stdout) -> WebServer:
    """Start the server and tell the terminal where to point a phone."""
    from splitmq.web.qr import terminal_qr
    from splitmq.web.server import WebServer

    server = WebServer(config).start()
    print(f"fleet page: {server.url}", file=out)
    print(f"agent page: {server.join_url}  (open it on a phone on the same network)", file=out)
    if server.join_url.startswith(("http://127.", "https://127.")):
        print("  this machine has no LAN address: only its own browser can join", file=out)
    if qr:
        print(terminal_qr(server.join_url), file=out, flush=True)
    return server


def run_web(args: argparse.Namespace) -> int:
    # Signals first: a SIGTERM right after the URL is printed still stops cleanly.
    with StopSignals() as signals:
        try:
            server = start_server(web_config(args, args.port, "splitmq-web"), qr=not args.no_qr)
        except SplitMQError as error:
            print(f"splitmq web: {error}", file=sys.stderr)
            return 2
        signals.wait()
        server.stop()  # a second signal meanwhile does not cut it short
    return 0
