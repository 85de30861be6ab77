"""Regression detection between two runs: match cases by id, judge every metric.

A run's figure for a case is its best process (fastest step, highest
throughput, least memory: ``noise.best`` says why), from ``run.repeats``
processes. A metric has *changed* only when both hold:

1. the change from baseline to current is beyond its threshold, in the
   metric's own direction (defaults: throughput −5 %, step time +5 %, memory
   +2 % and +256 MiB — the larger of the two, so neither a few MiB on a small
   case nor 1 % of an 80 GiB device raises an alarm); and
2. the current value lies outside the metric's **noise band**: how far the
   value moves between runs of unchanged code on this machine, measured, not
   assumed (bands of positive figures are ratios, computed on logarithms:
   noise.py). Two sources:

   * **history**, when it has at least ``MIN_HISTORY`` runs: the case's figure
     in the last ``HISTORY_RUNS`` good runs of the
     same scenario and environment fingerprint: their median ± ``NOISE_Z``
     robust standard deviations (1.4826 × the median absolute deviation) —
     Bencher's and conbench's statistical thresholds, made robust to the odd
     wild night;
   * **repeats**, until then: ``run.repeats`` are separate processes,
     interleaved across the run (asv's design: compare per-process
     statistics, never per-step samples): the baseline's figure ± ``NOISE_Z``
     pooled standard deviations of the per-process values of both runs
     around their own means.

   Per-step times are not samples of a run's level: the steps of one run
   share that run's conditions, so a test on them calls every ordinary
   run-to-run shift significant (3 of 6 back-to-back comparisons of unchanged
   code failed that way). Their scatter is kept as a within-run quality
   figure: a run whose own step scatter is ``SCATTER_FACTOR`` × the
   baseline's is flagged as disturbed.

A profiled run's phase and collective figures (``run.profile: breakdown``) are
judged the same way, by default, when both runs measured them, and a
step-time change of such a case names the phases that moved in its verdict's
detail (attribution.py).

Beyond the threshold but inside the band is *noisy*: shown, never a failure.
A metric with no band (one repeat each and too little history) is judged by
its threshold alone and says so; memory, which barely moves between runs, is
meant to be judged that way, which is why its default threshold is wide. A
case that was ``ok`` and is now ``oom``, ``error``, ``timeout`` or
``unsupported`` is a regression whatever its figures.

The check fails closed: a case or metric of the baseline that the current run
lacks (lost, now ``skipped``, or null) is *missing* and exits 2 unless allowed
(``--allow-missing``, or ``allow_missing`` patterns in the thresholds file).

Exit codes (llmbench/errors.py): 0 no regression, 1 a regression, 2 a case
errored, data is missing, or the inputs are invalid (including different
environments, unless ``--allow-env-mismatch``).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from llmbench.errors import ExitCode, UserError
from llmbench.judge.attribution import Attribution, annotate, measured_in_all, scattered_phase
from llmbench.judge.fingerprint import env_differences, test_hook_warning
from llmbench.judge.noise import (
    HISTORY_RUNS,
    SCATTER_FACTOR,
    Band,
    best,
    noise_band,
    process_spread,
    step_scatter,
)
from llmbench.judge.result import CaseResult
from llmbench.judge.runs import DEVICE_MEMORY, FAILED_STATUSES, STATUS_SEVERITY, Run
from llmbench.judge.thresholds import Threshold, Thresholds, default_threshold

DEFAULT_METRICS = (
    "tokens_per_s",
    "step_time_s_median",
    "peak_memory_bytes",
    DEVICE_MEMORY,
    "energy_j_per_step",
    "busbw_gb_s",
)
VERDICTS = ("regression", "failed", "missing", "noisy", "new", "improvement", "unchanged")
# --------------------------------------------------------------------------- verdicts


@dataclass
class Verdict:
    case_id: str
    label: str
    metric: str
    """A metric name, or ``status`` for a verdict on the case as a whole."""
    verdict: str
    baseline: float | str | None = None
    current: float | str | None = None
    change: float | None = None
    change_rel: float | None = None
    threshold: str | None = None
    band_low: float | None = None
    band_high: float | None = None
    """The noise band (metric units): where unchanged code's value falls between runs."""
    band_source: str | None = None
    n_baseline: int | None = None
    n_current: int | None = None
    """Processes (repeats) behind each side's value."""
    allowed: bool = False
    """A missing verdict the user allowed (``--allow-missing`` or a thresholds-file rule)."""
    detail: str = ""

    @property
    def band(self) -> Band | None:
        if self.band_low is None or self.band_high is None:
            return None
        return Band(self.band_low, self.band_high, self.band_source or "")


