"""Where a split request's time goes, step by step, in every process it crosses.

The split of ``bench_split`` (MobileNetV3Large float32 224x224, 3 stages on 3 agent
processes, a real Mosquitto on loopback, one request in flight) is run with step probes
in every process (``_steps/sitecustomize.py``: the entry and exit of the functions a
request goes through, on the one monotonic clock of the machine). Each step is quoted
as its median over the requests: what the client does before its publish, the input's
publish, each broker transfer (a publish's end to the next process's read of it), and
in each agent its network thread (read to queued), the hand-off to the stage's worker,
the activation's decode, the checks before the invoke, the invoke, the next message's
encode and its publish; then the client's decode and bookkeeping of the result, and
the wake of ``infer``'s caller.

The probes cost about a microsecond each, run cold: the steps show where the time goes
(splitmq's own work is what is not invoke, publish or transfer), the end-to-end figures
of ``bench_split`` are measured without them. No goal is asserted here. The probed run
is pure Python (``SPLITMQ_PURE=1``): a probe wraps a Python function, and a compiled
module's functions call each other without looking them up (``splitmq/compiled.py``).

    .venv/bin/python benchmarks/bench_steps.py [--quick] [--requests 400]
"""

from __future__ import annotations

import argparse
import importlib
import os
import statistics
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

from _report import Row, report

HERE = Path(__file__).resolve().parent
AGENTS = ("agent-1", "agent-2", "agent-3")
Events = list[tuple[int, str]]


