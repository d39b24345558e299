"""The converter's child process: TensorFlow runs here, away from the caller.

``python -m splitmq.converter.worker`` (started by :mod:`splitmq.converter.isolated`)
reads one JSON request per line on stdin and answers each on stdout:

* ``{"op": "load", "source", "work_dir", "weights", "input_size"}`` -> the loaded
  source's fields and TensorFlow's version (a Keras model is exported to a SavedModel
  in ``work_dir``);
* ``{"op": "convert", "source": {...}, "variant", "calibration", "keys", "out"}`` ->
  ``{"path": out}``, the variant's ``.tflite`` written there; ``calibration`` is an
  ``.npz`` of ``arr_0, arr_1...`` in the order of ``keys``;
* ``{"op": "train_digits", "out", "epochs", "size"}`` -> the digits classifier of that
  size trained and saved to ``out``;
* ``{"op": "ping"}`` -> ``{"pid": ...}``, the child's process id (TensorFlow not needed).

Each answer is ``{"reply": ...}`` or ``{"error": {"type", "message", "path"}}``; before
it, ``{"log": {"name", "level", "message"}}`` lines carry splitmq's progress messages,
which the parent logs as its own. Anything else written to stdout (a stray print) is
sent to stderr, where TensorFlow's C++ and Python logging go: the parent hands the
child a file there unless it runs verbose. A TensorFlow crash (SIGSEGV inside the
converter) ends this process only; the parent names the variant and carries on.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import traceback
import warnings
from pathlib import Path
from typing import IO, Any

import numpy as np

from splitmq.errors import SplitMQError

QUIET_FLAG = "--quiet-tensorflow"


class _Forward(logging.Handler):
    """Sends splitmq's log records to the parent as ``{"log": ...}`` lines."""

    def __init__(self, replies: IO[str]) -> None:
        super().__init__(logging.INFO)
        self.replies = replies

    def emit(self, record: logging.LogRecord) -> None:
        entry = {"name": record.name, "level": record.levelno, "message": record.getMessage()}
        self.replies.write(json.dumps({"log": entry}) + "\n")
        self.replies.flush()


def _silence_python_side() -> None:
    """Python warnings and TensorFlow's Python loggers (absl and ``tensorflow``) quiet."""
    warnings.simplefilter("ignore")
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    try:
        from absl import logging as absl_logging
    except ImportError:
        return
    absl_logging.set_verbosity(absl_logging.ERROR)


def _loaded_fields(request: dict[str, Any]) -> Any:
    from splitmq.converter.frontend import LoadedSource

    fields = request["source"]
    return LoadedSource(
        kind=fields["kind"],
        reference=fields["reference"],
        saved_model_dir=Path(fields["saved_model_dir"]),
        layer_names=tuple(fields["layer_names"]),
        input_range=(float(fields["input_range"][0]), float(fields["input_range"][1])),
    )


def _handle(request: dict[str, Any]) -> dict[str, Any]:
    op = request.get("op")
    if op == "ping":
        return {"pid": os.getpid()}
    if op == "load":
        from splitmq.converter.frontend import load_source

        loaded = load_source(
            request["source"],
            work_dir=Path(request["work_dir"]),
            weights=request.get("weights"),
            input_size=request.get("input_size"),
        )
        import tensorflow as tf

        return {
            "kind": loaded.kind,
            "reference": loaded.reference,
            "saved_model_dir": str(loaded.saved_model_dir),
            "layer_names": list(loaded.layer_names),
            "input_range": list(loaded.input_range),
            "tensorflow": tf.__version__,
        }
    if op == "convert":
        from splitmq.converter.frontend import calibration_generator, convert_variant

        generator = None
        if request.get("calibration"):
            keys = list(request["keys"])
            with np.load(request["calibration"], allow_pickle=False) as archive:
                samples = {key: archive[f"arr_{i}"] for i, key in enumerate(keys)}
            generator = calibration_generator(samples, keys)
        data = convert_variant(_loaded_fields(request), request["variant"], calibration=generator)
        Path(request["out"]).write_bytes(data)
        return {"path": request["out"]}
    if op == "train_digits":
        from splitmq.converter.digits import train

        size = str(request.get("size", "medium"))
        train(Path(request["out"]), epochs=int(request["epochs"]), size=size)
        return {"path": request["out"]}
    raise ValueError(f"unknown request {op!r}")


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    # Replies get their own copy of stdout; fd 1 then points at stderr, so nothing
    # TensorFlow or a library prints can garble them.
    replies = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    if QUIET_FLAG in args:
        _silence_python_side()
    splitmq_logger = logging.getLogger("splitmq")
    splitmq_logger.addHandler(_Forward(replies))
    splitmq_logger.setLevel(logging.INFO)
    splitmq_logger.propagate = False
    for line in sys.stdin:
        if not line.strip():
            continue
        answer: dict[str, Any]
        try:
            answer = {"reply": _handle(json.loads(line))}
        except SplitMQError as error:
            path = getattr(error, "path", None)
            answer = {
                "error": {
                    "type": type(error).__name__,
                    "message": str(error),
                    "path": None if path is None else str(path),
                }
            }
        except Exception as error:  # sent to the parent, which raises it
            traceback.print_exc()
            answer = {
                "error": {
                    "type": "internal",
                    "message": f"{type(error).__name__}: {error}",
                    "path": None,
                }
            }
        replies.write(json.dumps(answer) + "\n")
        replies.flush()
    # Stdin closed: the parent is done. Skip the interpreter's teardown, which takes
    # seconds once TensorFlow is loaded; every answer has been flushed.
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