@dataclass
class Comparison:
    baseline_id: str | None
    current_id: str
    scenario: str
    verdicts: list[Verdict] = field(default_factory=list)
    env_differences: list[str] = field(default_factory=list)
    errored: list[str] = field(default_factory=list)
    """Labels of current cases that ended in error or timeout."""
    disturbed: list[str] = field(default_factory=list)
    """``label: why`` for current cases whose own step scatter is abnormal (a quality flag)."""
    warnings: list[str] = field(default_factory=list)
    """Facts every output must carry, e.g. a test-only hook active in one of the runs."""
    note: str = ""
    """Why nothing was compared (no baseline), when that is the case."""
    attributions: list[Attribution] = field(default_factory=list)
    """The phases behind each step-time regression or improvement of a profiled case."""

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(VERDICTS, 0)
        for v in self.verdicts:
            counts[v.verdict] += 1
        return counts

    @property
    def missing(self) -> list[Verdict]:
        """Missing data the user did not allow: the gate cannot vouch for it, so it fails."""
        return [v for v in self.verdicts if v.verdict == "missing" and not v.allowed]

    @property
    def exit_code(self) -> int:
        if self.errored or self.missing:
            return ExitCode.INVALID
        if any(v.verdict == "regression" for v in self.verdicts):
            return ExitCode.FAILED_CHECK
        return ExitCode.OK

    @property
    def headline(self) -> str:
        if self.baseline_id is None:
            text = f"no baseline: {self.note}"
            if self.errored:
                return f"ERRORED: {len(self.errored)} case(s) errored; {text}"
            return f"MISSING: the run stored no results; {text}" if self.missing else text
        counts = self.counts()
        missing = self.missing
        if self.errored:
            text = f"ERRORED: {len(self.errored)} case(s) errored"
        elif missing:
            cases = {v.case_id for v in missing}
            text = (
                f"MISSING: {len(missing)} case/metric result(s) of the baseline missing from the "
                f"current run ({len(cases)} case(s), e.g. {missing[0].label} {missing[0].metric}: "
                f"{missing[0].detail or 'absent'}); pass --allow-missing to accept"
            )
        elif counts["regression"]:
            text = f"REGRESSION: {counts['regression']} regression(s)"
        else:
            text = "OK: no regression"
        others = ", ".join(f"{n} {k}" for k, n in counts.items() if n and k != "regression")
        return text + (f"; {others}" if others else "")

    def sorted_verdicts(self) -> list[Verdict]:
        order = {v: i for i, v in enumerate(VERDICTS)}
        return sorted(self.verdicts, key=lambda v: order[v.verdict])


def _number(value: Any) -> float | None:
    """A finite number, or None (missing, NaN, text, a flag, a list).

    A float, what results hold, is told by its exact type first: the ABC check
    behind ``numbers.Real`` cost ~0.03 s of a 10k-case ``compare`` (60k calls).
    """
    if type(value) is not float:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return None
        value = float(value)
    return value if math.isfinite(value) else None


def _status_verdict(base: str, cur: str) -> str:
    if cur in FAILED_STATUSES:
        return "regression" if base == "ok" else "failed"
    if cur == base:
        return "unchanged"
    if cur == "skipped":
        return "missing"
    if base == "ok":
        return "regression"
    return "improvement" if cur == "ok" else "failed"


def _settle(verdict: Verdict, threshold: Threshold, band: Band | None) -> None:
    """Beyond the threshold: a regression or improvement if outside the noise band, else noisy."""
    change, current = verdict.change or 0.0, float(verdict.current)  # type: ignore[arg-type]
    if band is not None:
        outside = current > band.high if change > 0 else current < band.low
        if not outside:
            verdict.verdict = "noisy"
            verdict.detail = f"beyond the threshold but inside the noise band ({band.source})"
            return
    verdict.verdict = "regression" if change * threshold.worse > 0 else "improvement"
    if band is None:
        verdict.detail = (
            "no noise measurement (1 repeat and too little history): judged by the threshold alone"
        )


@dataclass
class _Side:
    """One run's view of a case: its worst repeat (status, reason), every process's result."""

    case: CaseResult
    processes: list[CaseResult]

    def values(self, metric: str) -> list[float]:
        return [v for r in self.processes if (v := _number(r.metrics.get(metric))) is not None]

    def scatter(self) -> float | None:
        return step_scatter(
            process_spread(r.step_times_s, r.metrics) for r in self.processes if r.status == "ok"
        )

    def phase_rows(self) -> list[dict[str, Any]]:
        """What attribution.scattered_phase reads of each process."""
        return [{"status": r.status, "phase_times_s": r.phase_times_s} for r in self.processes]