def run_probed(requests: int, directory: Path) -> None:
    """This script again, as the probed child that runs the fleet and the requests."""
    environment = dict(os.environ, SPLITMQ_STEPS=str(directory), SPLITMQ_PURE="1")
    paths = [str(HERE / "_steps"), environment.get("PYTHONPATH", "")]
    environment["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    command = [sys.executable, __file__, "--child", "--requests", str(requests)]
    subprocess.run(command, env=environment, check=True)


def child(requests: int) -> None:
    """Deploy the split and run ``requests`` requests between two marks (probed)."""
    probes = importlib.import_module("sitecustomize")  # the probes, from _steps
    from _fleet import MODEL, AgentSpec, fleet, image, mobilenet

    from splitmq.client import Client, ClientConfig

    x = image(mobilenet())
    with fleet([AgentSpec(agent_id, "host", 1) for agent_id in AGENTS]) as running:
        running.deploy(stages=3, objective="throughput", expect_agents=AGENTS)
        with Client(running.url, config=ClientConfig(model=MODEL, deadline_s=30.0)) as client:
            for _ in range(30):  # warm-up: plans, layouts, templates
                client.infer(x)
            probes.mark("start")
            for _ in range(requests):
                client.infer(x)
            probes.mark("end")


def read_steps(directory: Path) -> tuple[Events, dict[str, Events]]:
    """The client's events and each agent's, by agent id."""
    client: Events = []
    agents: dict[str, Events] = {}
    for path in directory.glob("*.steps"):
        command, *lines = path.read_text().splitlines()
        events = [(int(at), name) for at, name in (line.split() for line in lines)]
        if "--child" in command:
            client = events
        elif "--id" in command:
            agents[command.split("--id ")[1].split()[0]] = events
    return client, agents


def first(events: Events, name: str, after: int = 0) -> int | None:
    return next((at for at, step in events if step == name and at >= after), None)


def last(events: Events, name: str, before: int) -> int | None:
    found = [at for at, step in events if step == name and at <= before]
    return found[-1] if found else None


def steps(client: Events, agents: dict[str, Events]) -> dict[str, list[float]]:
    """Each step's durations (us) over the requests between the marks."""
    start, end = first(client, "start"), first(client, "end")
    assert start is not None and end is not None, "the client's marks are missing"
    found: dict[str, list[float]] = defaultdict(list)
    windows: list[Events] = []
    for at, name in client:
        if start <= at <= end and name == "infer>":
            windows.append([])
        if windows and start <= at <= end:
            windows[-1].append((at, name))
    for window in windows:
        if window[-1][1] != "infer<":
            continue
        times = _request(window, agents)
        if times is not None:
            for step, us in times.items():
                found[step].append(us)
    return found


def _request(window: Events, agents: dict[str, Events]) -> dict[str, float] | None:
    """One request's steps, or None when a probe is missing from it."""
    begin, finish = window[0][0], window[-1][0]
    published, sent = first(window, "publish>"), first(window, "publish<")
    answer, answered = first(window, "answer>"), first(window, "answer<")
    if None in (published, sent, answer, answered):
        return None
    assert published and sent and answer and answered
    arrived = last(window, "read<", answer)
    stages = []
    for events in agents.values():
        inside = [(at, name) for at, name in events if begin <= at <= finish]
        process = first(inside, "process>")
        if process is not None:
            stages.append((process, inside))
    stages.sort()
    times = {"client: infer to its publish": published - begin, "client: publish": sent - published}
    previous = sent
    for number, (process, inside) in enumerate(stages, 1):
        queued = last(inside, "enqueue>", process)
        found = {
            "read": last(inside, "read<", queued) if queued else None,
            "enqueued": last(inside, "enqueue<", process),
            "decoded": first(inside, "decode<", process),
            "invoke": first(inside, "invoke>", process),
            "invoked": first(inside, "invoke<", process),
            "encode": first(inside, "encode>", process),
            "encoded": first(inside, "encode<", process),
            "publish": first(inside, "publish>", process),
            "out": first(inside, "publish<", process),
        }
        if arrived is None or any(at is None for at in found.values()):
            return None
        at = {name: int(value or 0) for name, value in found.items()}
        name = f"stage {number - 1}"
        times[f"{name}: transfer to its read"] = at["read"] - previous
        times[f"{name}: network thread, read to queued"] = at["enqueued"] - at["read"]
        times[f"{name}: hand-off to the worker"] = process - at["enqueued"]
        times[f"{name}: decode"] = at["decoded"] - process
        times[f"{name}: checks to invoke"] = at["invoke"] - at["decoded"]
        times[f"{name}: invoke"] = at["invoked"] - at["invoke"]
        times[f"{name}: invoke to encode"] = at["encode"] - at["invoked"]
        times[f"{name}: encode"] = at["encoded"] - at["encode"]
        times[f"{name}: encode to publish"] = at["publish"] - at["encoded"]
        times[f"{name}: publish"] = at["out"] - at["publish"]
        previous = at["out"]
    assert arrived is not None
    times["result: transfer to the client's read"] = arrived - previous
    times["client: result read to answered"] = answered - arrived
    times["client: caller wakes, infer returns"] = finish - answered
    times["request"] = finish - begin
    return {step: ns / 1000.0 for step, ns in times.items()}


def _own(step: str) -> bool:
    """Whether ``step`` is splitmq's own work: not an invoke, a publish or a transfer."""
    return step != "request" and not step.endswith(
        ("invoke", "publish", "transfer to its read", "transfer to the client's read")
    )


def rows(found: dict[str, list[float]]) -> list[Row]:
    """One row per step; a stage's steps in one row, the stages' medians side by side."""
    p50 = {step: statistics.median(durations) for step, durations in found.items()}
    table: list[Row] = []
    by_kind: dict[str, list[float]] = defaultdict(list)
    for step, value in p50.items():
        if step.startswith("stage "):
            by_kind[step.split(": ", 1)[1]].append(value)
    for step, value in p50.items():
        if step.startswith("stage "):
            kind = step.split(": ", 1)[1]
            if step.startswith("stage 0: "):  # the stages' row, where the first one is
                values = by_kind[kind]
                text = " / ".join(f"{v:.0f}" for v in values) + " us"
                table.append(
                    Row("steps", f"agents: {kind} (stages in turn)", text, value=max(values))
                )
        elif step != "request":
            table.append(Row("steps", step, f"{value:.0f} us", value=value))
    own = sum(value for step, value in p50.items() if _own(step))
    count = len(found.get("request", []))
    table.append(Row("steps", "request, with the probes", f"{p50['request'] / 1000:.2f} ms"))
    table.append(
        Row(
            "steps",
            "splitmq's own steps, summed (all but invokes, publishes and transfers)",
            f"{own / 1000:.2f} ms over {count} requests",
            value=own / 1000,
        )
    )
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="60 requests")
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    requests = 60 if args.quick else args.requests
    if args.child:
        child(requests)
        return
    with tempfile.TemporaryDirectory(prefix="splitmq-steps-") as tmp:
        run_probed(requests, Path(tmp))
        found = steps(*read_steps(Path(tmp)))
    report(
        "where a split request's time goes: 3 stages, 3 agents, one request in flight, pure Python",
        rows(found),
        {step: sorted(durations) for step, durations in found.items()},
    )


if __name__ == "__main__":
    main()
