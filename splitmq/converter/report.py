"""Human output for a pool entry: the cut point and parallel branch tables, and the
activation/compute plot.

No TensorFlow; matplotlib (Agg backend) is imported only by :func:`plot`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from splitmq.wire.manifest import Manifest

__all__ = ["cut_point_table", "parallel_table", "plot", "summary", "task_table"]


def _size(value: int | None) -> str:
    if value is None:
        return "-"
    if value >= 1 << 20:
        return f"{value / (1 << 20):.2f} MiB"
    if value >= 1 << 10:
        return f"{value / (1 << 10):.1f} KiB"
    return f"{value} B"


def summary(manifest: Manifest) -> str:
    """Variants with size, digest and fidelity."""
    lines = [
        f"{manifest.name} {manifest.version}  ({manifest.source_kind} {manifest.source})",
        f"calibration: {manifest.calibration.source}, {manifest.calibration.samples} samples "
        f"({manifest.calibration.description})",
        "",
        f"{'variant':<9} {'size':>11} {'sha256':<14} {'top-1 agree':>11} {'accuracy':>9}"
        "  measured on",
    ]
    for variant in manifest.variants.values():
        fidelity = variant.fidelity
        agree = "-" if fidelity is None else f"{fidelity.top1_agreement:.3f}"
        measured = manifest.accuracy(variant.name)
        accuracy = "-" if measured is None else f"{measured:.3f}"
        lines.append(
            f"{variant.name:<9} {_size(variant.size_bytes):>11} {variant.sha256[:12]:<14} "
            f"{agree:>11} {accuracy:>9}  {(fidelity and fidelity.measured_on) or '-'}"
        )
    if manifest.task is not None:
        lines.insert(2, f"task: {manifest.task}")
    return "\n".join(lines)


def task_table(manifests: Sequence[Manifest]) -> str:
    """One row per member and variant: compute, size, fidelity and accuracy (or, without
    labels, agreement with the task's reference member), most accurate first."""
    header = (
        f"{'member':<16} {'variant':<8} {'MFLOPs':>8} {'size':>10} {'fidelity':>8} "
        f"{'accuracy':>9} {'agreement':>9}"
    )
    rows = []
    for manifest in manifests:
        for variant in manifest.variants.values():
            accuracy = manifest.accuracy(variant.name)
            agreement = manifest.agreement(variant.name)
            fidelity = variant.fidelity
            rows.append(
                (
                    -1.0 if accuracy is None else accuracy,
                    -1.0 if agreement is None else agreement,
                    f"{manifest.name:<16} {variant.name:<8} {variant.total_flops / 1e6:>8.3f} "
                    f"{_size(variant.size_bytes):>10} "
                    f"{'-' if fidelity is None else f'{fidelity.top1_agreement:.3f}':>8} "
                    f"{'unknown' if accuracy is None else f'{accuracy:.3f}':>9} "
                    f"{'-' if agreement is None else f'{agreement:.3f}':>9}",
                )
            )
    rows.sort(key=lambda row: (-row[0], -row[1], row[2]))
    lines = [header, *(row[2] for row in rows)]
    evaluations = {
        m.evaluation.data
        if m.evaluation is not None
        else f"calibration set ({m.calibration.description})"
        for m in manifests
        if m.evaluation is not None or m.labels
    }
    references = {
        m.evaluation.reference for m in manifests if m.evaluation and m.evaluation.reference
    }
    if evaluations:
        lines.append(f"measured on: {', '.join(sorted(evaluations))}")
    if any(m.accuracy(v) is None for m in manifests for v in m.variants):
        lines.append(
            "accuracy unknown where no labels were given: evaluate with labelled data "
            "(`splitmq evaluate NAME --data FILE.npz`, x and y)"
            + (f"; agreement is with {', '.join(sorted(references))}" if references else "")
        )
    return "\n".join(lines)


def cut_point_table(manifest: Manifest) -> str:
    """One row per cut point: position, layer, frontier bytes per variant, cumulative FLOPs."""
    variants = list(manifest.variants)
    reference = manifest.variants[manifest.reference_variant]
    total = max(1, reference.total_flops)
    header = f"{'cut':>5}  {'after layer':<34}" + "".join(f" {v:>11}" for v in variants)
    header += f" {'cum. MFLOPs':>12} {'%':>6}"
    lines = [header, "-" * len(header)]
    for point in manifest.cut_points:
        layer = (point.after_layer or "-")[:34]
        row = f"{point.position:>5}  {layer:<34}"
        row += "".join(f" {_size(point.frontier_bytes.get(v)):>11}" for v in variants)
        row += (
            f" {point.cumulative_flops / 1e6:>12.1f} {100 * point.cumulative_flops / total:>5.1f}%"
        )
        lines.append(row)
    if not reference.cuttable:
        lines.append(f"not cuttable: {reference.uncuttable_reason}")
    return "\n".join(lines)


def parallel_table(manifest: Manifest) -> str:
    """One row per branch of every parallel section of the reference variant: its
    operators, FLOPs (and share of the section's), weights, bytes in and out. Empty
    when the model has no parallel section."""
    reference = manifest.variants[manifest.reference_variant]
    if not reference.parallel_sections:
        return ""
    header = (
        f"{'section':>11} {'branch':>6} {'operators':>13} {'MFLOPs':>9} {'%':>6} "
        f"{'weights':>11} {'in':>11} {'out':>11}"
    )
    lines = [
        f"parallel sections of {reference.name} (branches that can run at the same time)",
        header,
        "-" * len(header),
    ]
    for section in reference.parallel_sections:
        span = f"[{section.start}, {section.end})"
        total = max(1, sum(b.flops for b in section.branches))
        for number, branch in enumerate(section.branches):
            ops = branch.operators
            where = f"{len(ops)}: {ops[0]}..{ops[-1]}" if len(ops) > 1 else f"1: {ops[0]}"
            lines.append(
                f"{span if number == 0 else '':>11} {number:>6} {where:>13} "
                f"{branch.flops / 1e6:>9.2f} {100 * branch.flops / total:>5.1f}% "
                f"{_size(branch.param_bytes):>11} {_size(branch.input_bytes):>11} "
                f"{_size(branch.output_bytes):>11}"
            )
    return "\n".join(lines)


def plot(manifest: Manifest, path: str | Path) -> Path:
    """Frontier size and cumulative compute along the network, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    reference = manifest.variants[manifest.reference_variant]
    total = max(1, reference.total_flops)
    positions = [p.position for p in manifest.cut_points]
    figure, axis = plt.subplots(figsize=(10, 4.5))
    for name in manifest.variants:
        sizes = [p.frontier_bytes.get(name) for p in manifest.cut_points]
        xs = [x for x, s in zip(positions, sizes, strict=True) if s is not None]
        ys = [s / 1024 for s in sizes if s is not None]
        axis.step(xs, ys, where="post", label=f"frontier {name} (KiB)")
    axis.set_yscale("log")
    axis.set_xlabel(f"cut point ({manifest.reference_variant} operator boundary)")
    axis.set_ylabel("activation crossing the cut (KiB, log)")
    compute = axis.twinx()
    compute.plot(
        positions,
        [100 * p.cumulative_flops / total for p in manifest.cut_points],
        color="black",
        linestyle="--",
        label="cumulative compute (%)",
    )
    compute.set_ylabel("cumulative compute before the cut (%)")
    compute.set_ylim(0, 100)
    handles = axis.get_legend_handles_labels()[0] + compute.get_legend_handles_labels()[0]
    labels = axis.get_legend_handles_labels()[1] + compute.get_legend_handles_labels()[1]
    axis.legend(handles, labels, loc="upper center", fontsize="small")
    axis.set_title(f"{manifest.name} {manifest.version}: what a partitioner trades off")
    figure.tight_layout()
    out = Path(path)
    figure.savefig(out, dpi=110)
    plt.close(figure)
    return out
