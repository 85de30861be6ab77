"""The terminal comparison table: one row per case, grouped by the swept settings."""

from __future__ import annotations

import pandas as pd
from rich.table import Table
from rich.text import Text

from llmbench.report import fmt
from llmbench.report.frame import per_case, swept_columns

STATUS_STYLE = {
    "ok": "green",
    "oom": "red",
    "error": "red",
    "timeout": "red",
    "unsupported": "yellow",
    "skipped": "dim",
}


def short(column: str) -> str:
    return column.rsplit(".", 1)[-1]


def comparison_table(frame: pd.DataFrame, title: str | None = None) -> Table:
    """Swept settings, status, throughput, step time (median, p10–p90), peak memory, reason."""
    frame = per_case(frame)
    swept = swept_columns(frame)
    if swept:
        frame = frame.sort_values(swept, kind="stable")
    table = Table(title=title, header_style="bold", show_lines=False)
    for column in swept or ["label"]:
        table.add_column(short(column))
    table.add_column("status")
    table.add_column("tokens/s", justify="right")
    table.add_column("step median", justify="right")
    table.add_column("p10–p90", justify="right")
    table.add_column("peak mem", justify="right")
    table.add_column("reason", overflow="fold", max_width=60)
    best = (
        frame.loc[frame["status"] == "ok", "tokens_per_s"].max()
        if "tokens_per_s" in frame
        else None
    )
    for _, row in frame.iterrows():
        status = str(row["status"])
        tokens = row.get("tokens_per_s")
        tokens_text = Text(
            fmt.rate(tokens), style="bold green" if best is not None and tokens == best else ""
        )
        spread = (
            f"{fmt.seconds(row.get('step_time_s_p10'))}–{fmt.seconds(row.get('step_time_s_p90'))}"
            if status == "ok"
            else "–"
        )
        table.add_row(
            *[str(row[c]) for c in swept or ["label"]],
            Text(status, style=STATUS_STYLE.get(status, "")),
            tokens_text,
            fmt.seconds(row.get("step_time_s_median")),
            spread,
            fmt.bytes_(row.get("peak_memory_bytes")),
            Text(str(row["reason"])) if isinstance(row.get("reason"), str) else "",
        )
    return table
