"""``splitmq infer MODEL INPUT...``: run a deployed model on images or ``.npy`` files.

``splitmq infer --task TASK INPUT...`` names a task instead: the coordinator picks the
member and variant for each request (``--min-accuracy``, the budgets, ``--energy-level``
and ``--battery-pct``), and each row says which one served it.

Inputs are image files (resized to the model's input by the client; Pillow, extra
``client``), ``.npy`` arrays (``--batch``: one input per row of the first axis), taken
as the values the model reads (the input's shape, give or take a batch axis: never
resized), or directories of both. Requests are pipelined (``--max-in-flight``); each result prints
as a table row, in input order: the best classes, the latency, the attempts and the
agents that ran the stages. Every request is recorded with its attempts and trace in
the results database (SQLite, ``--db``), with the telemetry of the agents seen during
the run; ``--jsonl`` also exports the run as JSON lines. Exit status: 0 when every
input has a result, 1 when some failed, 2 on a setting or input error.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from splitmq.broker_options import add_broker_options, namespace, transport_config
from splitmq.errors import ConfigError, SplitMQError
from splitmq.wire import Battery, EnergyLevel

if TYPE_CHECKING:
    from splitmq.client.client import Client, InferenceResult
    from splitmq.client.errors import InferenceError
    from splitmq.client.inputs import Value
    from splitmq.client.results_db import ResultsDB


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``splitmq infer`` to the main command's subparsers (runs with ``args.run``)."""
    parser = subparsers.add_parser(
        "infer",
        help="run a deployed model on images or .npy files",
        description="Send each input through the fleet (retrying on fallbacks), print the "
        "top predictions and record every request with its trace.",
    )
    parser.add_argument(
        "model",
        nargs="?",
        metavar="MODEL",
        help="the model's name, as deployed (with --task: leave it out, the inputs follow)",
    )
    parser.add_argument("inputs", nargs="*", metavar="INPUT", help="image, .npy file or directory")
    add_broker_options(parser)
    add = parser.add_argument
    add("--client-id", help="this client's id (a topic level; default random)")
    add("--version", help="model version (default: any deployed; not with --task)")
    add("--max-latency-ms", type=float, help="plan constraint: predicted latency")
    add("--min-fidelity", type=float, help="plan constraint: variant fidelity (0-1)")
    add("--energy-j", type=float, help="plan constraint: energy per request (J)")
    add("--energy-level", choices=[level.value for level in EnergyLevel], default="balanced")
    add("--task", help="name a task instead of a model: the coordinator picks member and variant")
    add("--min-accuracy", type=float, help="plan constraint for a task: measured accuracy (0-1)")
    add(
        "--battery-pct",
        type=float,
        help="this client's battery (unplugged), sent with the plan requests: a low one "
        "moves a task's choice toward cheaper members",
    )
    add("--deadline-s", type=float, default=10.0, help="per request, retries included (10)")
    add("--attempts", type=int, default=3, help="sends per request, the first included (3)")
    add("--plan-timeout-s", type=float, default=5.0, help="wait for a plan this long (5)")
    add("--max-in-flight", type=int, default=8, help="requests pipelined at once (8)")
    add(
        "--hop-qos",
        type=int,
        choices=(0, 1),
        default=1,
        help="MQTT QoS of every hop: 1 at least once (the default), 0 at most once, lost "
        "hops retried by the attempt's timeout",
    )
    add("--top", type=int, default=3, help="classes shown per input (3)")
    add("--labels", type=Path, help="text file of class names, one a line")
    add("--pixel-range", default="0,1", help="image values LOW,HIGH after reading (0,1)")
    add("--batch", action="store_true", help=".npy files hold one input per first-axis row")
    add("--db", type=Path, help="results database (SQLite; default splitmq-results.db)")
    add("--no-db", action="store_true", help="record nothing")
    add("--jsonl", type=Path, help="also export this run's records as JSON lines")
    add(
        "--run",
        dest="run_label",
        metavar="LABEL",
        help="label of this run in the database (default infer-<time>)",
    )
    add(
        "--reference",
        type=Path,
        metavar="TFLITE",
        help="the unsplit model (.tflite of the served variant): compare every answer with "
        "it here, bit for bit or within the variant's tolerance, whichever fits",
    )
    add("--serve-stages", action="store_true", help="run an agent as this client (pinned stages)")
    add("--profile", default="host", help="device profile of that agent (host)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Load the inputs, connect, stream them, print the table; see the module docstring."""
    from splitmq.client.client import Client, ClientConfig
    from splitmq.client.inputs import load_inputs

    if args.task and args.version:
        raise ConfigError(
            f"--version pins one model's version, and task {args.task}'s members each have "
            "their own: name the member instead of --task, or leave --version out"
        )
    if not args.task and not args.model:
        raise ConfigError("name the model to run (or a task with --task), then the inputs")
    paths = [args.model, *args.inputs] if args.task and args.model else list(args.inputs)
    if not paths:
        where = "after --task TASK" if args.task else "after the model"
        raise ConfigError(f"no inputs: name images, .npy files or directories {where}")
    inputs = load_inputs(paths, value_range=_pixel_range(args.pixel_range), batch=args.batch)
    if not inputs:
        raise ConfigError("no inputs: the directories hold no images or .npy files")
    labels = _labels(args.labels)
    client_id = args.client_id or f"infer-{uuid.uuid4().hex[:8]}"
    config = ClientConfig(
        model=None if args.task else args.model,
        deadline_s=args.deadline_s,
        max_attempts=args.attempts,
        plan_timeout_s=args.plan_timeout_s,
        max_in_flight=args.max_in_flight,
        top_k=max(args.top, 1),
        hop_qos=args.hop_qos,
    )
    run_label = args.run_label or time.strftime("infer-%Y%m%d-%H%M%S")
    database = None if args.no_db else _open_database(args.db)
    agent = _agent_config(client_id, args.profile, namespace(args)) if args.serve_stages else None
    try:
        client = Client(
            transport_config(args, f"splitmq-client-{client_id}"),
            client_id,
            namespace=namespace(args),
            config=config,
            agent=agent,
            recorder=database.record if database else None,
            on_telemetry=database.record_telemetry if database else None,
        )
        with client:
            failed = infer_inputs(
                client,
                inputs,
                options=_options(args, run_label),
                top=args.top,
                labels=labels,
                served_by=bool(args.task),
                reference=args.reference,
            )
        if database is not None and args.jsonl:
            count = database.export_jsonl(args.jsonl, run=run_label)
            print(f"exported {count} records to {args.jsonl}")
    finally:
        if database is not None:
            database.close()
    if database is not None:
        print(f"recorded as run {run_label!r} in {database.path}")
    return 1 if failed else 0


def infer_inputs(
    client: Client,
    inputs: Sequence[tuple[str, Value]],
    *,
    options: dict[str, Any] | None = None,
    top: int = 3,
    labels: Sequence[str] = (),
    out: TextIO | None = None,
    served_by: bool = False,
    reference: Path | None = None,
) -> int:
    """Stream ``(label, array)`` inputs through ``client``, printing a row per result
    (with ``served_by``: the member and variant that served it, for a task), and with
    ``reference`` (the unsplit .tflite) how the answers compare with it.

    Returns how many failed.
    """
    out = out or sys.stdout
    check = None
    if reference is not None:
        from splitmq.client.equality import ReferenceRun

        try:
            check = ReferenceRun(reference.read_bytes())
        except OSError as error:
            raise ConfigError(f"cannot read the reference model {reference}: {error}") from None
    width = max(len("input"), *(len(name) for name, _ in inputs))
    columns = [f"top-{i + 1}" for i in range(top)]
    header = [f"{'input':<{width}}", *(f"{c:<16}" for c in columns), "latency_ms  attempts  route"]
    if served_by:
        header.insert(1, f"{'served by':<{SERVED_BY_WIDTH}}")
    print("  ".join(header), file=out, flush=True)
    latencies: list[float] = []
    members: Counter[str] = Counter()
    failed = 0
    items = client.stream((array for _, array in inputs), ordered=True, **(options or {}))
    for item in items:
        assert item.index is not None
        name = inputs[item.index][0]
        if isinstance(item, Exception):
            failed += 1
            print(f"{name:<{width}}  {_failure(item)}", file=out, flush=True)
            continue
        latencies.append(item.latency_ms)
        member = ""
        if served_by:
            members[f"{item.plan.model} {item.plan.variant}"] += 1
            member = f"{_served_by(item):<{SERVED_BY_WIDTH}}  "
        print(f"{name:<{width}}  {member}{_row(item, top, labels)}", file=out, flush=True)
        if check is not None:
            check.add(
                item.outputs,
                inputs[item.index][1],
                variant=item.plan.variant,
                stage_agents=[entry.agent_id for entry in item.trace],
                status_of=client.agent_status,
            )
    print(_summary(len(inputs), failed, latencies), file=out, flush=True)
    if members:
        served = ", ".join(f"{member} {count}" for member, count in members.most_common())
        print(f"served by {served}", file=out, flush=True)
    if check is not None:
        print("\n".join(check.lines()), file=out, flush=True)
    return failed


SERVED_BY_WIDTH = 30
"""The served-by column: a member's name, variant and accuracy."""


def _row(result: InferenceResult, top: int, labels: Sequence[str]) -> str:
    best = [f"{_label(c, labels)} ({score:.3f})" for c, score in result.top(top)]
    best += [""] * (top - len(best))
    route = " > ".join(entry.agent_id for entry in result.trace)
    cells = [*(f"{b:<16}" for b in best), f"{result.latency_ms:>10.1f}"]
    return "  ".join([*cells, f"{len(result.record.attempts):>8}", route])


def _served_by(result: InferenceResult) -> str:
    """The member and variant that served a task request, with its accuracy."""
    plan = result.plan
    accuracy = "" if plan.accuracy is None else f" ({plan.accuracy:.3f})"
    return f"{plan.model} {plan.variant}{accuracy}"


def _failure(error: InferenceError) -> str:
    tried = len(error.record.attempts)
    return f"failed ({error.code}) after {tried} attempt{'s' if tried != 1 else ''}: {error.reason}"


def _summary(total: int, failed: int, latencies: Iterable[float]) -> str:
    values = sorted(latencies)
    line = f"{total - failed} of {total} answered"
    if values:
        p95 = values[min(len(values) - 1, round(0.95 * (len(values) - 1)))]
        line += f"; latency p50 {statistics.median(values):.1f} ms, p95 {p95:.1f} ms"
    return line


def _label(index: int, labels: Sequence[str]) -> str:
    return labels[index] if 0 <= index < len(labels) else str(index)


def _labels(path: Path | None) -> list[str]:
    if path is None:
        return []
    try:
        return [line.strip() for line in path.read_text().splitlines()]
    except OSError as error:
        raise ConfigError(f"cannot read the labels file: {error}") from None


def _pixel_range(text: str) -> tuple[float, float]:
    try:
        low, high = (float(part) for part in text.split(","))
    except ValueError:
        raise ConfigError(f"--pixel-range {text!r} must be LOW,HIGH (e.g. 0,1 or 0,255)") from None
    return low, high


def _options(args: argparse.Namespace, run_label: str) -> dict[str, Any]:
    return {
        "version": args.version,
        "max_latency_ms": args.max_latency_ms,
        "min_fidelity": args.min_fidelity,
        "energy_j": args.energy_j,
        "energy_level": args.energy_level,
        "run": run_label,
        "task": args.task,
        "min_accuracy": args.min_accuracy,
        "client_battery": (
            None if args.battery_pct is None else Battery(pct=args.battery_pct, plugged=False)
        ),
    }


def _open_database(path: Path | None) -> ResultsDB:
    from splitmq.client.results_db import DEFAULT_PATH, ResultsDB

    return ResultsDB(path or DEFAULT_PATH)


def _agent_config(client_id: str, profile: str, topic_namespace: str) -> Any:
    from splitmq.agent import AgentConfig, load_profile

    try:
        return AgentConfig(
            agent_id=client_id, profile=load_profile(profile), namespace=topic_namespace
        )
    except (SplitMQError, ValueError) as error:
        raise ConfigError(f"cannot run the client's agent: {error}") from None
