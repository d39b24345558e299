"""TensorFlow's side of a conversion, run in a child process.

TensorFlow's converter can die outright -- a SIGSEGV while calibrating int8, say --
and it prints pages of C++ and Python log lines. Running it in a child
(:mod:`splitmq.converter.worker`) keeps both away from the caller: a crash becomes a
:class:`ConverterCrashError` naming what was being converted and the signal, and the
child's TensorFlow output goes to a file unless ``verbose`` is set. The caller's
process, its environment and its stderr are left as they were; it does not even
import TensorFlow.

One child serves a whole conversion, or several (TensorFlow is imported once, several
seconds; pass the same ``FrontEndProcess`` to each ``convert(..., front_end=...)``);
after a crash the next request starts a fresh one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import numpy as np

import splitmq
from splitmq.converter import errors
from splitmq.converter.errors import ConversionError, ConverterCrashError, describe_exit
from splitmq.converter.frontend import LoadedSource
from splitmq.converter.worker import QUIET_FLAG

__all__ = ["FrontEndProcess"]

log = logging.getLogger(__name__)

# TensorFlow's C++ log level in a quiet child: errors only.
QUIET_CPP_LOG_LEVEL = "2"
_CLOSE_TIMEOUT_S = 10.0


class FrontEndProcess:
    """A child process that loads and converts models with TensorFlow.

    Use it as a context manager. ``work_dir`` (a temporary directory, removed on
    :meth:`close`, when not given) holds the child's log when quiet and one
    subdirectory per loaded model: its exported SavedModel, calibration file and
    converted variants.
    """

    def __init__(self, work_dir: Path | None = None, *, verbose: bool = False) -> None:
        self._own_dir: tempfile.TemporaryDirectory[str] | None = None
        if work_dir is None:
            self._own_dir = tempfile.TemporaryDirectory(prefix="splitmq-convert-")
            work_dir = Path(self._own_dir.name)
        self.work_dir: Path = work_dir
        self.verbose = verbose
        self._scratch = self.work_dir
        self.tensorflow_version: str | None = None
        self._process: subprocess.Popen[str] | None = None
        self._stderr: IO[bytes] | None = None
        self._calibration: Path | None = None

    def __enter__(self) -> FrontEndProcess:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- requests -----------------------------------------------------------------

    def load(
        self,
        source: str | Path,
        *,
        weights: str | Path | None = None,
        input_size: int | None = None,
    ) -> LoadedSource:
        """Recognise and prepare ``source`` in the child (see ``frontend.load_source``).

        Starts a new scratch directory: the variants converted next belong to this model.
        """
        self._scratch = Path(tempfile.mkdtemp(prefix="model-", dir=self.work_dir))
        self._calibration = None
        reply = self._request(
            {
                "op": "load",
                "source": str(source),
                "work_dir": str(self._scratch),
                "weights": None if weights is None else str(weights),
                "input_size": input_size,
            },
            "load",
        )
        self.tensorflow_version = str(reply["tensorflow"])
        return LoadedSource(
            kind=reply["kind"],
            reference=reply["reference"],
            saved_model_dir=Path(reply["saved_model_dir"]),
            layer_names=tuple(reply["layer_names"]),
            input_range=(float(reply["input_range"][0]), float(reply["input_range"][1])),
        )

    def convert(
        self,
        source: LoadedSource,
        variant: str,
        *,
        calibration: Mapping[str, np.ndarray] | None = None,
        keys: Sequence[str] = (),
    ) -> bytes:
        """One variant's ``.tflite`` bytes, converted in the child.

        Raises:
            ConverterCrashError: the child died converting it (``crashes[variant]``).
            ConversionError: the converter refused the model.
        """
        calibration_file = None
        if calibration is not None:
            calibration_file = self._calibration_file(calibration, keys)
        out = self._scratch / f"converted-{variant}.tflite"
        self._request(
            {
                "op": "convert",
                "source": {
                    "kind": source.kind,
                    "reference": source.reference,
                    "saved_model_dir": str(source.saved_model_dir),
                    "layer_names": list(source.layer_names),
                    "input_range": list(source.input_range),
                },
                "variant": variant,
                "calibration": None if calibration_file is None else str(calibration_file),
                "keys": list(keys),
                "out": str(out),
            },
            variant,
        )
        return out.read_bytes()

    def train_digits(self, out: Path, *, epochs: int, size: str = "medium") -> Path:
        """Train the digits classifier of ``size`` in the child and save it as ``out``."""
        request = {"op": "train_digits", "out": str(out), "epochs": epochs, "size": size}
        self._request(request, "training")
        return out

    def ping(self) -> int:
        """The child's process id, starting it if needed (a cheap request: no TensorFlow)."""
        return int(self._request({"op": "ping"}, "ping")["pid"])

    def close(self) -> None:
        """End the child (it exits when its stdin closes) and close its log file."""
        process, self._process = self._process, None
        if process is not None:
            if process.stdin is not None:
                with contextlib.suppress(BrokenPipeError):
                    process.stdin.close()
            try:
                process.wait(timeout=_CLOSE_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            _close_pipes(process)
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
        if self._own_dir is not None:
            self._own_dir.cleanup()
            self._own_dir = None

    # -- the child ------------------------------------------------------------------

    def _calibration_file(self, samples: Mapping[str, np.ndarray], keys: Sequence[str]) -> Path:
        if self._calibration is None:
            path = self._scratch / "calibration.npz"
            np.savez(path, *[np.ascontiguousarray(samples[k]) for k in keys])
            self._calibration = path
        return self._calibration

    def _start(self) -> subprocess.Popen[str]:
        env = dict(os.environ)
        package_root = str(Path(splitmq.__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (package_root, env.get("PYTHONPATH", "")) if p
        )
        command = [sys.executable, "-m", "splitmq.converter.worker"]
        stderr: IO[bytes] | None = None
        if not self.verbose:
            env["TF_CPP_MIN_LOG_LEVEL"] = max(
                env.get("TF_CPP_MIN_LOG_LEVEL", "0"), QUIET_CPP_LOG_LEVEL
            )
            command.append(QUIET_FLAG)
            if self._stderr is None:
                self._stderr = (self.work_dir / "tensorflow.log").open("ab")
            stderr = self._stderr
        return subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=env,
            text=True,
            encoding="utf-8",
        )

    def _request(self, request: dict[str, Any], what: str) -> dict[str, Any]:
        if self._process is None:
            self._process = self._start()
        process = self._process
        if process.stdin is None or process.stdout is None:
            raise RuntimeError("the front-end process was started without pipes")
        try:
            process.stdin.write(json.dumps(request) + "\n")
            process.stdin.flush()
        except BrokenPipeError:
            pass  # the child is gone: reading finds the end and reports how it ended
        for line in process.stdout:
            message = json.loads(line)
            if "log" in message:
                entry = message["log"]
                logging.getLogger(entry["name"]).log(int(entry["level"]), "%s", entry["message"])
            elif "reply" in message:
                return dict(message["reply"])
            elif "error" in message:
                raise _rebuild(message["error"])
        returncode = process.wait()
        self._process = None
        _close_pipes(process)  # the next request starts a new child
        raise ConverterCrashError(
            f"TensorFlow's converter died ({describe_exit(returncode)}) during {what}",
            crashes={what: returncode},
        )


def _close_pipes(process: subprocess.Popen[str]) -> None:
    """Close the pipes of a child that has ended."""
    for pipe in (process.stdin, process.stdout):
        if pipe is not None:
            with contextlib.suppress(BrokenPipeError):
                pipe.close()


def _rebuild(error: dict[str, Any]) -> ConversionError:
    """The child's error as the same class here (``ModelReadError``...)."""
    kind = getattr(errors, str(error.get("type")), None)
    message = str(error.get("message"))
    if kind is errors.ModelReadError:
        path = error.get("path")
        return errors.ModelReadError(message, path=None if path is None else Path(path))
    if kind is ConversionError:
        return ConversionError(message)
    if error.get("type") == "internal":
        return ConversionError(f"the converter failed: {message}")
    return ConversionError(message)
