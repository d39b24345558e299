"""``python -m splitmq.embedded_broker --port N``: run the broker until SIGINT or SIGTERM.

Prints ``embedded MQTT broker listening on mqtt://HOST:PORT`` on stdout once it
accepts connections (with ``--port 0``, that line tells the port).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from splitmq.embedded_broker.model import DEFAULT_MAX_PACKET_BYTES, BrokerConfig
from splitmq.embedded_broker.server import Broker
from splitmq.errors import SplitMQError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m splitmq.embedded_broker",
        description=(
            "A pure-Python MQTT 3.1.1/5.0 broker for machines without Mosquitto. It has NO "
            "authentication, NO ACL and NO TLS: anyone who reaches it may read and publish "
            "every topic, so it listens on loopback only unless --allow-remote is given. "
            "For a network, run Mosquitto with broker-config/secure.conf."
        ),
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (loopback unless --allow-remote)"
    )
    parser.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a non-loopback --host: every client on the network gets every topic",
    )
    parser.add_argument("--port", type=int, default=1883, help="TCP port (0: any free one)")
    parser.add_argument(
        "--max-packet-bytes", type=int, default=DEFAULT_MAX_PACKET_BYTES, help="largest packet"
    )
    parser.add_argument(
        "--max-queued-messages", type=int, default=10_000, help="queue per slow or away client"
    )
    parser.add_argument(
        "--max-queued-bytes",
        type=int,
        default=256 * 1024 * 1024,
        help="the same queue limit in payload bytes",
    )
    parser.add_argument(
        "--max-keepalive",
        type=int,
        default=None,
        help="the longest keep-alive (s) MQTT 5 clients may use (Server Keep Alive)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log every connection")
    return parser


async def serve(config: BrokerConfig) -> None:
    """Run a broker until SIGINT or SIGTERM, then disconnect its clients."""
    broker = Broker(config)
    await broker.start()
    print(f"embedded MQTT broker listening on {broker.url}", flush=True)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    try:
        await stopping.wait()
    finally:
        await broker.stop()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="embedded-broker: %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    try:
        config = BrokerConfig(
            host=args.host,
            port=args.port,
            max_packet_bytes=args.max_packet_bytes,
            max_queued_messages=args.max_queued_messages,
            max_queued_bytes=args.max_queued_bytes,
            max_keepalive_s=args.max_keepalive,
            allow_remote=args.allow_remote,
        )
        asyncio.run(serve(config))
    except SplitMQError as error:
        print(f"embedded broker: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