def _sides(run: Run) -> dict[str, _Side]:
    """Per case, in the run's order: its processes and the worst of them (the first, on a tie).

    Built from the results themselves, not the results frame: compare reads a
    few fields of each result, and the frame (then its rows as dicts again)
    was most of the time ``compare`` took on 10k cases.
    """
    grouped: dict[str, list[CaseResult]] = {}
    for result in run.results:
        grouped.setdefault(result.case_id, []).append(result)
    return {
        case_id: _Side(max(repeats, key=_severity), repeats) for case_id, repeats in grouped.items()
    }


def _severity(result: CaseResult) -> int:
    return STATUS_SEVERITY.get(result.status, len(STATUS_SEVERITY))


def measured_metrics(run: Run) -> set[str]:
    """The metrics some result of the run has a value for (NaN is no value).

    Names first (a set union of the metrics' keys, in C), then each name until its
    first value: usually the first result, so ~30 checks instead of one per figure.
    """
    names: set[str] = set().union(*(r.metrics for r in run.results))
    return {
        name
        for name in names
        if any((v := r.metrics.get(name)) is not None and v == v for r in run.results)
    }


def history_values(
    runs: Sequence[Run], thresholds: Thresholds, metrics: Sequence[str]
) -> dict[tuple[str, str], list[float]]:
    """(case id, metric) → the figure of each good run of ``runs`` (its best process)."""
    judged = [(m, t.worse) for m in metrics if (t := thresholds.for_metric(m)) is not None]
    values: dict[tuple[str, str], list[float]] = {}
    for run in runs:
        for case_id, side in _sides(run).items():
            if side.case.status != "ok":
                continue
            for metric, worse in judged:
                if found := side.values(metric):
                    values.setdefault((case_id, metric), []).append(best(found, worse))
    return values


def compared_metrics(
    measured: Sequence[set[str]], thresholds: Thresholds, metrics: Sequence[str] = ()
) -> list[str]:
    """The metrics to judge: those asked for (or the defaults, with the profile figures both
    runs measured), plus any given a threshold. ``measured``: each run's measured metrics."""
    wanted = list(metrics or (*DEFAULT_METRICS, *measured_in_all(measured)))
    wanted += [m for m, t in thresholds.overrides.items() if t is not None and m not in wanted]
    present = [m for m in wanted if any(m in names for names in measured)]
    for metric in metrics:
        if metric not in present:
            raise UserError("not measured in either run", where="--metric", key=metric)
        if metric not in thresholds.overrides and default_threshold(metric) is None:
            raise UserError(
                f"no default threshold; give one, e.g. --threshold {metric}:+5%",
                where="--metric",
                key=metric,
            )
    return [m for m in present if thresholds.for_metric(m) is not None]


def _metric_verdict(
    base: _Side,
    cur: _Side,
    metric: str,
    threshold: Threshold,
    threshold_text: str,
    history: Sequence[float],
) -> Verdict | None:
    """``threshold_text``: ``threshold.text()``, formatted once per metric, not per case."""
    case = cur.case
    base_values, cur_values = base.values(metric), cur.values(metric)
    b = best(base_values, threshold.worse) if base_values else None
    c = best(cur_values, threshold.worse) if cur_values else None
    verdict = Verdict(case.case_id, case.label, metric, "unchanged", b, c)
    verdict.threshold = threshold_text
    if b is None and c is None:
        return None
    if b is None or c is None:
        reasons = (base.case if c is not None else case).null_reasons
        verdict.verdict = "new" if b is None else "missing"
        verdict.detail = reasons.get(metric, "not measured")
        return verdict
    verdict.n_baseline, verdict.n_current = len(base_values), len(cur_values)
    band = noise_band(history, base_values, cur_values, threshold.worse)
    if band is not None:
        verdict.band_low, verdict.band_high, verdict.band_source = band.low, band.high, band.source
    verdict.change = c - b
    verdict.change_rel = (c - b) / abs(b) if b else None
    if abs(c - b) > threshold.limit(b):
        _settle(verdict, threshold, band)
    return verdict


def _scatter_flag(base: _Side, cur: _Side) -> str | None:
    own, theirs = cur.scatter(), base.scatter()
    if own is None or theirs is None or own <= SCATTER_FACTOR * max(theirs, 0.01):
        return None
    where = scattered_phase(base.phase_rows(), cur.phase_rows())
    return (
        f"{cur.case.label}: step scatter (p90−p10)/median {own:.0%} vs the baseline's "
        f"{theirs:.0%}: a disturbed run" + (f", {where}" if where else "")
    )


