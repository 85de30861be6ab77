"""``llmbench report``: runs → one frame → the chosen rendering."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Group

from llmbench.judge.report import console, export, html, markdown
from llmbench.judge.report.pivot import build_pivot
from llmbench.judge.report.tables import cases_table, environment_table, failures_table
from llmbench.judge.runs import Run, runs_frame

FORMATS = ("terminal", "markdown", "html", "csv", "json")


def render(
    runs: Sequence[Run],
    fmt: str,
    rows: Sequence[str] = (),
    cols: Sequence[str] = (),
    reference: str | None = None,
) -> str | Group:
    """The report in ``fmt``: text for files and pipes, a rich Group for the terminal."""
    frame = runs_frame(runs)
    if fmt == "csv":
        return export.to_csv(frame)
    if fmt == "json":
        return export.to_json(frame)
    pivot = build_pivot(frame, rows, cols, reference)
    if fmt == "markdown":
        return markdown.report(runs, frame, pivot)
    if fmt == "html":
        return html.report(runs, frame, pivot)
    failures = failures_table(frame)
    return Group(
        console.pivot_table(pivot, title="Throughput and memory"),
        console.text_table(cases_table(frame)),
        *([console.text_table(failures)] if failures is not None else []),
        console.text_table(environment_table(runs)),
    )
