"""Which phase moved: a step-time change of a profiled case, attributed to its phases.

A run made with ``run.profile: breakdown`` stores, per case, the median
seconds of each phase of a step (``phase_<name>_s_median``) and the per-step
seconds behind them (``phase_times_s``). ``compare`` judges those like any
metric (thresholds and a Mann-Whitney U test on the per-step phase times);
this module turns the verdicts of one case into the sentence a reader needs,
e.g. ``step_time +14 % — backward +31 %, optimizer_step +2 %``: the phases
listed by how many seconds of the step's change they explain, largest first.

It reads verdicts and frame rows as plain data and never imports compare, so
compare can use its names without an import cycle.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llmbench.judge.compare import Comparison, Verdict

STEP_METRIC = "step_time_s_median"
PHASES = ("data", "forward", "backward", "optimizer_step", "other")
"""The phases that add up to a step (runs' ``profile_summary.STEP_PHASES``)."""
JUDGED = ("phase_*_s_median", "comm_bytes_per_step", "comm_s_median")
"""Profile figures compare judges by default when a run has them."""
_PHASE_METRIC = re.compile(r"^phase_(\w+?)_s_median$")
SHOWN = 3
"""Phases named in one attribution; the rest move less."""


def phase_metric(phase: str) -> str:
    return f"phase_{phase}_s_median"


def phase_of(metric: str) -> str | None:
    """``phase_backward_s_median`` → ``backward``; None for any other metric."""
    match = _PHASE_METRIC.match(metric)
    return match.group(1) if match else None


def profile_metrics(columns: Iterable[str]) -> list[str]:
    """The profile figures among ``columns`` that compare judges without being asked."""
    return sorted({c for c in columns if any(fnmatch.fnmatchcase(c, p) for p in JUDGED)})


def phase_steps(rows: Sequence[dict[str, Any]], phase: str) -> tuple[float, ...]:
    """Per-step seconds of one phase over the ok rows (repeats) of a case."""
    return tuple(
        t
        for r in rows
        if r.get("status") == "ok" and isinstance(r.get("phase_times_s"), dict)
        for t in r["phase_times_s"].get(phase, ())
    )


@dataclass(frozen=True)
class Attribution:
    """A case whose step time changed, and the phases that moved with it."""

    case_id: str
    label: str
    step_change_rel: float
    phases: tuple[tuple[str, float, float | None], ...]
    """(phase, change in seconds, relative change), largest absolute change first."""

    def text(self) -> str:
        moved = ", ".join(
            f"{name} {_percent(rel)}" if rel is not None else f"{name} {delta * 1e3:+.2f} ms"
            for name, delta, rel in self.phases
        )
        return f"step_time {_percent(self.step_change_rel)} — {moved}"


def _percent(rel: float) -> str:
    return f"{rel * 100:+.0f} %"


def attribute(comparison: Comparison) -> list[Attribution]:
    """One attribution per case whose step time regressed or improved and whose phases were judged."""
    by_case: dict[str, dict[str, Verdict]] = {}
    for v in comparison.verdicts:
        by_case.setdefault(v.case_id, {})[v.metric] = v
    found = []
    for case_id, verdicts in by_case.items():
        step = verdicts.get(STEP_METRIC)
        if step is None or step.verdict not in ("regression", "improvement"):
            continue
        if step.change_rel is None:
            continue
        moved = []
        for phase in PHASES:
            v = verdicts.get(phase_metric(phase))
            if v is not None and v.change is not None:
                moved.append((phase, v.change, v.change_rel))
        if not moved:
            continue
        moved.sort(key=lambda m: abs(m[1]), reverse=True)
        found.append(Attribution(case_id, step.label, step.change_rel, tuple(moved[:SHOWN])))
    return found