def _missing_verdict(case_id: str, base: CaseResult, thresholds: Thresholds) -> Verdict:
    verdict = Verdict(
        case_id,
        base.label,
        "status",
        "missing",
        base.status,
        None,
        detail="not in the current run",
    )
    verdict.allowed = thresholds.missing_allowed(case_id, base.label, "status")
    return verdict


def compare_runs(
    baseline: Run,
    current: Run,
    thresholds: Thresholds | None = None,
    metrics: Sequence[str] = (),
    allow_env_mismatch: bool = False,
    history: Sequence[Run] = (),
) -> Comparison:
    """Every case of either run, judged (see the module docstring for the rules).

    ``history``: earlier good runs of the same scenario and environment
    (the baseline among them or not), newest last; the latest
    ``HISTORY_RUNS`` give each metric's history band.
    """
    differences = env_differences(baseline.env, current.env)
    if differences and not allow_env_mismatch:
        raise UserError(
            "the runs come from different environments ("
            + "; ".join(differences)
            + "); a difference there is not a code regression. Pass --allow-env-mismatch to compare anyway",
            where=f"{baseline.run_id} vs {current.run_id}",
        )
    scenario = current.scenario_name or baseline.scenario_name
    thresholds = thresholds or Thresholds()
    for run in (current, baseline):
        if not run.results:
            role = "current" if run is current else "baseline"
            raise UserError(f"the {role} run has no results: nothing to judge", where=run.run_id)
    names = compared_metrics(
        [measured_metrics(baseline), measured_metrics(current)], thresholds, metrics
    )
    judged_metrics = {m: t for m in names if (t := thresholds.for_metric(m)) is not None}
    threshold_texts = {m: t.text() for m, t in judged_metrics.items()}
    base_sides, cur_sides = _sides(baseline), _sides(current)
    past = [r for r in history if r.run_id != current.run_id][-HISTORY_RUNS:]
    past_values = history_values(past, thresholds, names)
    comparison = Comparison(baseline.run_id, current.run_id, scenario)
    comparison.env_differences = differences
    comparison.warnings = [
        f"{role} {run.run_id}: {warning}"
        for role, run in (("baseline", baseline), ("current", current))
        if (warning := test_hook_warning(run.env))
    ]
    for case_id, cur in cur_sides.items():
        case = cur.case
        if case.status in FAILED_STATUSES:
            comparison.errored.append(case.label)
        base = base_sides.get(case_id)
        if base is None:
            verdict = "failed" if case.status in FAILED_STATUSES else "new"
            comparison.verdicts.append(
                Verdict(
                    case_id,
                    case.label,
                    "status",
                    verdict,
                    None,
                    case.status,
                    detail=case.reason or "",
                )
            )
            continue
        if not (base.case.status == case.status == "ok"):
            status = Verdict(
                case_id,
                case.label,
                "status",
                _status_verdict(base.case.status, case.status),
                base.case.status,
                case.status,
                detail=case.reason or base.case.reason or "",
            )
            status.allowed = thresholds.missing_allowed(case_id, case.label, "status")
            comparison.verdicts.append(status)
            continue
        if flag := _scatter_flag(base, cur):
            comparison.disturbed.append(flag)
        for metric, threshold in judged_metrics.items():
            judged = _metric_verdict(
                base,
                cur,
                metric,
                threshold,
                threshold_texts[metric],
                past_values.get((case_id, metric), []),
            )
            if judged is not None:
                judged.allowed = thresholds.missing_allowed(case_id, case.label, metric)
                comparison.verdicts.append(judged)
    for case_id, base in base_sides.items():
        if case_id not in cur_sides:
            comparison.verdicts.append(_missing_verdict(case_id, base.case, thresholds))
    comparison.attributions = annotate(comparison)  # and each such verdict names its phases
    return comparison


def no_baseline(current: Run, why: str) -> Comparison:
    """The verdict when there is nothing to compare with: reported, never a failure."""
    comparison = Comparison(None, current.run_id, current.scenario_name, note=why)
    warning = test_hook_warning(current.env)
    comparison.warnings = [f"current {current.run_id}: {warning}"] if warning else []
    if not current.results:  # a night that measured nothing must not pass
        comparison.verdicts.append(
            Verdict("", "(run)", "status", "missing", detail="the run stored no results")
        )
    for result in current.results:
        if result.status in FAILED_STATUSES:
            comparison.errored.append(result.label)
            comparison.verdicts.append(
                Verdict(
                    result.case_id,
                    result.label,
                    "status",
                    "failed",
                    None,
                    result.status,
                    detail=result.reason or "",
                )
            )
    return comparison
