"""``splitmq demo --task``: the coordinator picks the model as well as the route.

Three digits classifiers of different sizes (small, medium, large: accuracy about 0.79,
0.94, 0.97 on the held-out digits) are members of the task ``digits``, converted once
into the pool in float32 and int8 with their accuracy measured on labels. All six are
deployed side by side; the client then asks the *task* at the ``performance`` level
while its battery falls, and the coordinator moves its requests from the most accurate
member to cheaper ones. Every answer is checked against the unsplit model of the member
and variant that served it; the report's member table and ``task_tradeoff.png`` show
the trade-off the requests were served along.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from splitmq.client import Client, InferenceError
from splitmq.converter import run_model
from splitmq.converter.pool import PoolEntry, open_entry
from splitmq.errors import SplitMQError
from splitmq.wire import Battery, DeployReply, DeployRequest, EnergyLevel

if TYPE_CHECKING:
    from splitmq.converter.isolated import FrontEndProcess

__all__ = ["BATTERY_STEPS", "MEMBERS", "TASK", "ensure_members", "run_task"]

TASK = "digits"
MEMBERS = {
    "digits-small": ("small", 1),
    "digits-medium": ("medium", 8),
    "digits-large": ("large", 14),
}
"""The members: name -> (size for ``converter.digits.build_model``, training epochs)."""
VARIANTS = ("float32", "int8")
BATTERY_STEPS = (100.0, 60.0, 35.0, 10.0)
"""The client's battery (unplugged) as the task's requests go on."""

Deploy = Callable[[DeployRequest], DeployReply]
Say = Callable[[str], None]


def ensure_members(pool: Path, front_end: FrontEndProcess | None = None) -> list[PoolEntry]:
    """The task's members, trained and converted into ``pool`` unless already there
    (through one converter child: TensorFlow starts once, only if one is missing)."""
    import contextlib

    from splitmq.converter.isolated import FrontEndProcess

    entries = []
    with contextlib.ExitStack() as stack:
        for name, (size, epochs) in MEMBERS.items():
            try:
                entries.append(open_entry(pool, name))
                continue
            except SplitMQError:
                pass
            from splitmq.converter.digits import train_and_convert

            if front_end is None:
                front_end = stack.enter_context(FrontEndProcess())
            print(f"converting {name}, the task's {size} member (training it first)", flush=True)
            entries.append(
                train_and_convert(
                    pool,
                    name=name,
                    epochs=epochs,
                    size=size,
                    task=TASK,
                    variants=VARIANTS,
                    front_end=front_end,
                )
            )
    return entries


def run_task(
    client: Client,
    deploy: Deploy,
    members: list[PoolEntry],
    inputs: np.ndarray,
    *,
    operator: str,
    run: str,
    say: Say,
) -> int:
    """Deploy every member and variant, ask the task as the battery falls; returns how
    many answers differ from the unsplit model of the member and variant that served."""
    for entry in members:
        for variant in VARIANTS:
            reply = deploy(
                DeployRequest(
                    request_id=uuid.uuid4().hex,
                    client_id=operator,
                    model=entry.name,
                    variant=variant,
                    replicas=2,
                    ready_timeout_s=150.0,
                    task=TASK,
                )
            )
            if not reply.ok:
                raise SplitMQError(f"deploying {entry.name} {variant} failed: {reply.message}")
    say(f"\ntask {TASK}: {len(members) * len(VARIANTS)} members and variants deployed")
    from splitmq.converter.runner import make_interpreter

    by_name = {entry.name: entry for entry in members}
    interpreters: dict[tuple[str, str], Any] = {}
    per_step = max(1, len(inputs) // len(BATTERY_STEPS))
    differ = 0
    for step, pct in enumerate(BATTERY_STEPS):
        chosen = inputs[step * per_step : (step + 1) * per_step]
        served: Counter[str] = Counter()
        failed = 0
        frames = (chosen[i : i + 1] for i in range(len(chosen)))
        for item in client.stream(
            frames,
            max_in_flight=8,
            run=run,
            task=TASK,
            energy_level=EnergyLevel.PERFORMANCE,
            client_battery=Battery(pct, plugged=False),
        ):
            if isinstance(item, InferenceError):
                failed += 1
                continue
            model, variant = item.served_by
            served[f"{model} {variant}"] += 1
            index = item.index if item.index is not None else 0
            key = (model, variant)
            if key not in interpreters:
                interpreters[key] = make_interpreter(by_name[model].variant_path(variant))
            expected = run_model(interpreters[key], [chosen[index : index + 1]])
            differ += not all(np.array_equal(item.outputs[n], expected[n]) for n in expected)
        who = ", ".join(f"{member} {count}" for member, count in served.most_common())
        say(
            f"  battery {pct:.0f} %: served by {who or 'none'}"
            + (f"; {failed} failed" if failed else "")
        )
    verdict = "all" if not differ else f"{differ} differ"
    say(f"  answers equal to the unsplit member and variant that served them: {verdict}")
    return differ
