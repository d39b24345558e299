"""``splitmq coordinator``, ``splitmq deploy`` and ``splitmq fleet``."""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from splitmq.broker_options import add_broker_options, namespace, transport_config
from splitmq.errors import ConfigError, SplitMQError
from splitmq.stop_signals import StopSignals

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from splitmq.coordinator.service import CoordinatorConfig
    from splitmq.coordinator.task_choice import TaskChoiceConfig
    from splitmq.wire import DeployRequest

    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]


def add_parsers(subparsers: Subparsers) -> None:
    _add_coordinator(subparsers)
    _add_deploy(subparsers)
    _add_fleet(subparsers)


# -- splitmq coordinator ---------------------------------------------------------------------


def _add_coordinator(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "coordinator",
        help="run the coordinator: registry, model pool, deployer, planner",
        description="Keep the fleet registry, serve the model pool, deploy models and "
        "answer plan requests. State lives in retained topics: restart it at will.",
    )
    add_broker_options(parser)
    parser.add_argument("--pool", type=Path, default=Path("pool"), help="model pool directory")
    parser.add_argument("--id", default="coordinator", help="issuer id the agents obey")
    parser.add_argument(
        "--no-heal", action="store_true", help="do not re-deploy stages of lost agents"
    )
    parser.add_argument(
        "--no-lead",
        action="store_true",
        help="never take the leader lease: only answer plan requests",
    )
    parser.add_argument(
        "--lease-period",
        type=float,
        help="seconds between renewals of the leader lease (1: the telemetry period); "
        "the others take over after 3 periods of silence",
    )
    parser.add_argument("--battery-floor", type=float, help="percent; agents below are left out")
    parser.add_argument(
        "--bridge-ms",
        type=float,
        help="ms a hop adds per bridge it crosses between a site broker and the central "
        "one, for the planner (0.08: measured on loopback; between sites, their link)",
    )
    parser.add_argument(
        "--watch-period", type=float, help="seconds between checks for stages to heal (1)"
    )
    parser.add_argument(
        "--ready-timeout", type=float, help="seconds to wait for agents to load a shard (60)"
    )
    parser.add_argument(
        "--task-battery-levels",
        metavar="LOW,CRITICAL",
        help="percent: a task request from an unplugged client below LOW is planned one "
        "energy level cheaper (performance as balanced, balanced as saver), below CRITICAL "
        "as saver (default 50,20)",
    )
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    from splitmq.web.cli import add_web_options

    add_web_options(parser, port_option="--web")
    parser.set_defaults(run=run_coordinator)


def run_coordinator(args: argparse.Namespace) -> int:
    from splitmq.coordinator.lease import lease_will
    from splitmq.coordinator.service import Coordinator
    from splitmq.transport import MqttTransport

    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # Signals first: a SIGTERM right after start still stops cleanly.
    with StopSignals() as signals:
        try:
            config = coordinator_config(args)
            client_id = f"splitmq-coordinator-{args.id}-{uuid.uuid4().hex[:6]}"
            transport = MqttTransport(
                transport_config(args, client_id),
                will=lease_will(client_id, config.lease, config.namespace),
            )
            coordinator = Coordinator(transport, args.pool, config)
            coordinator.start()
            web = None
            if args.web is not None:
                from splitmq.web.cli import start_server, web_config

                web_settings = web_config(args, args.web, f"splitmq-web-{args.id}", args.id)
                web = start_server(web_settings, qr=not args.no_qr)
        except SplitMQError as error:
            print(f"splitmq coordinator: error: {error}", file=sys.stderr, flush=True)
            return 2
        signals.wait()
        if web is not None:  # a second signal meanwhile does not cut the stop short
            web.stop()
        coordinator.stop()
    return 0


def coordinator_config(args: argparse.Namespace) -> CoordinatorConfig:
    """The coordinator's settings from ``splitmq coordinator``'s options."""
    from dataclasses import replace

    from splitmq.coordinator.service import CoordinatorConfig

    config = CoordinatorConfig(
        coordinator_id=args.id, namespace=namespace(args), heal=not args.no_heal
    )
    if args.battery_floor is not None:
        planner = replace(config.deployer.planner, battery_floor_pct=args.battery_floor)
        config = replace(config, deployer=replace(config.deployer, planner=planner))
    if args.bridge_ms is not None:
        planner = replace(config.deployer.planner, bridge_ms=args.bridge_ms)
        config = replace(config, deployer=replace(config.deployer, planner=planner))
    if args.watch_period is not None:
        config = replace(config, watch_period_s=args.watch_period)
    if args.ready_timeout is not None:
        deployer = replace(config.deployer, ready_timeout_s=args.ready_timeout)
        config = replace(config, deployer=deployer)
    lease = replace(config.lease, candidate=not args.no_lead)
    if args.lease_period is not None:
        lease = replace(lease, period_s=args.lease_period)
    config = replace(config, lease=lease)
    if args.task_battery_levels is not None:
        config = replace(config, task_choice=task_battery_levels(args.task_battery_levels))
    return config


