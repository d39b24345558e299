"""The ``splitmq`` command line.

Each subcommand is a pair of small functions: ``_add_<name>(subparsers)`` declares its
arguments and ``_run_<name>(args)`` runs it, importing heavy modules lazily. The
environment and the command line are read here only. Parts with commands of
their own (agent; coordinator, deploy and fleet; infer and report; demo) declare them
in their package's ``cli`` module, plugged in here.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from splitmq.errors import SplitMQError

__all__ = ["main"]

Runner = Callable[[argparse.Namespace], int]
DEFAULT_POOL = Path("pool")


def _add_convert(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="convert a model into a model pool entry",
        description="Convert a .keras/.h5 file, a SavedModel directory, a .tflite file or a "
        "keras.applications architecture (built with weights=None) into POOL/NAME/VERSION.",
    )
    parser.add_argument("model", help="model file, SavedModel directory or architecture name")
    parser.add_argument("--name", required=True, help="the model's name in the pool")
    parser.add_argument("--pool", type=Path, default=DEFAULT_POOL, help="pool directory")
    parser.add_argument(
        "--variants",
        default="float32,float16,int8",
        help="comma-separated: float32, float16, int8 (default: all three)",
    )
    parser.add_argument("--calibration", type=Path, help=".npy (N, *input_shape[1:]) or .npz")
    parser.add_argument("--labels", type=Path, help=".npy of integer labels, one per sample")
    parser.add_argument("--weights", type=Path, help="weights for an architecture name")
    parser.add_argument("--input-size", type=int, help="input side for an architecture name")
    parser.add_argument(
        "--task", help="the task the model is a member of (its members share inputs and labels)"
    )
    parser.add_argument("--report", action="store_true", help="print the cut point table")
    parser.add_argument("--plot", type=Path, help="write the activation/compute plot (PNG)")
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="show TensorFlow's own log output (C++, absl, warnings), hidden by default",
    )
    parser.set_defaults(run=_run_convert)


def _run_convert(args: argparse.Namespace) -> int:
    from splitmq.converter import convert
    from splitmq.converter.report import cut_point_table, plot, summary

    entry = convert(
        args.model,
        name=args.name,
        pool_dir=args.pool,
        variants=[v.strip() for v in args.variants.split(",") if v.strip()],
        calibration=args.calibration,
        labels=args.labels,
        weights=args.weights,
        input_size=args.input_size,
        task=args.task,
        verbose=args.verbose,
    )
    print(summary(entry.manifest))
    print(f"\nwritten to {entry.path}")
    if args.report:
        print()
        print(cut_point_table(entry.manifest))
    if args.plot:
        print(f"plot: {plot(entry.manifest, args.plot)}")
    return 0


def _add_inspect(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "inspect",
        help="show a pool entry's variants, cut points and parallel branches",
        description="Print a model's variants, its cut point table and its parallel "
        "sections (branches that can run at the same time); optionally plot "
        "activation size and cumulative compute along the network.",
    )
    parser.add_argument("name", help="model name in the pool, or an entry directory")
    parser.add_argument("--pool", type=Path, default=DEFAULT_POOL, help="pool directory")
    parser.add_argument("--version", help="entry version (default: the latest)")
    parser.add_argument("--plot", type=Path, help="write the plot to this PNG file")
    parser.set_defaults(run=_run_inspect)


def _run_inspect(args: argparse.Namespace) -> int:
    from splitmq.converter.manifest import load_manifest
    from splitmq.converter.pool import open_entry
    from splitmq.converter.report import cut_point_table, parallel_table, plot, summary

    if Path(args.name).is_dir():
        manifest = load_manifest(args.name)
    else:
        manifest = open_entry(args.pool, args.name, args.version).manifest
    print(summary(manifest))
    print()
    print(cut_point_table(manifest))
    branches = parallel_table(manifest)
    if branches:
        print()
        print(branches)
    if args.plot:
        print(f"\nplot: {plot(manifest, args.plot)}")
    return 0


def _add_evaluate(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="measure the accuracy of a model's variants (or a task's members) on data",
        description="Run every variant of NAME (or of every member of --task) on "
        "the data with LiteRT and record each one's accuracy in its manifest. The data is "
        "an .npz: x (inputs, one sample per row) and y (integer labels). Without y, "
        "accuracy stays unknown and members are ranked by their agreement with the task's "
        "most accurate member on the same data.",
    )
    parser.add_argument("name", nargs="?", help="model name in the pool")
    parser.add_argument("--task", help="evaluate every member of this task instead")
    parser.add_argument("--data", type=Path, required=True, help=".npz with x and y")
    parser.add_argument("--pool", type=Path, default=DEFAULT_POOL, help="pool directory")
    parser.add_argument("--version", help="entry version of a model (default: the latest)")
    parser.set_defaults(run=_run_evaluate)


def _run_evaluate(args: argparse.Namespace) -> int:
    from splitmq.converter.evaluate import evaluate
    from splitmq.converter.report import task_table
    from splitmq.converter.task import task_members

    if (args.name is None) == (args.task is None):
        print("splitmq evaluate: error: name a model, or a task with --task", file=sys.stderr)
        return 2
    entries = evaluate(args.pool, args.name, args.data, task=args.task, version=args.version)
    task = entries[0].manifest.task
    shown = [e.manifest for e in entries]
    if task is not None:
        shown = [e.manifest for e in task_members(args.pool, task)]
        print(f"task {task}: {len(shown)} members")
    print(task_table(shown))
    return 0


def _add_agent(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from splitmq.agent.cli import add_parser

    add_parser(subparsers)


def _add_coordinator(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from splitmq.coordinator.cli import add_parsers

    add_parsers(subparsers)


def _add_report(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from splitmq.client.report_cli import add_parser

    add_parser(subparsers)


def _add_infer(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from splitmq.client.infer_cli import add_parser

    add_parser(subparsers)


def _add_demo(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from splitmq.demo.cli import add_parser

    add_parser(subparsers)


def _add_web(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from splitmq.web.cli import add_parser

    add_parser(subparsers)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="splitmq", description="Run one deep neural network across several small devices."
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for add in (
        _add_convert,
        _add_inspect,
        _add_evaluate,
        _add_agent,
        _add_coordinator,
        _add_infer,
        _add_report,
        _add_demo,
        _add_web,
    ):
        add(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``splitmq`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="splitmq: %(message)s",
        stream=sys.stderr,
    )
    run: Runner = args.run
    try:
        return run(args)
    except SplitMQError as error:
        print(f"splitmq {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
