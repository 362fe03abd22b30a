"""Plain-text tables for the terminal report: left-aligned columns under a dashed rule."""

from __future__ import annotations

from collections.abc import Sequence


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "") -> list[str]:
    """The lines of a table: the header, a rule of dashes, the rows; columns as wide as their
    widest cell, two spaces apart, each line prefixed with `indent` and without trailing
    spaces."""
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]
    lines = [header, ["-" * width for width in widths], *rows]
    return [
        (
            indent + "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True))
        ).rstrip()
        for line in lines
    ]
