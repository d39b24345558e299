"""Our MQTT client against paho-mqtt on the activation path, side by side in one run.

Four broker hops through a real Mosquitto on loopback carrying the sizes of a 3-stage
MobileNetV3Large request (input 602 kB, activations 126 and 88 kB, result 4.5 kB):
the sender publishes the input to hop 1; three relay processes each answer with the
next size on the next hop; the sender receives the last. QoS 1 everywhere, one
message in flight. Rounds alternate the two clients (the first rotates) and the
figure is the median of the per-round ratios.

    .venv/bin/python benchmarks/bench_transport.py [--rounds 8] [--messages 100]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _report import Row, percentile, report, rounds_median

from splitmq.mosquitto import Mosquitto, config_dir
from splitmq.transport import InboundMessage, MqttTransport, parse_broker_url
from splitmq.transport.paho_transport import PahoTransport

SIZES = (602_410, 125_909, 88_419, 4_500)
ENGINES: dict[str, type[MqttTransport] | type[PahoTransport]] = {
    "own": MqttTransport,
    "paho": PahoTransport,
}


def hop(engine: str, index: int) -> str:
    return f"bench/{engine}/hop{index}"  # each chain its own topics: both run at once


def relay(url: str, engine: str, index: int) -> None:
    """Answer each message on hop ``index`` with the next size on the next hop."""
    transport = ENGINES[engine](parse_broker_url(url))
    transport.start()
    answer = os.urandom(SIZES[index + 1])
    target = hop(engine, index + 1)

    def forward(message: InboundMessage) -> None:
        transport.publish(target, answer + message.payload[-4:], qos=1)

    transport.subscribe(hop(engine, index), forward)
    print("ready", flush=True)
    sys.stdin.read()  # until the parent closes our stdin
    transport.close()


class Chain:
    """Three relay processes and a sender, all on one engine."""

    def __init__(self, url: str, engine: str):
        self.relays = [
            subprocess.Popen(
                [sys.executable, __file__, "--relay", url, engine, str(index)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for index in range(3)
        ]
        for process in self.relays:
            assert process.stdout is not None
            if process.stdout.readline().strip() != "ready":
                raise SystemExit("a relay did not start")
        self.arrived = threading.Event()
        self.last: bytes | bytearray = b""
        self.sender = ENGINES[engine](parse_broker_url(url))
        self.sender.start()
        self.sender.subscribe(hop(engine, 3), self._on_last)
        self.first_hop = hop(engine, 0)
        self.payload = bytearray(os.urandom(SIZES[0]))

    def _on_last(self, message: InboundMessage) -> None:
        self.last = message.payload
        self.arrived.set()

    def measure(self, messages: int, warmup: int) -> list[float]:
        latencies = []
        for i in range(warmup + messages):
            tag = i.to_bytes(4, "big")
            self.payload[-4:] = tag
            self.arrived.clear()
            start = time.perf_counter()
            self.sender.publish(self.first_hop, bytes(self.payload), qos=1)
            if not self.arrived.wait(5):
                raise SystemExit(f"message {i} lost")
            elapsed = time.perf_counter() - start
            if len(self.last) != SIZES[-1] + 4 or self.last[-4:] != tag:
                raise SystemExit("the chain answered the wrong message")
            if i >= warmup:
                latencies.append(elapsed)
        return latencies

    def close(self) -> None:
        self.sender.close()
        for process in self.relays:
            if process.stdin:
                process.stdin.close()
            process.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--messages", type=int, default=100, help="per round and engine")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 2 rounds of 30")
    parser.add_argument("--relay", nargs=3, metavar=("URL", "ENGINE", "INDEX"))
    args = parser.parse_args()
    if args.relay:
        url, engine, index = args.relay
        relay(url, engine, int(index))
        return
    if args.quick:
        args.rounds, args.messages = 2, 30
    samples: dict[str, list[float]] = {name: [] for name in ENGINES}
    ratios = []
    with (
        tempfile.TemporaryDirectory() as workdir,
        Mosquitto(config_dir() / "dev.conf", Path(workdir)) as broker,
    ):
        chains = {name: Chain(broker.url(), name) for name in ENGINES}
        try:
            for round_index in range(args.rounds):
                order = list(ENGINES)[round_index % 2 :] + list(ENGINES)[: round_index % 2]
                medians = {}
                for name in order:
                    got = chains[name].measure(args.messages, warmup=10)
                    samples[name] += got
                    medians[name] = percentile(got, 50)
                ratios.append(medians["paho"] / medians["own"])
        finally:
            for chain in chains.values():
                chain.close()
    p50 = {name: percentile(values, 50) * 1e3 for name, values in samples.items()}
    p95 = {name: percentile(values, 95) * 1e3 for name, values in samples.items()}
    speedup = rounds_median(ratios)
    scenario = "transport"
    rows = [
        Row(
            scenario,
            "4 hops, 602/126/88/4.5 kB, own client p50 / p95",
            f"{p50['own']:.2f} / {p95['own']:.2f} ms",
        ),
        Row(
            scenario,
            "the same with paho-mqtt p50 / p95",
            f"{p50['paho']:.2f} / {p95['paho']:.2f} ms",
        ),
        Row(
            scenario,
            "paho / own (median of per-round ratios)",
            f"{speedup:.2f}x",
            "> 1x",
            speedup > 1,
            speedup,
        ),
    ]
    report(
        "our MQTT client vs paho-mqtt: four hops of a split request through Mosquitto",
        rows,
        {
            "rounds": args.rounds,
            "messages": args.messages,
            "p50_ms": p50,
            "p95_ms": p95,
            "ratio_paho_own": speedup,
            "per_round": ratios,
            "sizes": SIZES,
        },
    )


if __name__ == "__main__":
    main()
