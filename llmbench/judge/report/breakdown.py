"""Where each case's step time went (``run.profile``): phase table, stacked bars, profile files.

The phase shares are those stored with the result (``phase_share_*``, the
phase's seconds over all timed steps divided by the steps' total), so the
bars of a case add up to its whole step time, ``other`` included. A profiled
case without phases (a pipeline case, whose DeepSpeed engine cannot run the
timers) keeps its row, with the stored reason in place of the figures.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from llmbench import units
from llmbench.judge.report import plots
from llmbench.judge.report.pivot import short
from llmbench.judge.report.tables import TextTable
from llmbench.judge.runs import Run, per_case, swept_columns

PHASES = ("data", "forward", "backward", "optimizer_step", "other")
COLOURS = ("#9e9e9e", "#4c78a8", "#f58518", "#54a24b", "#e45756")


SHARE = "phase_share_forward"
"""Stored for every profiled case: a figure, or null with the reason there are no phases."""


def _no_phases(case: pd.Series) -> str | None:
    """Why a profiled case has no phases (its stored null reason); None when it has them."""
    if pd.notna(case.get(SHARE)):
        return None
    reasons = case.get("null_reasons")
    return reasons.get(SHARE) if isinstance(reasons, dict) else None


def _profiled(frame: pd.DataFrame, with_phases: bool = True) -> pd.DataFrame:
    """Ok cases (median over repeats) that stored a phase breakdown, and with
    ``with_phases=False`` also those profiled without one (their reason stored)."""
    if SHARE not in frame.columns:
        return frame.iloc[0:0]
    cases = per_case(frame)
    ok = cases["status"].astype(str) == "ok"
    has = cases[SHARE].notna()
    if not with_phases:
        has |= cases.apply(_no_phases, axis=1).notna()
    return cases[ok & has]


def breakdown_table(frame: pd.DataFrame) -> TextTable | None:
    """Per case: step time, each phase's share, the reduction inside backward, collectives;
    a case without phases says why in a last column."""
    cases = _profiled(frame, with_phases=False)
    if cases.empty or cases[SHARE].isna().all():
        return None
    reasons = [_no_phases(case) for _, case in cases.iterrows()]
    why = any(reasons)
    settings = swept_columns(cases) or ["label"]
    several_runs = cases["run_id"].nunique() > 1
    header = [
        *(["run"] if several_runs else []),
        *[short(c) for c in settings],
        "step median",
        *PHASES,
        "bwd reduce",
        "comm/step",
        "comm time",
        *(["no phases because"] if why else []),
    ]
    first = header.index("step median")
    table = TextTable(
        title="Where the step time goes (run.profile: breakdown)",
        header=header,
        right=set(range(first, len(header))),
    )
    for (_, case), reason in zip(cases.iterrows(), reasons, strict=True):
        table.rows.append(
            [
                *([str(case["run_id"])] if several_runs else []),
                *[str(case[c]) for c in settings],
                units.seconds(case["step_time_s_median"]),
                *[units.percent(case.get(f"phase_share_{p}")) for p in PHASES],
                units.seconds(case.get("phase_backward_reduce_s_median")),
                units.bytes_(case.get("comm_bytes_per_step")),
                units.seconds(case.get("comm_s_median")),
                *([reason or ""] if why else []),
            ]
        )
    return table


def files_table(runs: Sequence[Run]) -> TextTable | None:
    """Trace files (Chrome/Perfetto JSON), flops tables and the profiler's FLOPs ratio per case."""
    table = TextTable(
        title="Profiles (open traces in ui.perfetto.dev or chrome://tracing)",
        header=["case", "trace files", "flops table", "profiler/analytic FLOPs"],
        right={3},
    )
    for run in runs:
        root = run.path
        for r in run.results:
            if not r.profile:
                continue
            traces = [str(root / f) if root else f for f in r.profile.get("trace_files", [])]
            flops = r.profile.get("flops_table")
            ratio = r.metrics.get("profiler_flops_ratio")
            table.rows.append(
                [
                    r.label,
                    ", ".join(traces) or "–",
                    (str(root / flops) if root else flops) if flops else "–",
                    f"{ratio:.3f}" if ratio is not None else "–",
                ]
            )
    return table if table.rows else None


def phase_chart(frame: pd.DataFrame) -> bytes | None:
    """Stacked horizontal bars: each case's median step split into its phases (ms)."""
    cases = _profiled(frame)
    if cases.empty:
        return None
    from matplotlib.figure import Figure

    shown = cases.head(plots.MAX_CASES)
    names = [str(n) for n in shown["label"]]
    if shown["label"].duplicated().any():
        settings = swept_columns(shown)
        names = [
            " ".join(f"{short(c)}={row[c]}" for c in settings) or str(row["label"])
            for _, row in shown.iterrows()
        ]
    fig = Figure(figsize=(8, 1.2 + 0.32 * len(shown)), layout="constrained")
    ax = fig.add_subplot()
    left = [0.0] * len(shown)
    step_ms = shown["step_time_s_median"].astype(float).to_numpy() * 1e3
    for phase, colour in zip(PHASES, COLOURS, strict=True):
        width = shown[f"phase_share_{phase}"].astype(float).fillna(0).to_numpy() * step_ms
        ax.barh(names, width, left=left, color=colour, label=phase)
        left = [a + b for a, b in zip(left, width, strict=True)]
    ax.invert_yaxis()
    ax.set_xlabel("median step time (ms), split by each phase's share of the timed steps")
    ax.set_title("Where the step time goes" + plots.capped_note(len(cases)))
    ax.legend(ncols=len(PHASES), loc="lower center", bbox_to_anchor=(0.5, 1.08), fontsize="small")
    return plots.png(fig)
