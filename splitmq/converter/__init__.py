"""The converter: Keras / SavedModel / ``.tflite`` -> model pool entry; graph analysis; cutting.

Public API (documented in ``docs/converter.md``)::

    convert(source, *, name, pool_dir, variants=..., calibration=None, labels=None,
            weights=None, input_size=None, verbose=False, front_end=None) -> PoolEntry
    load_manifest(path) -> Manifest
    open_entry(pool_dir, name, version=None) -> PoolEntry
    cut(model_bytes_or_path, cut_points, out_dir=None) -> list[Shard]
    run_model(model, inputs) / run_chain(shards, inputs)   # LiteRT, bit-exact settings
    branches.parallel_sections(graph); cutter.cut_stages(graph, stages);
    runner.run_stage_graph(shards, inputs)                  # Plan 2: fan-out, fan-in
    splitmq.converter.digits.train_and_convert(pool_dir, ...) -> PoolEntry

Importing this package never imports TensorFlow, nor does ``convert``: it runs
TensorFlow in a child process (``FrontEndProcess``) when its source is not a ``.tflite``.
"""

from __future__ import annotations

from splitmq.converter.convert import convert
from splitmq.converter.cutter import Shard, cut, cut_graph
from splitmq.converter.errors import (
    CalibrationError,
    ConversionError,
    ConverterCrashError,
    CutPointError,
    ModelReadError,
    UncuttableGraphError,
)
from splitmq.converter.graph import Graph, TensorSpec
from splitmq.converter.isolated import FrontEndProcess
from splitmq.converter.manifest import load_manifest
from splitmq.converter.pool import PoolEntry, open_entry
from splitmq.converter.runner import run_chain, run_model
from splitmq.wire.manifest import Manifest

__all__ = [
    "CalibrationError",
    "ConversionError",
    "ConverterCrashError",
    "CutPointError",
    "FrontEndProcess",
    "Graph",
    "Manifest",
    "ModelReadError",
    "PoolEntry",
    "Shard",
    "TensorSpec",
    "UncuttableGraphError",
    "convert",
    "cut",
    "cut_graph",
    "load_manifest",
    "open_entry",
    "run_chain",
    "run_model",
]
