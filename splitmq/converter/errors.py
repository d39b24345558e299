"""The converter's errors, all under :class:`splitmq.errors.ConversionError`.

::

    ConversionError
    ├── ModelReadError        unreadable file, unsupported format, corrupt flatbuffer
    ├── CalibrationError      calibration data or labels of the wrong shape or type
    ├── CutPointError         a cut point out of range, unordered, or an empty stage
    ├── UncuttableGraphError  resource variables, or a cut inside a loop body or branch
    └── ConverterCrashError   TensorFlow's converter died (SIGSEGV...) on a variant
"""

from __future__ import annotations

from pathlib import Path

from splitmq.errors import ConversionError, ModelReadError

__all__ = [
    "CalibrationError",
    "ConversionError",
    "ConverterCrashError",
    "CutPointError",
    "ModelReadError",
    "UncuttableGraphError",
    "describe_exit",
]


class CalibrationError(ConversionError):
    """Calibration data or labels that do not fit the model.

    Attributes:
        expected: what the model needs, in words (``(N, 96, 96, 3) float32``).
        got: what was given.
    """

    def __init__(self, message: str, *, expected: str = "", got: str = ""):
        self.expected = expected
        self.got = got
        super().__init__(message)


class CutPointError(ConversionError):
    """A cut point the model cannot be cut at.

    Attributes:
        cut_point: the offending cut point.
        num_operators: operators in the model.
    """

    def __init__(self, message: str, *, cut_point: int, num_operators: int):
        self.cut_point = cut_point
        self.num_operators = num_operators
        super().__init__(message)


class StageGraphError(ConversionError):
    """A stage graph the cutter cannot make: an operator in no stage or in two, a
    constant operator named, or a stage reading what a later stage produces.

    Attributes:
        stage: the offending stage (its position in the list given).
        op_index: the operator concerned, when one is.
    """

    def __init__(self, message: str, *, stage: int, op_index: int | None = None):
        self.stage = stage
        self.op_index = op_index
        super().__init__(message)


class UncuttableGraphError(ConversionError):
    """A graph the cutter cannot split without changing its meaning.

    Attributes:
        operator: the operator type to blame (``VAR_HANDLE``; ``WHILE`` for a cut asked
            inside the loop it runs), or ``None`` for a model-wide reason.
        op_index: the position in execution order of the top-level operator concerned.
    """

    def __init__(self, message: str, *, operator: str | None, op_index: int | None):
        self.operator = operator
        self.op_index = op_index
        super().__init__(message)


class ConverterCrashError(ConversionError):
    """TensorFlow's converter died in its child process (a signal, such as SIGSEGV, or an
    exit) instead of raising an error.

    Raised after the variants that did convert were written, so a crash of one variant
    loses nothing else.

    Attributes:
        crashes: per variant that crashed (``"load"`` for loading the model), the child's
            return code (negative: killed by that signal).
        converted: the variants that converted.
        path: the pool entry written with them, or ``None`` when nothing was written.
    """

    def __init__(
        self,
        message: str,
        *,
        crashes: dict[str, int],
        converted: tuple[str, ...] = (),
        path: Path | None = None,
    ):
        self.crashes = crashes
        self.converted = converted
        self.path = path
        super().__init__(message)


def describe_exit(returncode: int) -> str:
    """``SIGSEGV, signal 11`` for a process killed by a signal, else ``exit status N``."""
    import signal

    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = "an unknown signal"
        return f"{name}, signal {-returncode}"
    return f"exit status {returncode}"
