"""The report's tables as plain text cells: the terminal, Markdown and HTML style them.

Building the cells once keeps the three renderers showing the same figures
with the same units; a renderer only decides how a cell looks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd

from llmbench import units
from llmbench.judge.report.pivot import short
from llmbench.judge.runs import Run, memory_metric, per_case, swept_columns

# env.json keys worth a reader's eye, in reading order (the fingerprint keys first).
ENV_KEYS = (
    "accelerator",
    "accelerator_count",
    "driver",
    "cuda_driver_version",
    "cpu_model",
    "cpu_count",
    "memory_bytes",
    "torch",
    "deepspeed",
    "transformers",
    "python",
    "hostname",
    "llmbench",
    "llmbench_commit",
    "fingerprint",
)
FAILED = ("oom", "error", "timeout", "unsupported", "skipped")


@dataclass
class TextTable:
    title: str
    header: list[str]
    rows: list[list[str]] = field(default_factory=list)
    right: set[int] = field(default_factory=set)
    """Indices of columns holding figures (right-aligned)."""
    status_column: int | None = None
    """Index of the column holding a case status (renderers colour it)."""
    total: int | None = None
    """Rows the table has in all when only the first ``len(rows)`` were built; None: all were."""


def cell_text(value: object) -> str:
    """A setting or reason as a table cell: a missing value is a dash, never "None" or "nan"."""
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "–"
    return str(value)


def cases_table(frame: pd.DataFrame, max_rows: int | None = None) -> TextTable:
    """One row per case: settings, status, throughput, step time and spread, memory.

    ``max_rows``: build only the rows a terminal shows (formatting all 10k cases'
    figures was a third of a 10k-case report's time); ``total`` says how many there are.
    """
    cases = per_case(frame)
    settings = swept_columns(cases) or ["label"]
    several_runs = cases["run_id"].nunique() > 1
    memory = memory_metric(cases)
    extra_memory = [
        c
        for c in ("allocator_peak_bytes", "host_rss_peak_bytes")
        if c != memory
        and c in cases.columns
        and cases[c].notna().any()
        and not cases[c].equals(cases[memory])  # on CPU the peak is the host RSS
    ]
    header = [
        *(["run"] if several_runs else []),
        *[short(c) for c in settings],
        "status",
        "tokens/s",
        "step median",
        "p10–p90",
        "device memory" if memory != "peak_memory_bytes" else "peak memory",
        *[c.removesuffix("_bytes").replace("_", " ") for c in extra_memory],
        *(["repeats"] if "repeats" in cases.columns else []),
    ]
    first_figure = header.index("tokens/s")
    table = TextTable(
        title="Cases",
        header=header,
        right=set(range(first_figure, len(header))),
        status_column=header.index("status"),
        total=len(cases),
    )
    needed = ["run_id", "status", *settings, "step_time_s_p10", "step_time_s_p90", memory]
    needed += ["tokens_per_s", "step_time_s_median", *extra_memory, "repeats"]
    shown = cases[[c for c in dict.fromkeys(needed) if c in cases.columns]]
    for row in shown.iloc[:max_rows].to_dict("records"):
        ok = row["status"] == "ok"
        spread = (
            f"{units.seconds(row.get('step_time_s_p10'))}–{units.seconds(row.get('step_time_s_p90'))}"
            if ok
            else "–"
        )
        table.rows.append(
            [
                *([str(row["run_id"])] if several_runs else []),
                *[cell_text(row.get(c)) for c in settings],
                str(row["status"]),
                units.rate(row.get("tokens_per_s")),
                units.seconds(row.get("step_time_s_median")),
                spread,
                units.bytes_(row.get(memory)),
                *[units.bytes_(row.get(c)) for c in extra_memory],
                *([cell_text(row["repeats"])] if "repeats" in cases.columns else []),
            ]
        )
    return table


def failures_table(frame: pd.DataFrame) -> TextTable | None:
    """Cases that did not produce a measurement, with the reason each one gave."""
    cases = per_case(frame)
    failed = cases[cases["status"].astype(str).isin(FAILED)]
    if failed.empty:
        return None
    table = TextTable(
        title="Failed, unsupported and skipped cases",
        header=["case", "status", "reason"],
        status_column=1,
    )
    for row in failed.to_dict("records"):
        table.rows.append([str(row["label"]), str(row["status"]), cell_text(row.get("reason"))])
    return table


def environment_table(runs: Sequence[Run]) -> TextTable:
    """Where each run ran: one column per run, one row per provenance key."""
    table = TextTable(title="Environment", header=["", *[r.run_id for r in runs]])
    for key in ENV_KEYS:
        values = [r.env.get(key) for r in runs]
        if all(v is None for v in values):
            continue
        shown = [units.bytes_(v) if key == "memory_bytes" else cell_text(v) for v in values]
        table.rows.append([key, *shown])
    return table
