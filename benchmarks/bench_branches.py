"""How much a fan-out could save: InceptionV3's parallel sections, branch by branch.

For each parallel section the converter finds (``splitmq.converter.branches``), the
section run as one shard and each of its branches run as a shard of its own are timed
side by side in interleaved rounds (LiteRT, one thread, builtin kernels; medians over
the rounds); the branches' times added up should come near the section's (printed as
a check on the noise). ``one shard / slowest branch`` is what running the branches on devices of
their own at the same time could gain at most, before the extra hops -- the figure a
Plan 2 planner weighs against the transfer of the branch inputs and outputs. The model
is InceptionV3 at 150x150 (weights=None), float32 and int8, converted once and cached
under ``benchmarks/results/pool``.

    .venv/bin/python benchmarks/bench_branches.py [--quick]
"""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np
from _fleet import POOL
from _report import Row, report

from splitmq.converter import Graph, PoolEntry, convert, open_entry
from splitmq.converter.branches import Section, parallel_sections, section_stages
from splitmq.converter.cutter import Shard, cut_stages
from splitmq.converter.runner import make_interpreter
from splitmq.errors import SplitMQError

MODEL = "inceptionv3-150"
SIZE = 150
VARIANTS = ("float32", "int8")


def inception() -> PoolEntry:
    with contextlib.suppress(SplitMQError):
        return open_entry(POOL, MODEL)
    print(f"converting InceptionV3 once (cached in {POOL}) ...", file=sys.stderr, flush=True)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return convert("InceptionV3", name=MODEL, pool_dir=POOL, variants=VARIANTS, input_size=SIZE)


def runner(data: bytes, rng: np.random.Generator) -> Callable[[], None]:
    """A function invoking the shard once, its inputs set to random values."""
    interpreter = make_interpreter(data)
    for detail in interpreter.get_input_details():
        dtype = np.dtype(detail["dtype"])
        if dtype.kind == "f":
            value = rng.uniform(0, 1, detail["shape"]).astype(dtype)
        else:
            info = np.iinfo(dtype)
            value = rng.integers(info.min, info.max, detail["shape"], endpoint=True, dtype=dtype)
        interpreter.set_tensor(detail["index"], value)
    return interpreter.invoke  # type: ignore[no-any-return]


def _shards(graph: Graph, section: Section) -> tuple[Shard, list[Shard]]:
    """The section as one shard, and each of its branches as one."""
    before = [i for i in range(section.start) if graph.is_live(i)]
    after = [i for i in range(section.end, graph.num_operators) if graph.is_live(i)]
    whole = sorted(i for b in section.branches for i in b.operators)
    one = cut_stages(graph, [s for s in (before, whole, after) if s])[1 if before else 0]
    first = 1 if before else 0
    stages = cut_stages(graph, section_stages(graph, section.start, section.end))
    return one, stages[first : first + len(section.branches)]


def timed(func: Callable[[], None], number: int) -> float:
    start = time.perf_counter()
    for _ in range(number):
        func()
    return (time.perf_counter() - start) / number


def main() -> None:
    rounds, number = (3, 2) if "--quick" in sys.argv else (7, 5)
    entry = inception()
    rng = np.random.default_rng(0)
    rows: list[Row] = []
    figures: dict[str, float] = {"rounds": rounds, "number": number}
    for variant in VARIANTS:
        graph = Graph.load(entry.variant_path(variant).read_bytes())
        sections = parallel_sections(graph)
        print(f"{variant}: {len(sections)} sections ...", file=sys.stderr, flush=True)
        for section in sections:
            one, parts = _shards(graph, section)
            funcs = [runner(one.data, rng)] + [runner(p.data, rng) for p in parts]
            for func in funcs:
                func()  # warm-up
            per_round: list[list[float]] = [[] for _ in funcs]
            for _ in range(rounds):
                for times, func in zip(per_round, funcs, strict=True):
                    times.append(timed(func, number))
            medians = [1000 * statistics.median(t) for t in per_round]
            ratio = medians[0] / max(medians[1:])
            # A check on the noise: the branches one after the other cost about the same.
            spread = sum(medians[1:]) / medians[0]
            figures[f"{variant}_{section.start}_ratio"] = ratio
            figures[f"{variant}_{section.start}_sum_over_one"] = spread
            rows.append(
                Row(
                    "Plan 2 headroom",
                    f"{variant} [{section.start}, {section.end}) "
                    f"{len(section.branches)} branches: one shard / slowest branch",
                    f"{ratio:.2f}x ({medians[0]:.2f} ms vs {max(medians[1:]):.2f} ms; "
                    f"branches in turn {spread:.2f}x)",
                    value=ratio,
                )
            )
    report(f"InceptionV3 {SIZE}: parallel sections, branch against section", rows, figures)


if __name__ == "__main__":
    main()
