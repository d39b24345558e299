"""Tables people read: aligned columns under a rule (reports, the fleet)."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["format_table"]


def format_table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], left: Sequence[int] = (0,)
) -> str:
    """Aligned columns under a rule: the ``left`` ones (labels) left-aligned, figures right.

    A row shorter than the headers leaves its last columns blank.
    """
    filled = [[*row, *[""] * (len(headers) - len(row))] for row in rows]
    widths = [max(len(cell) for cell in column) for column in zip(headers, *filled, strict=True)]

    def line(cells: Sequence[str]) -> str:
        padded = (
            cell.ljust(width) if index in left else cell.rjust(width)
            for index, (cell, width) in enumerate(zip(cells, widths, strict=True))
        )
        return "  ".join(padded).rstrip()

    header = line(headers)
    return "\n".join([header, "-" * len(header), *(line(row) for row in filled)])
