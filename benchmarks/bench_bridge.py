"""The cost of a bridge crossing per hop: a site Mosquitto bridged to a central one.

Two Mosquitto processes on loopback, the site one bridged to the central one with
``broker-config/bridge.conf``. One hop is a publish and its delivery to a subscriber;
measured side by side, in interleaved rounds, for payloads of 1 kB and 100 kB:

- within the site (``stage/...`` on the site broker: a hop between two agents there);
- site -> central (``central/stage/...`` out of the site, remapped by the bridge: a hop
  from a site agent to a central one);
- central -> site (``sites/SITE/stage/...`` in: a hop from the central side to a site).

Printed as the median hop time and the ratio to a hop within the site.

    .venv/bin/python benchmarks/bench_bridge.py [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path

from _report import Row, report

from splitmq.mosquitto import Mosquitto, config_dir
from splitmq.transport import InboundMessage, MqttTransport, parse_broker_url
from splitmq.wire.topics import DEFAULT_NAMESPACE

SITE = "bench"
NS = DEFAULT_NAMESPACE


class Hop:
    """Publishes on one connection, times the delivery on another."""

    def __init__(self, sender: MqttTransport, receiver: MqttTransport, send: str, receive: str):
        self.sender = sender
        self.send_topic = send
        self.arrived = threading.Event()
        receiver.subscribe(receive, self._on_message, qos=1)

    def _on_message(self, _message: InboundMessage) -> None:
        self.arrived.set()

    def once_ms(self, payload: bytes) -> float:
        self.arrived.clear()
        started = time.perf_counter()
        self.sender.publish(self.send_topic, payload, qos=1)
        if not self.arrived.wait(10):
            raise SystemExit(f"no delivery on {self.send_topic} within 10 s")
        return (time.perf_counter() - started) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    args = parser.parse_args()
    rounds, per_round = (5, 20) if args.quick else (15, 40)
    workdir = Path(tempfile.mkdtemp(prefix="splitmq-bridge-"))
    central = Mosquitto(config_dir() / "dev.conf", workdir / "central").start()
    bridge = (config_dir() / "bridge.conf").read_text()
    bridge = bridge.replace("@SITE@", SITE).replace("@CENTRAL@", f"127.0.0.1:{central.port}")
    site_conf = workdir / "site.conf"
    site_conf.write_text(
        (config_dir() / "dev.conf").read_text() + "\n" + bridge.replace("@NS@", NS)
    )
    site = Mosquitto(site_conf, workdir / "site", files_dir=config_dir()).start()
    connections = []

    def connect(broker: Mosquitto) -> MqttTransport:
        transport = MqttTransport(parse_broker_url(broker.url()))
        transport.start()
        connections.append(transport)
        return transport

    try:
        site_a, site_b, central_c = connect(site), connect(site), connect(central)
        hops = {
            "within the site": Hop(site_a, site_b, f"{NS}/stage/d/1/b", f"{NS}/stage/d/1/b"),
            "site -> central": Hop(
                site_a, central_c, f"{NS}/central/stage/d/1/c", f"{NS}/stage/d/1/c"
            ),
            "central -> site": Hop(
                central_c, site_b, f"{NS}/sites/{SITE}/stage/d/1/b2", f"{NS}/stage/d/1/b2"
            ),
        }
        # The bridge subscribes at the central broker once connected: wait for it.
        deadline = time.monotonic() + 30
        while True:
            try:
                hops["central -> site"].arrived.clear()
                central_c.publish(hops["central -> site"].send_topic, b"warm-up", qos=1)
                if hops["central -> site"].arrived.wait(1.0):
                    break
            except Exception:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("the bridge did not come up")
        figures: dict[str, dict[str, float]] = {}
        for size in (1000, 100_000):
            payload = bytes(size)
            samples: dict[str, list[float]] = {name: [] for name in hops}
            for _ in range(rounds):  # interleaved: the machine's noise hits all alike
                for name, hop in hops.items():
                    times = [hop.once_ms(payload) for _ in range(per_round)]
                    samples[name].append(statistics.median(times))
            figures[f"{size}"] = {name: statistics.median(v) for name, v in samples.items()}
    finally:
        for transport in connections:
            transport.close()
        site.stop()
        central.stop()
    rows = []
    for label, medians in figures.items():
        local = medians["within the site"]
        for name, ms in medians.items():
            ratio = "" if name == "within the site" else f" ({ms / local:.2f}x)"
            rows.append(
                Row(
                    "bridge", f"{int(label) // 1000} kB hop {name}", f"{ms:.3f} ms{ratio}", value=ms
                )
            )
    report("bridge crossing per hop", rows, figures)


if __name__ == "__main__":
    main()
