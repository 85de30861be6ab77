"""Which phase moved: a profiled case's step-time change, attributed to its phases.

A run made with ``run.profile: breakdown`` stores, per case, the median
seconds of each phase of a step (``phase_<name>_s_median``), collective
figures (``comm_*``), and the per-step seconds behind the phases
(``phase_times_s``). ``compare`` judges the profile figures by default when
both runs measured them, exactly like step time: past the threshold
(``phase_*_s_*: +10%,+1ms``) and outside the between-run noise band of the
repeats or the history. The per-step phase times are not samples of a run's
level (the steps of one run share its conditions: see compare.py); they are
used where compare uses per-step times at all, for the within-run scatter of a
disturbed run, to say which phase scattered.

This module turns one case's verdicts into the sentence a reader needs, e.g.
``step_time +14 % — backward +31 %, optimizer_step +2 %``: the phases listed
by how many seconds of the step's change they explain, largest first. The
sentence becomes the step-time verdict's detail, so every rendering (terminal,
Markdown, JUnit, JSON, HTML) carries it on that verdict's own line.

It reads verdicts and frame rows as plain data and never imports compare, so
compare can use it without an import cycle.
"""

from __future__ import annotations

import fnmatch
import re
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from llmbench.judge.noise import deciles_10_50_90

STEP_METRIC = "step_time_s_median"
PHASES = ("data", "forward", "backward", "optimizer_step", "other")
"""The phases that add up to a step (runs' ``profile_summary.STEP_PHASES``)."""
JUDGED = ("phase_*_s_median", "comm_bytes_per_step", "comm_s_median")
"""Profile figures compare judges by default when both runs have them."""
_PHASE_METRIC = re.compile(r"^phase_(\w+?)_s_median$")
SHOWN = 3
"""Phases named in one attribution; the rest move less."""
PERCENT_UP_TO = 10.0
"""A phase that grew past 1000 % (a tiny ``other`` or ``data`` that ballooned) says it in ms."""


def phase_metric(phase: str) -> str:
    return f"phase_{phase}_s_median"


def phase_of(metric: str) -> str | None:
    """``phase_backward_s_median`` → ``backward``; None for any other metric."""
    match = _PHASE_METRIC.match(metric)
    return match.group(1) if match else None


def profile_metrics(columns: Iterable[str]) -> list[str]:
    """The profile figures among ``columns`` that compare judges without being asked."""
    return sorted({c for c in columns if any(fnmatch.fnmatchcase(c, p) for p in JUDGED)})


def measured_in_all(measured: Sequence[set[str]]) -> list[str]:
    """Profile figures every run measured for some case (``measured``: each run's metric names).

    A profile figure only one run has is not judged at all: profiling is a
    run setting, so an unprofiled current run against a profiled baseline is a
    choice, not lost data for the fail-closed gate (a case of a profiled run
    that lost its phases still is: its null figure is judged *missing*).
    """
    names = set().union(*measured) if measured else set()
    return [m for m in profile_metrics(names) if all(m in run for run in measured)]


class Verdict(Protocol):
    """What attribution reads of a compare verdict (compare.Verdict)."""

    case_id: str
    label: str
    metric: str
    verdict: str
    change: float | None
    change_rel: float | None
    detail: str


class Comparison(Protocol):
    """What attribution reads of a comparison (compare.Comparison)."""

    @property
    def verdicts(self) -> Sequence[Verdict]: ...


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
            f"{name} {_percent(rel)}"
            if rel is not None and abs(rel) <= PERCENT_UP_TO
            else f"{name} {delta * 1e3:+.2f} ms"
            for name, delta, rel in self.phases
        )
        return f"step_time {_percent(self.step_change_rel)} — {moved}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "case_id": self.case_id,
            "label": self.label,
            "text": self.text(),
            "step_change_rel": self.step_change_rel,
            "phases": [
                {"phase": name, "change_s": delta, "change_rel": rel}
                for name, delta, rel in self.phases
            ],
        }


def _percent(rel: float) -> str:
    return f"{rel * 100:+.0f} %"


def attribute(comparison: Comparison) -> list[Attribution]:
    """One attribution per case whose step time regressed or improved and whose phases were judged."""
    moved_steps = {
        v.case_id
        for v in comparison.verdicts
        if v.metric == STEP_METRIC
        and v.verdict in ("regression", "improvement")
        and v.change_rel is not None
    }
    by_case: dict[str, dict[str, Verdict]] = {}
    for v in comparison.verdicts:  # only the cases whose step time moved (few, of 10k)
        if v.case_id in moved_steps:
            by_case.setdefault(v.case_id, {})[v.metric] = v
    found = []
    for case_id, verdicts in by_case.items():
        step = verdicts[STEP_METRIC]
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


def annotate(comparison: Comparison) -> list[Attribution]:
    """Put each attribution on its step-time verdict's detail (first), and return them."""
    found = attribute(comparison)
    by_case = {a.case_id: a for a in found}
    for v in comparison.verdicts:
        if v.metric == STEP_METRIC and v.case_id in by_case:
            text = by_case[v.case_id].text()
            v.detail = f"{text}; {v.detail}" if v.detail else text
    return found


def _spread_s(rows: Sequence[dict[str, Any]], phase: str) -> float | None:
    """p90 − p10 of one phase's per-step seconds, per process (repeat), median over them."""
    spreads = []
    for r in rows:
        steps = (r.get("phase_times_s") or {}).get(phase) if r.get("status") == "ok" else None
        if steps is not None and len(steps) >= 3:
            p10, _, p90 = deciles_10_50_90(steps)
            spreads.append(p90 - p10)
    return statistics.median(spreads) if spreads else None


def scattered_phase(
    baseline: Sequence[dict[str, Any]], current: Sequence[dict[str, Any]]
) -> str | None:
    """Of a disturbed run, the phase whose per-step scatter (in seconds) grew most, as text.

    Both sides' rows are one case's processes with their ``phase_times_s``;
    None when either run has no breakdown or no phase scattered more.
    """
    grown = []
    for phase in PHASES:
        base, cur = _spread_s(baseline, phase), _spread_s(current, phase)
        if base is not None and cur is not None and cur > base:
            grown.append((cur - base, phase, base, cur))
    if not grown:
        return None
    _, phase, base, cur = max(grown)
    return f"most in {phase} (p90−p10 {cur * 1e3:.1f} ms per step vs {base * 1e3:.1f} ms)"
