"""``llmbench report``: runs → one frame → the chosen rendering."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Group

from llmbench.errors import UserError
from llmbench.judge.report import breakdown as profile
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
    breakdown: bool = False,
) -> str | Group:
    """The report in ``fmt``: text for files and pipes, a rich Group for the terminal.

    ``breakdown``: the terminal shows where each case's step time went
    (``run.profile``) instead of the throughput report.
    """
    frame = runs_frame(runs)
    if breakdown and fmt == "terminal":
        tables = [profile.breakdown_table(frame), profile.files_table(runs)]
        shown = [console.text_table(t) for t in tables if t is not None]
        if not shown:
            raise UserError(
                "no case has a phase breakdown or profile; run with run.profile=breakdown",
                where=", ".join(r.run_id for r in runs),
            )
        return Group(*shown)
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
        console.text_table(cases_table(frame, console.MAX_ROWS)),
        *([console.text_table(failures)] if failures is not None else []),
        console.text_table(environment_table(runs)),
    )