def task_battery_levels(text: str) -> TaskChoiceConfig:
    """``--task-battery-levels LOW,CRITICAL`` as a :class:`TaskChoiceConfig`."""
    from splitmq.coordinator.task_choice import TaskChoiceConfig

    try:
        low, critical = (float(part) for part in text.split(","))
    except ValueError:
        raise ConfigError(
            f"--task-battery-levels {text!r} must be two percentages LOW,CRITICAL (e.g. 50,20)"
        ) from None
    return TaskChoiceConfig(low_battery_pct=low, critical_battery_pct=critical)


# -- splitmq deploy --------------------------------------------------------------------------


def _add_deploy(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "deploy",
        help="deploy a model over the fleet (or roll back, or retire it)",
        description="Ask the coordinator to partition a model over the online agents, load "
        "the shards and publish the deployment. Deploying an earlier --version rolls back.",
    )
    add_broker_options(parser)
    parser.add_argument(
        "model",
        nargs="*",
        help="the model's name in the pool (with --task: the members to deploy)",
    )
    parser.add_argument("--version", help="pool version (default: the latest)")
    parser.add_argument("--variant", help="float32 (default), float16 or int8")
    parser.add_argument(
        "--task",
        help="deploy the models named as members of this task, side by side, each "
        "partitioned over the fleet (gates apply per member)",
    )
    parser.add_argument(
        "--variants",
        help="with --task: comma-separated variants of every member (default: --variant, "
        "or float32; with --retire: every variant)",
    )
    parser.add_argument(
        "--pool",
        type=Path,
        help="with --task and no member named: deploy every member found in this pool",
    )
    parser.add_argument("--stages", default="auto", help="number of stages, or auto")
    parser.add_argument("--replicas", type=int, default=1, help="agents per stage")
    parser.add_argument(
        "--objective", choices=["latency", "throughput", "energy"], default="latency"
    )
    parser.add_argument(
        "--plans",
        choices=["chain", "parallel", "auto"],
        default="chain",
        help="placements to consider: a chain (Plan 1), a parallel section's branches on "
        "agents of their own (Plan 2), or whichever the objective prefers",
    )
    parser.add_argument("--pin-first", metavar="AGENT", help="this agent runs the first stage")
    parser.add_argument("--pin-last", metavar="AGENT", help="this agent runs the last stage")
    parser.add_argument("--max-latency-ms", type=float, help="gate: refuse if predicted above")
    parser.add_argument("--max-shard-mb", type=float, help="gate: largest shard per device")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait")
    parser.add_argument("--retire", action="store_true", help="retire the model's deployments")
    parser.add_argument("--id", default="", help="operator id (default: a fresh one)")
    parser.set_defaults(run=run_deploy)


def run_deploy(args: argparse.Namespace) -> int:
    try:
        stages = 0 if args.stages == "auto" else int(args.stages)
    except ValueError:
        print(
            f"splitmq deploy: error: --stages must be a number or auto, not {args.stages!r}",
            file=sys.stderr,
        )
        return 2
    operator = args.id or f"operator-{uuid.uuid4().hex[:8]}"
    if args.task is not None:
        return _deploy_task(args, operator, stages)
    if len(args.model) != 1:
        print("splitmq deploy: error: name one model (or a task with --task)", file=sys.stderr)
        return 2
    request = _deploy_request(
        args, operator, args.model[0], args.variant, stages, version=args.version
    )
    try:
        reply = request_deployment(args, request, args.timeout)
    except SplitMQError as error:
        print(f"splitmq deploy: error: {error}", file=sys.stderr)
        return 2
    if not reply.ok:
        print(f"splitmq deploy: refused: {reply.message}", file=sys.stderr)
        return 1
    print(reply.message)
    return 0


def _deploy_request(
    args: argparse.Namespace,
    operator: str,
    model: str,
    variant: str | None,
    stages: int,
    *,
    version: str | None = None,
    task: str | None = None,
) -> DeployRequest:
    """The deploy request the command line asks for, of ``model`` (a task's member too)."""
    from splitmq.wire import DeployRequest, Objective, PlanShape

    return DeployRequest(
        request_id=uuid.uuid4().hex,
        client_id=operator,
        model=model,
        version=version,
        variant=variant,
        stages=stages,
        replicas=args.replicas,
        objective=Objective(args.objective),
        pin_first=args.pin_first,
        pin_last=args.pin_last,
        max_latency_ms=args.max_latency_ms,
        max_shard_bytes=int(args.max_shard_mb * 1e6) if args.max_shard_mb else None,
        ready_timeout_s=max(1.0, args.timeout - 5.0),
        retire=args.retire,
        plans=None if args.plans == "chain" else PlanShape(args.plans),
        task=task,
    )


