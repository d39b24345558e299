"""The converter's errors, all under :class:`splitmq.errors.ConversionError`.

::

    ConversionError
    ├── ModelReadError        unreadable file, unsupported format, corrupt flatbuffer
    ├── CalibrationError      calibration data or labels of the wrong shape or type
    ├── CutPointError         a cut point out of range, unordered, or an empty stage
    └── UncuttableGraphError  resource variables, or a cut inside a loop body or branch
"""

from __future__ import annotations

from pathlib import Path

from splitmq.errors import ConversionError

__all__ = [
    "CalibrationError",
    "ConversionError",
    "CutPointError",
    "ModelReadError",
    "UncuttableGraphError",
]


class ModelReadError(ConversionError):
    """A model that cannot be read: missing file, unknown format, corrupt bytes.

    Attributes:
        path: the file or directory, when there is one.
    """

    def __init__(self, message: str, *, path: Path | None = None):
        self.path = path
        super().__init__(message)


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


class UncuttableGraphError(ConversionError):
    """A graph the cutter cannot split without changing its meaning.

    Attributes:
        operator: the operator type to blame (``WHILE``), or ``None`` for a model-wide
            reason such as several subgraphs.
        op_index: its position in execution order.
    """

    def __init__(self, message: str, *, operator: str | None, op_index: int | None):
        self.operator = operator
        self.op_index = op_index
        super().__init__(message)
