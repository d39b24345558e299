"""Time to cut a MobileNetV3Large variant into 4 shards (the coordinator does it at deploy time).

Prints its figures; not a test. Builds and converts the model first (TensorFlow), then
times parsing + cutting only.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

from splitmq.converter import Graph, convert, cut, cut_graph


def main() -> int:
    repeats = 10
    with tempfile.TemporaryDirectory() as pool:
        entry = convert("MobileNetV3Large", name="mnv3l", pool_dir=pool, input_size=224)
        print(f"MobileNetV3Large 224x224, {repeats} repeats, 4 shards (3 cut points)")
        print(f"{'variant':<9} {'size MiB':>9} {'ops':>5} {'cut+parse ms':>13} {'cut only ms':>12}")
        for variant in entry.manifest.variants:
            data = Path(entry.variant_path(variant)).read_bytes()
            candidates = entry.manifest.variants[variant].cut_points
            positions = [candidates[len(candidates) * i // 4].position for i in (1, 2, 3)]
            with_parse, cut_only = [], []
            for _ in range(repeats):
                start = time.perf_counter()
                cut(data, positions)
                with_parse.append(time.perf_counter() - start)
                graph = Graph.load(data)
                start = time.perf_counter()
                cut_graph(graph, positions)
                cut_only.append(time.perf_counter() - start)
            print(
                f"{variant:<9} {len(data) / 2**20:>9.2f} {graph.num_operators:>5} "
                f"{1000 * statistics.median(with_parse):>13.1f} "
                f"{1000 * statistics.median(cut_only):>12.1f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
