"""``splitmq demo [--workdir DIR] [--requests N] [--keep-running] [--secure] ...``."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run a broker, a coordinator and three agents here, end to end",
        description="Start a broker (Mosquitto, else the embedded one), a coordinator and "
        "agents with the rpi4, phone and laptop profiles; convert and deploy the digits "
        "classifier and MobileNetV3Large; stream requests, kill an agent part way, print "
        "the KPIs and check the split answers against a single-device run.",
    )
    add = parser.add_argument
    add("--workdir", type=Path, default=Path("demo-run"), help="pool, logs, results (demo-run)")
    add("--requests", type=int, default=60, help="MobileNetV3Large frames (60; digits: 4x)")
    add("--no-kill", action="store_true", help="do not kill an agent mid-stream")
    add("--digits-only", action="store_true", help="skip MobileNetV3Large (fast)")
    add(
        "--task",
        action="store_true",
        help="also ask the task 'digits' (three classifiers of different sizes, trained "
        "once) as the client's battery falls: the coordinator picks the member",
    )
    add("--embedded-broker", action="store_true", help="the embedded broker, even with Mosquitto")
    add(
        "--keep-running",
        action="store_true",
        help="leave the fleet up at the end, until Ctrl-C, SIGTERM or SIGHUP",
    )
    add(
        "--secure",
        action="store_true",
        help="Mosquitto with TLS, passwords and per-role ACLs (broker-config/secure.conf); "
        "certificates and credentials made by the broker-config scripts, one user per process",
    )
    add(
        "--browser",
        action="store_true",
        help="add a headless Chromium 'phone' running the agent page (when Chromium is "
        "installed): splitmq web serves it",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import warnings

    from splitmq.demo.processes import SECURE_NEEDS_MOSQUITTO

    if args.secure and args.embedded_broker:
        print(f"splitmq demo: {SECURE_NEEDS_MOSQUITTO}", file=sys.stderr)
        return 2
    from splitmq.demo.scenario import DemoOptions, run_demo
    from splitmq.demo.stopping import Stopped, stop_on_signals

    # The demo speaks in its own lines; TensorFlow's and Keras's chatter stays out.
    logging.getLogger().setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    options = DemoOptions(
        workdir=args.workdir,
        requests=args.requests,
        kill=not args.no_kill,
        mobilenet=not args.digits_only,
        embedded=args.embedded_broker,
        keep_running=args.keep_running,
        secure=args.secure,
        browser=args.browser,
        task=args.task,
    )
    with stop_on_signals():
        try:
            return run_demo(options)
        except Stopped as stop:
            # The fleet's ``with`` blocks have stopped everything the demo started.
            print(f"splitmq demo: {stop}; everything it started is stopped", file=sys.stderr)
            return stop.exit_status
