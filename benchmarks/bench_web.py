"""The web path: the relay beside Mosquitto's own WebSocket listener and plain TCP; a
browser stage beside the native agent on the same shard; the agent page's first load.

1. Round trip of one message (publish, and receive it back on the same connection
   through the broker) for 4 kB and 600 kB payloads, by the same bare MQTT client on
   all three paths so that only the path differs (paho-mqtt's WebSocket transport masks
   frames in pure Python: 120 ms for 600 kB, it would hide the path; the client here
   is hand-written MQTT over ``websockets``, whose masking is in C, or a TCP socket):

   - ``tcp``: Mosquitto's TCP listener;
   - ``relay``: ``splitmq web``'s ``/mqtt`` (WebSocket to this server, TCP to the broker);
   - ``mosquitto-ws``: Mosquitto 2.0.11's own WebSocket listener on the same broker.

   Interleaved rounds, medians; ratios relay / tcp and mosquitto-ws / relay.
2. (needs the built agent page and Chromium) The digits model deployed as one stage
   replicated on a native agent (ai-edge-litert) and on a browser page (LiteRT.js
   wasm): both load the same shard and report the time they measured for it
   (``ShardReady.bench_ms``), and serve requests (their telemetry's smoothed
   ``compute_ms``).
3. (same) The agent page's first load in a fresh browser context (no cache): time
   from navigation to connected, and the bytes it downloaded (page, bundle, wasm).

    .venv/bin/python benchmarks/bench_web.py [--quick] [--rounds N] [--only transport|browser]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import struct
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from _report import Row, report
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Subprotocol

from splitmq.broker import Mosquitto, config_dir, free_port
from splitmq.converter import open_entry
from splitmq.errors import SplitMQError
from splitmq.transport import parse_broker_url
from splitmq.web.config import STATIC_DIR, WebConfig
from splitmq.web.server import WebServer
from splitmq.wire import AgentStatus, Message, decode

SIZES = {"4 kB": 4 * 1024, "600 kB": 600 * 1024}
TIMEOUT_S = 120.0


@contextmanager
def broker_with_websockets(workdir: Path) -> Iterator[tuple[Mosquitto, int]]:
    """dev.conf plus Mosquitto's own WebSocket listener (IPv4: 2.0.11 binds ``*``
    otherwise and refuses an address on a WebSocket listener)."""
    ws_port = free_port()
    config = workdir / "ws.conf"
    config.write_text(
        (config_dir() / "dev.conf").read_text()
        + f"\nlistener {ws_port}\nprotocol websockets\nsocket_domain ipv4\n"
    )
    with Mosquitto(config, workdir / "broker", files_dir=config_dir()) as broker:
        yield broker, ws_port


def remaining_length(n: int) -> bytes:
    """MQTT's variable-length integer (3.1.1 §2.2.3)."""
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + remaining_length(len(body)) + body


def utf8(text: str) -> bytes:
    return struct.pack("!H", len(text)) + text.encode()


class Stream:
    """Bytes to and from the broker: a TCP socket, or a WebSocket (binary frames)."""

    def __init__(self, port: int, websocket: bool):
        self.buffer = bytearray()
        self.ws: ClientConnection | None = None
        self.sock: socket.socket | None = None
        if websocket:
            self.ws = connect(
                f"ws://127.0.0.1:{port}/mqtt",
                subprotocols=[Subprotocol("mqtt")],
                compression=None,
                max_size=None,
                proxy=None,
                ping_interval=None,
            )
        else:
            self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send(self, data: bytes) -> None:
        if self.ws is not None:
            self.ws.send(data)
        elif self.sock is not None:
            self.sock.sendall(data)

    def _more(self) -> None:
        if self.ws is not None:
            data = self.ws.recv(timeout=TIMEOUT_S)
            self.buffer += data if isinstance(data, bytes) else data.encode()
        elif self.sock is not None:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError("the broker closed the connection")
            self.buffer += chunk

    def packet(self) -> tuple[int, bytes]:
        """The next MQTT packet: (first byte, body)."""
        while True:
            if len(self.buffer) >= 2:
                length, shift, i = 0, 0, 1
                while i < len(self.buffer):
                    byte = self.buffer[i]
                    length |= (byte & 0x7F) << shift
                    shift += 7
                    i += 1
                    if not byte & 0x80:
                        if len(self.buffer) >= i + length:
                            first = self.buffer[0]
                            body = bytes(self.buffer[i : i + length])
                            del self.buffer[: i + length]
                            return first, body
                        break
            self._more()

    def close(self) -> None:
        if self.ws is not None:
            self.ws.close()
        if self.sock is not None:
            self.sock.close()


