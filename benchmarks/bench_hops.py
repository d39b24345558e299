"""Latency of a 1 kB message through three hops via a real Mosquitto on loopback.

The sender publishes to hop 1; two relay processes forward hop 1 -> 2 -> 3; the sender
receives hop 3: three broker traversals, four TCP connections, one message in flight.
Run twice in one go: with TCP_NODELAY (broker and clients, as splitmq ships) and
without, to show what Nagle's algorithm costs. Goal (issue 2): p50 under 2 ms.

    .venv/bin/python benchmarks/bench_hops.py [--messages 300]
"""

from __future__ import annotations

import argparse
import itertools
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _report import Row, percentile, report

from splitmq.mosquitto import Mosquitto, config_dir
from splitmq.transport import InboundMessage, MqttTransport, parse_broker_url

HOPS = ("bench/hop1", "bench/hop2", "bench/hop3")


def relay(url: str, source: str, target: str, nodelay: bool) -> None:
    """Forward every message on ``source`` to ``target`` (runs in a child process)."""
    transport = MqttTransport(parse_broker_url(url, tcp_nodelay=nodelay))
    transport.start()

    def forward(message: InboundMessage) -> None:
        transport.publish(target, message.payload, qos=1)

    transport.subscribe(source, forward)
    print("ready", flush=True)
    sys.stdin.read()  # until the parent closes our stdin
    transport.close()


def measure(conf: Path, nodelay: bool, messages: int) -> list[float]:
    with tempfile.TemporaryDirectory() as workdir, Mosquitto(conf, Path(workdir)) as broker:
        url = broker.url()
        relays = [
            subprocess.Popen(
                [sys.executable, __file__, "--relay", url, source, target, str(int(nodelay))],
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
            arrived = threading.Event()
            received: list[bytes | bytearray] = []

            def on_last_hop(message: InboundMessage) -> None:
                received.append(message.payload)
                arrived.set()

            with MqttTransport(parse_broker_url(url, tcp_nodelay=nodelay)) as sender:
                sender.subscribe(HOPS[-1], on_last_hop)
                latencies = []
                for i in range(messages + 20):
                    payload = i.to_bytes(4, "big") + os.urandom(1020)
                    arrived.clear()
                    start = time.perf_counter()
                    sender.publish(HOPS[0], payload, qos=1)
                    if not arrived.wait(5):
                        raise SystemExit(f"message {i} lost")
                    elapsed = time.perf_counter() - start
                    if received[-1] != payload:
                        raise SystemExit("a relay changed the payload")
                    if i >= 20:  # warm-up excluded
                        latencies.append(elapsed)
                return latencies
        finally:
            for process in relays:
                if process.stdin:
                    process.stdin.close()
                process.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--quick", action="store_true", help="a smoke run: 60 messages")
    parser.add_argument("--relay", nargs=4, metavar=("URL", "SOURCE", "TARGET", "NODELAY"))
    args = parser.parse_args()
    if args.quick:
        args.messages = 60
    if args.relay:
        url, source, target, nodelay = args.relay
        relay(url, source, target, nodelay == "1")
        return
    dev = config_dir() / "dev.conf"
    with tempfile.TemporaryDirectory() as tmp:
        nagle_conf = Path(tmp) / "nagle.conf"
        nagle_conf.write_text(
            dev.read_text().replace("set_tcp_nodelay true", "set_tcp_nodelay false")
        )
        fast = measure(dev, nodelay=True, messages=args.messages)
        slow = measure(nagle_conf, nodelay=False, messages=max(30, args.messages // 10))
    p50, p95 = percentile(fast, 50) * 1e3, percentile(fast, 95) * 1e3
    n50 = percentile(slow, 50) * 1e3
    report(
        "1 kB message through three broker hops (QoS 1, loopback)",
        [
            Row(
                "wire",
                "1 kB, 3 hops: p50 / p95 with TCP_NODELAY",
                f"{p50:.2f} / {p95:.2f} ms",
                "p50 < 2 ms",
                p50 < 2.0,
                p50,
            ),
            Row(
                "wire",
                "1 kB, 3 hops: p50 with Nagle (for contrast)",
                f"{n50:.2f} ms ({n50 / p50:.0f}x)",
            ),
        ],
        {
            "messages": len(fast),
            "p50_ms": p50,
            "p95_ms": p95,
            "p50_nagle_ms": n50,
            "goal_p50_ms": 2.0,
        },
    )


if __name__ == "__main__":
    main()
