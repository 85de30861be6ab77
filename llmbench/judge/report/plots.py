"""Matplotlib charts as PNG bytes, for the HTML report and ``llmbench history --plot``.

Figures are built with ``matplotlib.figure.Figure`` (no pyplot): no global
state, no display needed, safe to call from any thread. A chart with nothing
to draw returns None and the report says so instead of showing an empty box.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import TYPE_CHECKING

import pandas as pd

from llmbench import units
from llmbench.judge.runs import DEVICE_MEMORY, per_case

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.axis import Axis
    from matplotlib.figure import Figure

MAX_CASES = 40
"""More bars than this are unreadable; charts show the first MAX_CASES and say so."""
MEMORY_SERIES = (
    ("allocator_peak_bytes", "allocator peak"),
    ("allocator_reserved_peak_bytes", "allocator reserved"),
    (DEVICE_MEMORY, "device (NVML)"),
    ("device_case_memory_peak_bytes", "case on device (NVML)"),
    ("host_rss_peak_bytes", "host RSS"),
)


def _figure(width_in: float, height_in: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width_in, height_in), layout="constrained")


def png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=96)
    return buffer.getvalue()


def _ok_cases(frame: pd.DataFrame) -> pd.DataFrame:
    cases = per_case(frame)
    return cases[cases["status"].astype(str) == "ok"]


def _names(cases: pd.DataFrame) -> list[str]:
    if cases["run_id"].nunique() > 1:
        return [
            f"{label} ({run})" for label, run in zip(cases["label"], cases["run_id"], strict=True)
        ]
    return [str(label) for label in cases["label"]]


def _bars_height(n: int) -> float:
    return 1.2 + 0.32 * n


def _bytes_ticks(axis: Axis) -> None:
    from matplotlib.ticker import FuncFormatter

    axis.set_major_formatter(FuncFormatter(lambda v, _: units.bytes_(v)))


def capped_note(total: int) -> str:
    return f" (first {MAX_CASES} of {total})" if total > MAX_CASES else ""


def throughput_chart(frame: pd.DataFrame) -> bytes | None:
    """Tokens/s per configuration (step time for cases without a throughput)."""
    cases = _ok_cases(frame)
    metric, label = "tokens_per_s", "tokens/s"
    if metric not in cases.columns or cases[metric].isna().all():
        metric, label = "step_time_s_median", "median step time (s)"
    if metric not in cases.columns:
        return None
    cases = cases[cases[metric].notna()]
    if cases.empty:
        return None
    total = len(cases)
    cases = cases.head(MAX_CASES)
    fig = _figure(8, _bars_height(len(cases)))
    ax = fig.subplots()
    names = _names(cases)
    values = cases[metric].astype(float).tolist()
    best = max(values) if metric == "tokens_per_s" else min(values)
    ax.barh(names, values, color=["tab:green" if v == best else "tab:blue" for v in values])
    ax.invert_yaxis()
    ax.set_xlabel(label)
    ax.set_title(f"Throughput by configuration{capped_note(total)}")
    return png(fig)


def memory_chart(
    frame: pd.DataFrame, capacity_bytes: float | None, capacity_label: str
) -> bytes | None:
    """Peak memory per case, allocator vs device vs host, against the capacity."""
    cases = _ok_cases(frame)
    series = [
        (column, name)
        for column, name in MEMORY_SERIES
        if column in cases.columns and cases[column].notna().any()
    ]
    if not series:
        return None
    total = len(cases)
    cases = cases.head(MAX_CASES)
    fig = _figure(8, _bars_height(len(cases) * max(1, len(series)) * 0.6))
    ax = fig.subplots()
    height = 0.8 / len(series)
    positions = list(range(len(cases)))
    peak = 0.0
    for i, (column, name) in enumerate(series):
        values = cases[column].astype(float).fillna(0.0).tolist()
        peak = max(peak, *values)
        ax.barh([p + i * height for p in positions], values, height=height, label=name)
    ax.set_yticks([p + height * (len(series) - 1) / 2 for p in positions], _names(cases))
    ax.invert_yaxis()
    if capacity_bytes:
        ax.axvline(capacity_bytes, color="tab:red", linestyle="--", label=capacity_label)
    # A 400 MiB case on an 80 GiB device would be an invisible sliver on a linear axis.
    if capacity_bytes and peak and capacity_bytes / peak > 20:
        ax.set_xscale("log")
    _bytes_ticks(ax.xaxis)
    ax.legend(loc="lower right", fontsize="small")
    ax.set_title(f"Peak memory{capped_note(total)}")
    return png(fig)


def step_time_chart(frame: pd.DataFrame) -> bytes | None:
    """Distribution of the timed steps of each case (all repeats pooled)."""
    ok = frame[(frame["status"].astype(str) == "ok") & (frame["step_times_s"].map(len) > 0)]
    keys = ok[["run_id", "case_id"]].drop_duplicates()
    if keys.empty:
        return None
    total = len(keys)
    shown = ok.merge(keys.head(MAX_CASES), on=["run_id", "case_id"])
    pooled: dict[tuple[str, str], list[float]] = {}
    for run_id, case_id, times in shown[["run_id", "case_id", "step_times_s"]].itertuples(
        index=False
    ):
        pooled.setdefault((run_id, case_id), []).extend(times)
    cases = per_case(shown)
    names = dict(
        zip(zip(cases["run_id"], cases["case_id"], strict=True), _names(cases), strict=True)
    )
    fig = _figure(8, _bars_height(len(pooled)))
    ax = fig.subplots()
    ax.boxplot(list(pooled.values()), vert=False, showfliers=True)
    ax.set_yticks(range(1, len(pooled) + 1), [names[key] for key in pooled])
    ax.invert_yaxis()
    ax.set_xlabel("step time (s)")
    ax.set_title(f"Step-time distributions{capped_note(total)}")
    return png(fig)


TIMELINE_TIME = "t_rel_s"
TIMELINE_NOT_PLOTTED = {"t", TIMELINE_TIME}


def timeline_chart(timeline: pd.DataFrame, title: str) -> bytes | None:
    """Every sampled column against time, one panel each, a line per device, phases shaded.

    ``timeline`` is a sampler timeline (llmbench.judge.timeline): one row
    per sample per device, ``t_rel_s``, ``device``, ``phase`` and float columns.
    """
    if TIMELINE_TIME not in timeline.columns:
        return None
    numeric = [
        c
        for c in timeline.select_dtypes("number").columns
        if c not in TIMELINE_NOT_PLOTTED and timeline[c].notna().any()
    ]
    if not numeric:
        return None
    devices = (
        list(timeline.groupby("device", sort=False)) if "device" in timeline else [("", timeline)]
    )
    fig = _figure(8, 1.0 + 1.4 * len(numeric))
    axes = fig.subplots(len(numeric), 1, sharex=True, squeeze=False)[:, 0]
    for ax, column in zip(axes, numeric, strict=True):
        for device, rows in devices:
            if rows[column].notna().any():
                ax.plot(rows[TIMELINE_TIME], rows[column], linewidth=1, label=str(device))
        ax.set_ylabel(column, fontsize="small")
        if column.endswith("_bytes"):
            _bytes_ticks(ax.yaxis)
        if len(ax.get_lines()) > 1:
            ax.legend(fontsize="x-small")
        if "phase" in timeline.columns:
            first = devices[0][1]
            _shade_phases(ax, first[TIMELINE_TIME], first["phase"])
    axes[-1].set_xlabel("time since sampling started (s)")
    axes[0].set_title(title)
    return png(fig)


def _shade_phases(ax: Axes, times: pd.Series, phases: pd.Series) -> None:
    """Alternate light bands over the spans of each phase, named at their start."""
    change = phases.ne(phases.shift())
    starts = list(times[change])
    names = list(phases[change])
    ends = [*starts[1:], times.iloc[-1]]
    for i, (start, end, name) in enumerate(zip(starts, ends, names, strict=True)):
        if i % 2:
            ax.axvspan(start, end, color="0.92", zorder=0)
        ax.text(start, 1.0, f" {name}", transform=ax.get_xaxis_transform(), fontsize="x-small")


def history_chart(
    series: pd.DataFrame, metric: str, change_points: Sequence[tuple[str, str]]
) -> bytes:
    """One line per case over the runs, its noise band shaded; change points circled.

    ``series`` has columns ``label``, ``case_id``, ``run_id``, ``started_at``,
    ``value`` and (when known) ``band_low`` / ``band_high``: the band the gate
    judged each run by, so a point outside the shading is one it would flag
    (if also past the threshold). ``change_points`` holds (case id, run id) of
    each detected shift.
    """
    fig = _figure(9, 4.5)
    ax = fig.subplots()
    marks = set(change_points)
    for (case_id, label), group in series.groupby(["case_id", "label"], sort=False):
        group = group.sort_values("started_at", kind="stable")
        x = list(range(len(group))) if group["started_at"].isna().any() else group["started_at"]
        line = ax.plot(x, group["value"], marker=".", label=str(label))[0]
        if "band_low" in group and group["band_low"].notna().any():
            ax.fill_between(
                x,
                group["band_low"].astype(float),
                group["band_high"].astype(float),
                color=line.get_color(),
                alpha=0.15,
                step="mid",
                linewidth=0,
            )
        hit = [(case_id, r) in marks for r in group["run_id"]]
        if any(hit):
            ax.scatter(
                [v for v, h in zip(x, hit, strict=True) if h],
                group["value"][hit],
                s=160,
                facecolors="none",
                edgecolors=line.get_color(),
                linewidths=2,
                zorder=3,
            )
    ax.set_ylabel(metric)
    if metric.endswith("_bytes"):
        _bytes_ticks(ax.yaxis)
    ax.set_title(
        f"{metric} over runs (shaded: noise band of the runs before; circles: change points)"
    )
    if series["case_id"].nunique() <= 12:
        ax.legend(fontsize="small")
    fig.autofmt_xdate()
    return png(fig)