class Echo:
    """A bare MQTT 3.1.1 client written by hand, the same on every path: subscribed to its
    own topic (QoS 0), it publishes (QoS 0) and waits for the message back."""

    def __init__(self, name: str, port: int, websocket: bool):
        self.topic = f"bench/web/{name}"
        self.stream = Stream(port, websocket)
        connect_body = b"\x00\x04MQTT\x04\x02" + struct.pack("!H", 60) + utf8(f"bench-{name}")
        self.stream.send(packet(0x10, connect_body))
        first, body = self.stream.packet()
        if first != 0x20 or body[1] != 0:
            raise RuntimeError(f"{name}: CONNECT refused: {body!r}")
        self.stream.send(packet(0x82, struct.pack("!H", 1) + utf8(self.topic) + b"\x00"))
        first, _ = self.stream.packet()
        if first != 0x90:
            raise RuntimeError(f"{name}: no SUBACK")

    def round_trip_s(self, payload: bytes) -> float:
        message = packet(0x30, utf8(self.topic) + payload)
        start = time.perf_counter()
        self.stream.send(message)
        while True:
            first, body = self.stream.packet()
            if first >> 4 == 3:
                break
        elapsed = time.perf_counter() - start
        if len(body) != len(message) - len(remaining_length(len(body))) - 1:
            raise RuntimeError(f"{self.topic}: a message of {len(body)} bytes came back")
        return elapsed

    def close(self) -> None:
        self.stream.send(b"\xe0\x00")
        self.stream.close()


def transport_rows(rounds: int, quick: bool) -> tuple[list[Row], dict[str, Any]]:
    rows: list[Row] = []
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp, broker_with_websockets(Path(tmp)) as (broker, ws):
        config = WebConfig(
            broker=parse_broker_url(broker.url()), host="127.0.0.1", port=0, fleet_view=False
        )
        server = WebServer(config).start()
        paths = {
            "tcp": Echo("tcp", broker.port or 0, websocket=False),
            "relay": Echo("relay", server.port, websocket=True),
            "mosquitto-ws": Echo("mosquitto-ws", ws, websocket=True),
        }
        try:
            for label, size in SIZES.items():
                payload = os.urandom(size)
                # Mosquitto's WebSocket listener needs seconds per 600 kB: fewer messages.
                slow = size > 64 * 1024
                times: dict[str, list[float]] = {name: [] for name in paths}
                for name, echo in paths.items():
                    if not (slow and name == "mosquitto-ws"):  # 15 s a message: no warm-up
                        echo.round_trip_s(payload)
                for _ in range(rounds):
                    for name, echo in paths.items():
                        count = 1 if (slow and name == "mosquitto-ws") else (5 if quick else 20)
                        times[name].append(
                            statistics.median(echo.round_trip_s(payload) for _ in range(count))
                        )
                    print(f"  {label}: round done", flush=True)
                medians = {name: statistics.median(t) * 1000 for name, t in times.items()}
                figures[label] = {"median_ms": medians, "rounds_ms": times}
                for name, ms in medians.items():
                    rows.append(
                        Row(f"web {label}", f"round trip via {name}", f"{ms:.2f} ms", value=ms)
                    )
                relay_vs_tcp = medians["relay"] / medians["tcp"]
                ws_vs_relay = medians["mosquitto-ws"] / medians["relay"]
                rows.append(
                    Row(f"web {label}", "relay / tcp", f"{relay_vs_tcp:.2f}x", value=relay_vs_tcp)
                )
                rows.append(
                    Row(
                        f"web {label}",
                        "mosquitto-ws / relay",
                        f"{ws_vs_relay:.1f}x",
                        value=ws_vs_relay,
                    )
                )
                per_s = size / (medians["mosquitto-ws"] / 1000) / 1000
                figures[label]["mosquitto_ws_kb_per_s"] = per_s
        finally:
            for echo in paths.values():
                echo.close()
            server.stop()
    return rows, figures


