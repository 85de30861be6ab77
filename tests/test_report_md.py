"""Markdown's text rules: a cell renders as the text it was given."""

from __future__ import annotations

from llmbench.judge.report import md


def test_table_helper_alignment():
    assert md.table(["a", "n"], [["x", "1"]], right={1}) == "| a | n |\n| --- | ---: |\n| x | 1 |"


def test_cells_are_escaped_and_keep_one_line():
    assert md.escape("a | b\n<i>*x*</i>") == "a \\| b<br>&lt;i&gt;\\*x\\*&lt;/i&gt;"
    assert md.table(["h|"], [["`c`"]]) == "| h\\| |\n| --- |\n| \\`c\\` |"