def _deploy_task(args: argparse.Namespace, operator: str, stages: int) -> int:
    """Deploy every member named (each variant asked for) as a member of ``args.task``:
    one request each, in turn; a table says how each went."""
    from splitmq.tables import format_table

    if args.version is not None:
        print(
            f"splitmq deploy: error: --version names one model's version, and task "
            f"{args.task}'s members each have their own: deploy the member alone with "
            "--version, or leave it out (each member's latest)",
            file=sys.stderr,
        )
        return 2
    members = list(args.model)
    if not members and args.pool is not None:
        from splitmq.coordinator.model_pool import ModelPool

        members = [entry.name for entry in ModelPool(args.pool).task_members(args.task)]
    if not members:
        print(
            f"splitmq deploy: error: name the members of task {args.task} to deploy "
            "(or --pool DIR to deploy every member found there)",
            file=sys.stderr,
        )
        return 2
    asked = args.variants or args.variant
    variants: list[str | None] = [v.strip() for v in (asked or "float32").split(",") if v.strip()]
    if args.retire and not asked:
        variants = [None]  # every deployed variant of each member
    rows = []
    details: list[str] = []
    refused = 0
    for member in members:
        for variant in variants:
            request = _deploy_request(args, operator, member, variant, stages, task=args.task)
            try:
                reply = request_deployment(args, request, args.timeout)
            except SplitMQError as error:
                print(f"splitmq deploy: error: {error}", file=sys.stderr)
                return 2
            refused += not reply.ok
            predicted = reply.predicted_latency_ms
            first, _, rest = reply.message.partition("\n")
            rows.append(
                [
                    member,
                    variant or "all",
                    reply.deployment or "-",
                    "-" if predicted is None else f"{predicted:.2f}",
                    ("ok: " if reply.ok else "refused: ") + first,
                ]
            )
            if not reply.ok and rest.strip():
                details.append(f"{member} {variant or 'all'} refused: {reply.message}")
    done = "retired" if args.retire else "deployed"
    print(f"task {args.task}: {len(rows) - refused} of {len(rows)} {done}")
    headers = ["member", "variant", "deployment", "predicted ms", "outcome"]
    print(format_table(headers, rows, left=(0, 1, 2, 4)))
    for detail in details:
        print(f"\n{detail}")
    if not args.retire and refused < len(rows):
        print(
            f"\n`splitmq fleet` shows where each member runs; ask the task with "
            f"`splitmq infer --task {args.task} INPUT...`"
        )
    return 1 if refused else 0


def request_deployment(args: argparse.Namespace, request: Any, timeout_s: float) -> Any:
    """Publish ``request`` on the control topic and wait for the coordinator's reply."""
    from splitmq.transport import MqttTransport
    from splitmq.wire import DeployReply
    from splitmq.wire.topics import DEPLOY_REPLIES, DEPLOY_REQUESTS

    ns = namespace(args)
    replies: list[DeployReply] = []
    arrived = threading.Event()

    def on_reply(message: Any) -> None:
        reply = DEPLOY_REPLIES.decode(message.payload)
        if reply.request_id == request.request_id:
            replies.append(reply)
            arrived.set()

    with MqttTransport(transport_config(args, f"splitmq-{request.client_id}")) as transport:
        transport.subscribe(DEPLOY_REPLIES.name(ns, client=request.client_id), on_reply)
        DEPLOY_REQUESTS.publish(transport, request, ns).wait(10.0)
        if not arrived.wait(timeout_s):
            raise ConfigError(
                f"no answer from a coordinator within {timeout_s:.0f} s: is `splitmq "
                "coordinator` running on this broker (and this namespace)?"
            )
    return replies[0]


# -- splitmq fleet ---------------------------------------------------------------------------


def _add_fleet(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "fleet",
        help="show the agents: battery, load, speed, link, stages",
        description="Print the fleet as a table, from the agents' retained status and telemetry.",
    )
    add_broker_options(parser)
    parser.add_argument("--watch", action="store_true", help="keep the table current")
    parser.add_argument("--period", type=float, default=1.0, help="seconds between redraws")
    parser.add_argument("--wait", type=float, default=1.5, help="seconds to gather at first")
    parser.set_defaults(run=run_fleet)


def run_fleet(args: argparse.Namespace) -> int:
    from splitmq.coordinator.fleet_table import FleetWatcher, fleet_table
    from splitmq.transport import MqttTransport

    try:
        transport = MqttTransport(transport_config(args, f"splitmq-fleet-{uuid.uuid4().hex[:8]}"))
        watcher = FleetWatcher(transport, namespace(args))
        watcher.start()
    except SplitMQError as error:
        print(f"splitmq fleet: error: {error}", file=sys.stderr)
        return 2
    try:
        time.sleep(args.wait)
        while True:
            table = fleet_table(watcher.registry, watcher.deployments())
            if args.watch:
                print("\x1b[2J\x1b[H", end="")
            print(table, flush=True)
            if not args.watch:
                return 0
            time.sleep(args.period)
    except KeyboardInterrupt:
        return 0
    finally:
        transport.close()