CHROMIUM = Path(os.environ.get("SPLITMQ_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding",
]
PAGE_TIMEOUT_S = 180.0


def open_page(browser: Any, url: str) -> tuple[Any, Any, float]:
    """A fresh context (empty cache) at ``url``; seconds until its agent serves."""
    context = browser.new_context()
    page = context.new_page()
    start = time.perf_counter()
    page.goto(url)
    deadline = time.monotonic() + PAGE_TIMEOUT_S
    while True:
        state = page.evaluate("() => ({...window.splitmqAgent})")
        if state.get("phase") == "serving" and state.get("connected"):
            return context, page, time.perf_counter() - start
        if state.get("phase") == "failed" or time.monotonic() > deadline:
            raise SystemExit(f"the agent page did not start: {state}")
        page.wait_for_timeout(20)


def downloaded_bytes(page: Any) -> tuple[int, int, list[str]]:
    """(bytes on the wire, bytes decoded, names) of everything the page fetched."""
    entries = page.evaluate(
        """() => performance.getEntriesByType('navigation')
              .concat(performance.getEntriesByType('resource'))
              .map(e => [e.name, e.transferSize, e.decodedBodySize])"""
    )
    wire = sum(int(e[1]) for e in entries)
    body = sum(int(e[2]) for e in entries)
    return wire, body, [str(e[0]).rsplit("/", 1)[-1].split("?")[0] for e in entries]


def browser_rows(rounds: int, quick: bool) -> tuple[list[Row], dict[str, Any]]:
    """Parts 2 and 3 of the module docstring."""
    from _fleet import POOL, AgentSpec, fleet, mobilenet, online
    from playwright.sync_api import sync_playwright

    from splitmq.converter.digits import train_and_convert
    from splitmq.wire import ShardReady
    from splitmq.wire.topics import EVENTS

    rows: list[Row] = []
    figures: dict[str, Any] = {}
    if not CHROMIUM.is_file() or not (STATIC_DIR / "agent.html").is_file():
        print(f"skipped the browser figures: no {CHROMIUM} or no built page (make web)")
        return rows, figures
    models = {"mnv3l": mobilenet(("float32",))}
    try:
        models["digits"] = open_entry(POOL, "digits")
    except SplitMQError:
        models["digits"] = train_and_convert(POOL, epochs=3, variants=("float32",))
    with (
        fleet([AgentSpec("native-1")], pool=POOL) as running,
        sync_playwright() as playwright,
    ):
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        config = WebConfig(
            broker=parse_broker_url(running.url), host="127.0.0.1", port=0, pool_dir=POOL
        )
        server = WebServer(config).start()
        try:
            # 3. first load, each in a fresh context (no cache)
            loads = []
            for index in range(rounds):
                url = f"{server.local_url}agent.html?id=load-{index}"
                context, page, seconds = open_page(browser, url)
                loads.append(seconds)
                wire, body, names = downloaded_bytes(page)
                build = page.evaluate("window.splitmqAgent.wasmBuild")
                context.close()
            first_load = statistics.median(loads)
            figures["first_load"] = {
                "seconds": loads,
                "wire_bytes": wire,
                "decoded_bytes": body,
                "files": names,
                "wasm_build": build,
            }
            rows += [
                Row(
                    "web page",
                    "first load to serving (median)",
                    f"{first_load:.2f} s",
                    value=first_load,
                ),
                Row(
                    "web page",
                    f"downloaded ({build} wasm build)",
                    f"{wire / 1e6:.1f} MB",
                    value=wire,
                ),
            ]
            # 2. the same shard on the page and on the native agent
            events: list[Message] = []
            running.operator.subscribe(
                EVENTS.filter(),
                lambda message: events.append(decode(message.payload)) if message.payload else None,
            )
            context, page, _ = open_page(browser, f"{server.local_url}agent.html?id=page-1")
            running.inbox.wait_for(AgentStatus, online("page-1"), 60)
            figures["invoke"] = {}
            for name, entry in models.items():
                deployment = running.deploy(
                    entry.name,
                    stages=1,
                    replicas=2,
                    expect_agents=["native-1", "page-1"],
                    ready_timeout_s=120.0,
                )
                ready = {
                    e.agent_id: e.bench_ms
                    for e in events
                    if isinstance(e, ShardReady) and e.deployment == deployment.deployment
                }
                if set(ready) != {"native-1", "page-1"}:
                    raise SystemExit(f"{name}: shard benchmarks from {sorted(ready)} only")
                ratio = ready["page-1"] / ready["native-1"]
                figures["invoke"][name] = {"bench_ms": ready, "digest": deployment.stages[0].digest}
                rows += [
                    Row(
                        f"web {name}",
                        "invoke, native agent (ai-edge-litert)",
                        f"{ready['native-1']:.2f} ms",
                        value=ready["native-1"],
                    ),
                    Row(
                        f"web {name}",
                        f"invoke, page (LiteRT.js {build})",
                        f"{ready['page-1']:.2f} ms",
                        value=ready["page-1"],
                    ),
                    Row(f"web {name}", "page / native", f"{ratio:.2f}x", value=ratio),
                ]
            context.close()
        finally:
            server.stop()
            browser.close()
    return rows, figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (5; quick: 2)")
    parser.add_argument(
        "--only", choices=["transport", "browser"], help="one part: round trips, or the page"
    )
    args = parser.parse_args()
    rounds = args.rounds or (2 if args.quick else 5)
    rows: list[Row] = []
    figures: dict[str, Any] = {}
    if args.only in (None, "transport"):
        print("round trips: tcp, relay, mosquitto-ws ...", flush=True)
        more_rows, more_figures = transport_rows(rounds, args.quick)
        rows, figures = rows + more_rows, {**figures, **more_figures}
    if args.only in (None, "browser"):
        print("the agent page: first load, and a shard on the page beside the native agent")
        more_rows, more_figures = browser_rows(rounds, args.quick)
        rows, figures = rows + more_rows, {**figures, **more_figures}
    report("bench_web", rows, figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
