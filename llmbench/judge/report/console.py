"""Terminal renderings: the per-case comparison table, the pivot grid, text tables."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import pandas as pd
from rich.table import Table
from rich.text import Text

from llmbench import units
from llmbench.judge.report.pivot import Pivot, cell_lines, legend, short
from llmbench.judge.report.tables import TextTable, cell_text
from llmbench.judge.runs import per_case, swept_columns

MAX_ROWS = 200
"""Longer tables are cut in the terminal (rendering 10,000 rows takes rich tens of seconds)."""

if TYPE_CHECKING:
    from llmbench.judge.history import RunRow, Trend

STATUS_STYLE = {
    "ok": "green",
    "oom": "red",
    "error": "red",
    "timeout": "red",
    "unsupported": "yellow",
    "skipped": "dim",
}


def comparison_table(frame: pd.DataFrame, title: str | None = None) -> Table:
    """Swept settings, status, throughput, step time (median, p10–p90), peak memory, reason.

    Throughput is tokens/s for training cases and bus bandwidth for collectives;
    the reason column appears only when some case has one.
    """
    frame = per_case(frame)
    swept = swept_columns(frame)
    if swept:
        frame = frame.sort_values(swept, kind="stable")
    comm = "busbw_gb_s" in frame and frame["busbw_gb_s"].notna().any()
    rate, rate_title, rate_fmt = (
        ("busbw_gb_s", "busbw GB/s", units.number)
        if comm
        else ("tokens_per_s", "tokens/s", units.rate)
    )
    reasons = (
        "reason" in frame and frame["reason"].map(lambda r: isinstance(r, str) and bool(r)).any()
    )
    table = Table(title=_title(title), header_style="bold", show_lines=False)
    for column in swept or ["label"]:
        table.add_column(short(column))
    table.add_column("status")
    table.add_column(rate_title, justify="right")
    table.add_column("step median", justify="right")
    table.add_column("p10–p90", justify="right")
    table.add_column("peak mem", justify="right")
    if reasons:
        table.add_column("reason", overflow="fold", max_width=60)
    best = frame.loc[frame["status"] == "ok", rate].max() if rate in frame else None
    for _, row in frame.iterrows():
        status = str(row["status"])
        value = row.get(rate)
        rate_text = Text(
            rate_fmt(value), style="bold green" if best is not None and value == best else ""
        )
        spread = (
            f"{units.seconds(row.get('step_time_s_p10'))}–{units.seconds(row.get('step_time_s_p90'))}"
            if status == "ok"
            else "–"
        )
        cells = [
            *[Text(cell_text(row[c])) for c in swept or ["label"]],
            Text(status, style=STATUS_STYLE.get(status, "")),
            rate_text,
            units.seconds(row.get("step_time_s_median")),
            spread,
            units.bytes_(row.get("peak_memory_bytes")),
        ]
        if reasons:
            cells.append(Text(str(row["reason"])) if isinstance(row.get("reason"), str) else "")
        table.add_row(*cells)
    return table


def _title(text: str | None) -> Text | None:
    """Titles name scenarios and runs (data): rich would read ``[/x]`` in them as markup."""
    return Text(text) if text else None


def _more(shown: int, total: int) -> str:
    return (
        f"\n{total - shown} more rows: see --format html, markdown or csv" if total > shown else ""
    )


def pivot_table(pivot: Pivot, title: str | None = None, max_rows: int = MAX_ROWS) -> Table:
    """The grid of cases; the best cell bold green, failed cells coloured by status."""
    caption = legend(pivot) + _more(min(max_rows, len(pivot.rows)), len(pivot.rows))
    table = Table(title=_title(title), caption=Text(caption), header_style="bold", show_lines=True)
    for key in pivot.row_keys:
        table.add_column(short(key))
    for col in pivot.cols:
        table.add_column(pivot.col_title(col) or "case", justify="right")
    for row in pivot.rows[:max_rows]:
        cells: list[Text] = []
        for col in pivot.cols:
            cell = pivot.cell(row, col)
            style = ""
            if cell is not None and cell.status != "ok":
                style = STATUS_STYLE.get(cell.status, "")
            elif cell is not None and cell.best:
                style = "bold green"
            cells.append(Text("\n".join(cell_lines(cell)), style=style))
        table.add_row(*[Text(str(v)) for v in row], *cells)
    return table


def text_table(source: TextTable, max_rows: int = MAX_ROWS) -> Table:
    """A :class:`TextTable` as a rich Table (cell text is never read as markup)."""
    total = len(source.rows) if source.total is None else source.total
    caption = _more(min(max_rows, total), total).strip() or None
    table = Table(
        title=_title(source.title),
        caption=_title(caption),
        header_style="bold",
    )
    for index, name in enumerate(source.header):
        table.add_column(
            name,
            justify="right" if index in source.right else "left",
            overflow="fold",
        )
    for row in source.rows[:max_rows]:
        styled = [
            Text(value, style=STATUS_STYLE.get(value, "") if i == source.status_column else "")
            for i, value in enumerate(row)
        ]
        table.add_row(*styled)
    return table


def trend_table(trend: Trend) -> Table:
    """A metric per case over runs, oldest first; change points marked."""
    from llmbench.judge.history import Z
    from llmbench.judge.noise import HISTORY_RUNS, MIN_HISTORY, NOISE_Z

    caption = (
        f"noise band: median ± {NOISE_Z:g} robust σ of up to {HISTORY_RUNS} earlier runs "
        f"(≥ {MIN_HISTORY}), what the gate judges a run by; change point: a level shift beyond "
        f"the compare threshold and {Z:g} robust σ (rolling median, MAD scale)"
    )
    table = Table(title=Text(f"{trend.metric} over runs"), header_style="bold", caption=caption)
    numeric = (trend.metric, "noise band", "vs previous")
    for name in ("case", "run", "started", "fingerprint", *numeric, ""):
        table.add_column(name, justify="right" if name in numeric else "left")
    for _, group in trend.frame.groupby("case_id", sort=False):
        previous = None
        for i, row in enumerate(group.to_dict("records")):
            change = f"{(row['value'] / previous - 1) * 100:+.1f} %" if previous else ""
            started = row["started_at"]
            cells = [
                str(row["label"]) if i == 0 else "",
                str(row["run_id"]),
                started.strftime("%Y-%m-%d %H:%M") if not pd.isna(started) else "–",
                str(row["fingerprint"]),
                units.figure(trend.metric, row["value"]),
                _band(trend.metric, row.get("band_low"), row.get("band_high")),
                change,
            ]
            mark = Text("◆ change point", style="bold yellow") if row["change_point"] else ""
            table.add_row(*map(Text, cells), mark)
            previous = row["value"]
        table.add_section()
    return table


def _band(metric: str, low: float | None, high: float | None) -> str:
    if low is None or high is None or pd.isna(low) or pd.isna(high):
        return ""
    return f"{units.figure(metric, low)} – {units.figure(metric, high)}"


def runs_table(rows: Sequence[RunRow]) -> Table:
    """Indexed runs, newest first, with what they are worth as a baseline."""
    table = Table(title="Indexed runs", header_style="bold")
    table.add_column("run", no_wrap=True)
    for name in ("scenario", "fingerprint", "source", "cases", "statuses", "verdict", "mark"):
        table.add_column(name, overflow="fold")
    for row in rows:
        cells = [
            row.run_id,
            row.scenario,
            row.fingerprint or "–",
            row.source,
            str(row.cases),
            ", ".join(f"{n} {s}" for s, n in sorted(row.statuses.items())),
        ]
        verdict = Text(row.verdict or "–", style="red" if row.exit_code else "")
        table.add_row(*map(Text, cells), verdict, Text(row.mark or ""))
    return table
