"""Check the built agent page in a real headless Chromium against ai-edge-litert.

Starts Mosquitto (TCP and a WebSocket listener), a small static server for the page,
config.json and the shards, opens the page in Debian's Chromium through Playwright
(nothing downloaded), orders it to load both shards of a two-stage digits model, runs
the digits through it, and compares every output with ai-edge-litert's on the same
input. Prints a table; exits non-zero when the page misbehaves.

    PYTHONPATH=. python web/scripts/chromium_check.py --shards DIR

``DIR`` holds ``full.tflite``, ``stage-0-*.tflite``, ``stage-1-*.tflite``, ``x.npy``
and ``meta.json`` (see ``make_digits`` below: it makes them when DIR is empty).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.server
import json
import queue
import socketserver
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from splitmq.mosquitto import free_port
from splitmq.wire import (
    Activation,
    AgentStatus,
    LoadShard,
    ShardReady,
    Telemetry,
    Tensor,
    TensorSpec,
    decode,
    encode,
)

STATIC = Path(__file__).resolve().parents[2] / "splitmq" / "web" / "static"
NS = "splitmq/v1"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


def make_digits(directory: Path) -> None:
    from splitmq.converter.cutter import cut
    from splitmq.converter.digits import load_split, train_and_convert
    from splitmq.converter.graph import Graph, read_model

    entry = train_and_convert(directory / "pool", epochs=3, variants=("float32",))
    full = entry.variant_path("float32")
    operators = len(Graph(read_model(full)).operators())
    shards = cut(full, [operators // 2], directory)
    meta = [
        {
            "stage": s.stage,
            "sha256": s.sha256,
            "path": str(s.path),
            "inputs": [[t.name, list(t.shape), t.dtype] for t in s.inputs],
            "outputs": [[t.name, list(t.shape), t.dtype] for t in s.outputs],
        }
        for s in shards
    ]
    (directory / "full.tflite").write_bytes(full.read_bytes())
    _, _, x_test, _ = load_split()
    np.save(directory / "x.npy", x_test[:32].astype(np.float32))
    (directory / "meta.json").write_text(json.dumps(meta, indent=1))


def start_mosquitto(work: Path) -> tuple[Any, int, int]:
    import subprocess

    tcp, ws = free_port(), free_port()
    conf = work / "mosquitto.conf"
    conf.write_text(
        f"listener {tcp} 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\n"
        f"listener {ws}\nprotocol websockets\nsocket_domain ipv4\n"
    )
    process = subprocess.Popen(
        ["/usr/sbin/mosquitto", "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    import socket

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", tcp), 0.2).close()
            socket.create_connection(("127.0.0.1", ws), 0.2).close()
            return process, tcp, ws
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("mosquitto did not start")


def start_static(
    shards: dict[str, bytes], config: dict[str, Any], isolated: bool
) -> tuple[Any, int]:
    class Handler(http.server.SimpleHTTPRequestHandler):
        extensions_map = {
            **http.server.SimpleHTTPRequestHandler.extensions_map,
            ".wasm": "application/wasm",
            ".js": "text/javascript",
        }

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(STATIC), **kwargs)

        def log_message(self, *args: Any) -> None:
            pass

        def end_headers(self) -> None:
            if isolated:
                self.send_header("Cross-Origin-Opener-Policy", "same-origin")
                self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
                self.send_header("Cross-Origin-Resource-Policy", "same-origin")
            super().end_headers()

        def do_GET(self) -> None:
            if self.path == "/config.json":
                return self._send(json.dumps(config).encode(), "application/json")
            if self.path.startswith("/shards/"):
                data = shards.get(self.path.rsplit("/", 1)[1])
                if data is None:
                    self.send_error(404)
                    return None
                return self._send(data, "application/octet-stream")
            return super().do_GET()

        def _send(self, body: bytes, kind: str) -> None:
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]


class Listener:
    """A paho client that queues every message of the topics it watches."""

    def __init__(self, port: int):
        self.inbox: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id="chromium-check")
        self.client.on_message = lambda _c, _u, m: self.inbox.put((m.topic, bytes(m.payload)))
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def subscribe(self, topic: str) -> None:
        self.client.subscribe(topic, qos=1)

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(5)

    def wait(self, predicate: Any, timeout_s: float = 60.0) -> Any:
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("nothing matching came")
            try:
                topic, payload = self.inbox.get(timeout=left)
            except queue.Empty:
                raise TimeoutError("nothing matching came") from None
            message = decode(payload)
            if predicate(topic, message):
                return message


def litert_run(model: bytes, inputs: list[np.ndarray]) -> list[np.ndarray]:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model)
    interpreter.allocate_tensors()
    for detail, array in zip(interpreter.get_input_details(), inputs, strict=True):
        interpreter.set_tensor(detail["index"], array)
    interpreter.invoke()
    return [interpreter.get_tensor(d["index"]).copy() for d in interpreter.get_output_details()]


def ulps(a: np.ndarray, b: np.ndarray) -> int:
    """The largest distance between ``a`` and ``b`` in units in the last place (float32)."""
    ia = a.astype(np.float32).view(np.int32).astype(np.int64)
    ib = b.astype(np.float32).view(np.int32).astype(np.int64)
    ia = np.where(ia < 0, np.int64(-(2**31)) - ia, ia)  # order negative floats as integers
    ib = np.where(ib < 0, np.int64(-(2**31)) - ib, ib)
    return int(np.max(np.abs(ia - ib))) if ia.size else 0


def report(rows: list[tuple[str, str]], failures: list[str], logs: list[str]) -> int:
    """Print the table (and what failed, with the page's last console lines)."""
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    if failures:
        print("FAILURES:", *failures, sep="\n  ")
        print("page console:", *logs[-20:], sep="\n  ")
        return 1
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=Path, default=None)
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--screenshot", type=Path, help="save the page's status panel here")
    parser.add_argument(
        "--isolated",
        action="store_true",
        help="serve with COOP/COEP (cross-origin isolation: the threaded wasm build)",
    )
    parser.add_argument(
        "--wasm-url",
        default="/wasm/",
        help="config.json's wasm_url (a directory, or one build's .js)",
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="splitmq-chromium-"))
    directory = args.shards or work / "digits"
    if not (directory / "meta.json").exists():
        directory.mkdir(parents=True, exist_ok=True)
        print("making the digits model and its shards...", flush=True)
        make_digits(directory)
    meta = json.loads((directory / "meta.json").read_text())
    shard_bytes = {m["sha256"]: Path(m["path"]).read_bytes() for m in meta}
    for digest, data in shard_bytes.items():
        assert hashlib.sha256(data).hexdigest() == digest
    x = np.load(directory / "x.npy")
    full = (directory / "full.tflite").read_bytes()

    broker, tcp, ws = start_mosquitto(work)
    config = {
        "broker_url": f"ws://127.0.0.1:{ws}/mqtt",
        "namespace": NS,
        "username": None,
        "password": None,
        "telemetry_period_s": 1.0,
        "shard_url": "/shards/{sha256}",
        "wasm_url": args.wasm_url,
        "profile": None,
    }
    server, http_port = start_static(shard_bytes, config, args.isolated)
    listener = Listener(tcp)
    try:
        for topic in (
            f"{NS}/agents/web-1/#",
            f"{NS}/clients/check/result",
            f"{NS}/stage/d1/1/probe",
        ):
            listener.subscribe(topic)
        failures: list[str] = []
        rows: list[tuple[str, str]] = []
        from playwright.sync_api import TimeoutError as PlaywrightTimeout
        from playwright.sync_api import sync_playwright

        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
            page = browser.new_page()
            logs: list[str] = []
            page.on("console", lambda m: logs.append(f"{m.type}: {m.text}"))
            started = time.perf_counter()
            page.goto(f"http://127.0.0.1:{http_port}/agent.html?id=web-1")
            status = listener.wait(
                lambda t, m: isinstance(m, AgentStatus) and m.state == "online", 120
            )
            rows.append(("page up, online status (s)", f"{time.perf_counter() - started:.2f}"))
            rows.append(("status runtime", f"{status.runtime} {status.runtime_version}"))
            rows.append(("calibrated speed (GFLOP/s)", f"{status.speed_gflops:.2f}"))
            if status.runtime != "litert.js" or status.speed_gflops <= 0:
                failures.append(f"bad birth status {status}")
            telemetry = listener.wait(lambda t, m: isinstance(m, Telemetry), 30)
            rows.append(("telemetry battery", f"{telemetry.battery}"))

            for m in meta:
                load = LoadShard(
                    command_id=f"load-{m['stage']}",
                    issuer="coordinator",
                    deployment="d1",
                    stage=m["stage"],
                    digest=m["sha256"],
                    size_bytes=len(shard_bytes[m["sha256"]]),
                    inputs=tuple(TensorSpec(n, tuple(s), d) for n, s, d in m["inputs"]),
                    outputs=tuple(TensorSpec(n, tuple(s), d) for n, s, d in m["outputs"]),
                )
                listener.publish(f"{NS}/agents/web-1/cmd", encode(load))
                ready = listener.wait(lambda t, m: t.endswith("/events"), 120)
                if not isinstance(ready, ShardReady):
                    rows.append((f"stage {m['stage']} load refused", getattr(ready, "message", "")))
                    failures.append(f"stage {m['stage']} not loaded")
                    continue
                rows.append((f"stage {m['stage']} bench (ms)", f"{ready.bench_ms:.3f}"))

            view = page.evaluate("() => ({...window.splitmqAgent})")
            rows.append(("window.splitmqAgent.hosted", ",".join(view["hosted"])))
            rows.append(("wasm build", str(view["wasmBuild"])))
            if len(view["hosted"]) < len(meta):
                return report(rows, failures, logs)
            input_name = meta[0]["inputs"][0][0]
            middle_name = meta[0]["outputs"][0][0]
            diffs_stage0, diffs_full, diffs_chain, exact, exact_chain = [], [], [], 0, 0
            ulps_chain: list[int] = []
            for i in range(len(x)):
                sample = x[i : i + 1].reshape(meta[0]["inputs"][0][1])
                # stage 0 on the page, forwarded to a probe: compare the activation itself
                activation = Activation(
                    request_id=i.to_bytes(16, "big"),
                    attempt=0,
                    deployment="d1",
                    stage=0,
                    route=(("web-1",), ("probe",)),
                    callback=f"{NS}/clients/check/result",
                    deadline_ms=int(time.time() * 1000) + 30_000,
                    tensors=(Tensor(input_name, sample),),
                )
                listener.publish(f"{NS}/stage/d1/0/web-1", encode(activation))
                forwarded = listener.wait(lambda t, m: t.endswith("/stage/d1/1/probe"), 30)
                mine = forwarded.tensors[0].array
                reference = litert_run(shard_bytes[meta[0]["sha256"]], [sample])[0]
                diffs_stage0.append(float(np.max(np.abs(mine - reference))))
                # both stages on the page against the unsplit model on ai-edge-litert
                chained = Activation(
                    request_id=(1000 + i).to_bytes(16, "big"),
                    attempt=0,
                    deployment="d1",
                    stage=0,
                    route=(("web-1",), ("web-1",)),
                    callback=f"{NS}/clients/check/result",
                    deadline_ms=int(time.time() * 1000) + 30_000,
                    tensors=(Tensor(input_name, sample),),
                )
                listener.publish(f"{NS}/stage/d1/0/web-1", encode(chained))
                result = listener.wait(lambda t, m: t.endswith("/result"), 30)
                if result.KIND != "result":
                    failures.append(f"request {i}: {result}")
                    continue
                logits = result.tensors[0].array
                expected = litert_run(full, [sample])[0]
                diffs_full.append(float(np.max(np.abs(logits - expected))))
                exact += int(np.array_equal(logits, expected))
                middle = litert_run(shard_bytes[meta[0]["sha256"]], [sample])[0]
                chain = litert_run(shard_bytes[meta[1]["sha256"]], [middle])[0]
                diffs_chain.append(float(np.max(np.abs(logits - chain))))
                ulps_chain.append(ulps(logits, chain))
                exact_chain += int(np.array_equal(logits, chain))
            rows.append(("tensor forwarded name", forwarded.tensors[0].name))
            if forwarded.tensors[0].name != middle_name:
                failures.append("the forwarded tensor lost its graph name")
            rows.append(("stage 0 max |diff| vs ai-edge-litert", f"{max(diffs_stage0):.3g}"))
            rows.append(("both stages max |diff| vs unsplit", f"{max(diffs_full):.3g}"))
            rows.append(("bit-exact answers vs unsplit", f"{exact} of {len(x)}"))
            rows.append(("both stages max |diff| vs same shards", f"{max(diffs_chain):.3g}"))
            rows.append(("bit-exact answers vs same shards", f"{exact_chain} of {len(x)}"))
            rows.append(("largest difference in float32 ulps", f"{max(ulps_chain)}"))
            with contextlib.suppress(PlaywrightTimeout):  # counted once the broker acknowledged it
                page.wait_for_function(f"window.splitmqAgent.served >= {len(x)}", timeout=10_000)
            view = page.evaluate("() => ({...window.splitmqAgent})")
            rows.append(("served / errors (page)", f"{view['served']} / {view['errors']}"))
            if view["served"] != len(x) or view["errors"]:
                failures.append(f"page counted {view['served']} served, {view['errors']} errors")
            if args.screenshot:
                page.screenshot(path=str(args.screenshot), full_page=True)
            page.close()
            offline = listener.wait(
                lambda t, m: isinstance(m, AgentStatus) and m.state == "offline", 30
            )
            rows.append(("after close", offline.state))
            # A page that dies without pagehide: the broker publishes its will.
            listener.subscribe(f"{NS}/agents/web-2/status")
            crashing = browser.new_page()
            crashing.goto(f"http://127.0.0.1:{http_port}/agent.html?id=web-2")
            listener.wait(lambda t, m: isinstance(m, AgentStatus) and m.agent_id == "web-2", 120)
            with contextlib.suppress(Exception):
                crashing.goto("chrome://crash", timeout=5_000)
            will = listener.wait(
                lambda t, m: isinstance(m, AgentStatus) and m.agent_id == "web-2", 90
            )
            rows.append(("after a renderer crash (the will)", will.state))
            if will.state != "offline":
                failures.append("no will after the crash")
            browser.close()
    finally:
        listener.client.loop_stop()
        server.shutdown()
        broker.terminate()
    return report(rows, failures, logs)


if __name__ == "__main__":
    sys.exit(main())
