"""Plain-text tables: columns as wide as their widest cell, a dashed rule, no trailing spaces."""

from __future__ import annotations

import pytest

from gateway.analysis.text_tables import text_table


def test_columns_fit_their_widest_cell_and_lines_end_without_spaces() -> None:
    lines = text_table(["name", "n"], [["base", "12"], ["a", ""]])
    assert lines == ["name  n", "----  --", "base  12", "a"]


def test_an_indent_prefixes_every_line() -> None:
    assert text_table(["x"], [["1"]], indent="  ") == ["  x", "  -", "  1"]


def test_a_row_of_another_width_is_refused() -> None:
    with pytest.raises(ValueError, match="zip"):
        text_table(["a", "b"], [["1"]])
