"""Latency of a 1 kB message through three hops: the embedded broker next to Mosquitto.

The same three-hop chain as bench_hops.py (the sender publishes to hop 1, two relay
processes forward 1 -> 2 -> 3, the sender receives hop 3; QoS 1, TCP_NODELAY, one
message in flight), run in one go against:

- Mosquitto from broker-config/dev.conf (skipped when it is not installed);
- the embedded broker in a process of its own (``python -m splitmq.embedded_broker``),
  as ``splitmq demo`` starts it;
- the embedded broker in a thread of the sender's process (``EmbeddedBroker``), which
  shares the sender's interpreter lock.

    .venv/bin/python benchmarks/bench_embedded_broker.py [--messages 300]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from _report import Row, percentile, report

from splitmq import processes
from splitmq.embedded_broker import EmbeddedBroker
from splitmq.errors import ConfigError
from splitmq.mosquitto import Mosquitto, config_dir, mosquitto_binary
from splitmq.transport import InboundMessage, MqttTransport, parse_broker_url

HOPS = ("bench/hop1", "bench/hop2", "bench/hop3")
WARMUP = 20


def relay(url: str, source: str, target: str) -> None:
    """Forward every message on ``source`` to ``target`` (runs in a child process)."""
    transport = MqttTransport(parse_broker_url(url))
    transport.start()

    def forward(message: InboundMessage) -> None:
        transport.publish(target, message.payload, qos=1)

    transport.subscribe(source, forward)
    print("ready", flush=True)
    sys.stdin.read()  # until the parent closes our stdin
    transport.close()


@contextlib.contextmanager
def mosquitto() -> Iterator[str]:
    with (
        tempfile.TemporaryDirectory() as workdir,
        Mosquitto(config_dir() / "dev.conf", Path(workdir)) as broker,
    ):
        yield broker.url()


@contextlib.contextmanager
def embedded_process() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="bench-embedded-") as workdir:
        process, url = processes.start_embedded_broker(Path(workdir) / "broker.log")
        try:
            yield url
        finally:
            processes.stop([process])


@contextlib.contextmanager
def embedded_thread() -> Iterator[str]:
    with EmbeddedBroker() as broker:
        yield broker.url


def measure(url: str, messages: int) -> list[float]:
    """Seconds per three-hop round trip, warm-up excluded."""
    relays = [
        subprocess.Popen(
            [sys.executable, __file__, "--relay", url, source, target],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for source, target in itertools.pairwise(HOPS)
    ]
    try:
        for process in relays:
            assert process.stdout is not None
            if process.stdout.readline().strip() != "ready":
                raise SystemExit("a relay did not start")
        return _round_trips(url, messages)
    finally:
        for process in relays:
            if process.stdin:
                process.stdin.close()
            process.wait(10)


def _round_trips(url: str, messages: int) -> list[float]:
    arrived = threading.Event()
    received: list[bytes | bytearray] = []

    def on_last_hop(message: InboundMessage) -> None:
        received.append(message.payload)
        arrived.set()

    with MqttTransport(parse_broker_url(url)) as sender:
        sender.subscribe(HOPS[-1], on_last_hop)
        latencies = []
        for i in range(messages + WARMUP):
            payload = i.to_bytes(4, "big") + os.urandom(1020)
            arrived.clear()
            start = time.perf_counter()
            sender.publish(HOPS[0], payload, qos=1)
            if not arrived.wait(5):
                raise SystemExit(f"message {i} lost")
            elapsed = time.perf_counter() - start
            if received[-1] != payload:
                raise SystemExit("a relay changed the payload")
            if i >= WARMUP:
                latencies.append(elapsed)
        return latencies


def mosquitto_installed() -> bool:
    try:
        mosquitto_binary()
    except ConfigError:
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--quick", action="store_true", help="a smoke run: 60 messages")
    parser.add_argument("--relay", nargs=3, metavar=("URL", "SOURCE", "TARGET"))
    args = parser.parse_args()
    if args.quick:
        args.messages = 60
    if args.relay:
        relay(*args.relay)
        return
    brokers = {
        "mosquitto": mosquitto,
        "embedded, own process": embedded_process,
        "embedded, thread": embedded_thread,
    }
    if not mosquitto_installed():
        print("mosquitto is not installed: measuring the embedded broker only")
        del brokers["mosquitto"]
    rows: list[Row] = []
    figures: dict[str, object] = {"messages": args.messages}
    for name, start in brokers.items():
        with start() as url:
            latencies = measure(url, args.messages)
        p50, p95 = percentile(latencies, 50) * 1e3, percentile(latencies, 95) * 1e3
        rows.append(
            Row(
                "broker",
                f"1 kB, 3 hops, {name}: p50 / p95",
                f"{p50:.2f} / {p95:.2f} ms",
                "p50 < 2 ms",
                p50 < 2.0,
                p50,
            )
        )
        key = name.replace(", ", "_").replace(" ", "_")
        figures[f"{key}_p50_ms"] = p50
        figures[f"{key}_p95_ms"] = p95
    report("1 kB message through three broker hops (QoS 1, loopback)", rows, figures)


if __name__ == "__main__":
    main()
