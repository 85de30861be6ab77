"""The run report in Markdown (GitHub-flavoured); escaping and pipe tables are in md.py."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from llmbench.judge.report import breakdown as profile
from llmbench.judge.report.md import escape, table
from llmbench.judge.report.pivot import Pivot, cell_lines, legend, short
from llmbench.judge.report.tables import TextTable, cases_table, environment_table, failures_table
from llmbench.judge.runs import Run


def text_table(source: TextTable) -> str:
    return f"### {escape(source.title)}\n\n" + table(source.header, source.rows, source.right)


def pivot_table(pivot: Pivot) -> str:
    """The grid; the best cell in bold, lines of a cell joined by <br>."""
    header = [short(k) for k in pivot.row_keys] + [pivot.col_title(c) or "case" for c in pivot.cols]
    lines = [
        "| " + " | ".join(escape(h) for h in header) + " |",
        "| " + " | ".join(["---"] * len(pivot.row_keys) + ["---:"] * len(pivot.cols)) + " |",
    ]
    for row in pivot.rows:
        cells = []
        for col in pivot.cols:
            cell = pivot.cell(row, col)
            text = "<br>".join(escape(line) for line in cell_lines(cell))
            cells.append(f"**{text}**" if cell is not None and cell.best else text)
        lines.append("| " + " | ".join([*[escape(v) for v in row], *cells]) + " |")
    return f"_{escape(legend(pivot))}_\n\n" + "\n".join(lines)


def report(runs: Sequence[Run], frame: pd.DataFrame, pivot: Pivot) -> str:
    """The whole report as one Markdown document."""
    scenarios = sorted({r.scenario_name for r in runs if r.scenario_name})
    parts = [
        f"# llmbench report: {escape(', '.join(scenarios) or 'results')}",
        "Runs: " + ", ".join(escape(r.run_id) for r in runs),
        "## Throughput and memory\n\n" + pivot_table(pivot),
        text_table(cases_table(frame)),
    ]
    parts += [
        text_table(t)
        for t in (profile.breakdown_table(frame), profile.files_table(runs))
        if t is not None
    ]
    failures = failures_table(frame)
    if failures is not None:
        parts.append(text_table(failures))
    parts.append(text_table(environment_table(runs)))
    return "\n\n".join(parts) + "\n"
