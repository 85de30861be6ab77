"""Regression detection between two runs: match cases by id, judge every metric.

A metric has *changed* only when both hold:

1. the change is beyond its threshold, in the metric's own direction
   (defaults: throughput −5 %, step time +5 %, memory +2 % and +256 MiB — the
   larger of the two, so neither a few MiB on a small case nor 1 % of an
   80 GiB device raises an alarm); and
2. a two-sided Mann-Whitney U test (scipy.stats.mannwhitneyu) of baseline
   against current samples gives p < alpha (default 0.01). The samples are
   the per-repeat values of the metric when both runs have enough repeats for
   the test to reach alpha at all (≥ 5 each at alpha 0.01); otherwise, for a
   figure derived from step times (step time, tokens/s, MFU, …), the per-step
   times of all repeats pooled.

Beyond the threshold but not significant is *noisy*: never a failure. A
metric measured once per case with no repeats (e.g. peak memory of a single
run) cannot be tested; it is judged by its threshold alone, which is why the
memory default is wide. A case that was ``ok`` and is now ``oom``, ``error``,
``timeout`` or ``unsupported`` is a regression whatever its figures.

Exit codes: 0 no regression, 1 a regression, 2 a case errored in the current
run or the inputs are invalid (including different environments, unless
``--allow-env-mismatch``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from llmbench.errors import ExitCode, UserError
from llmbench.judge.fingerprint import env_differences
from llmbench.judge.runs import DEVICE_MEMORY, FAILED_STATUSES, Run, per_case, runs_frame
from llmbench.judge.thresholds import Threshold, Thresholds, default_threshold

DEFAULT_ALPHA = 0.01
DEFAULT_METRICS = (
    "tokens_per_s",
    "step_time_s_median",
    "peak_memory_bytes",
    DEVICE_MEMORY,
    "energy_j_per_step",
    "busbw_gb_s",
)
# Figures computed from the per-step times: their samples are the step times.
STEP_DERIVED = {
    "tokens_per_s",
    "samples_per_s",
    "tokens_per_s_per_device",
    "tflops_per_s_per_device",
    "hardware_tflops_per_s_per_device",
    "mfu",
    "hfu",
    "algbw_gb_s",
    "busbw_gb_s",
    *(f"step_time_s_{s}" for s in ("median", "mean", "p10", "p90", "min", "max")),
}
VERDICTS = ("regression", "failed", "noisy", "missing", "new", "improvement", "unchanged")
# --------------------------------------------------------------------------- statistics


STEP_TEST = "Mann-Whitney U on steps"
REPEAT_TEST = "Mann-Whitney U on repeats"
NO_TEST = "none (too few samples)"


@dataclass(frozen=True)
class Samples:
    """What a metric's change is tested on, and how."""

    test: str
    baseline: tuple[float, ...]
    current: tuple[float, ...]

    @property
    def testable(self) -> bool:
        return self.test != NO_TEST


def min_attainable_p(n1: int, n2: int) -> float:
    """Smallest two-sided p the exact Mann-Whitney U test can give with these sizes.

    All baseline samples below all current ones is one of C(n1+n2, n1)
    equally likely orderings under the null; two-sided doubles it.
    """
    if n1 == 0 or n2 == 0:
        return 1.0
    return min(1.0, 2.0 / math.comb(n1 + n2, n1))


def samples_for(
    metric: str, baseline: Sequence[dict[str, Any]], current: Sequence[dict[str, Any]], alpha: float
) -> Samples:
    """The best samples the two runs offer for ``metric`` (see the module docstring)."""

    def values(rows: Sequence[dict[str, Any]]) -> tuple[float, ...]:
        return tuple(float(r[metric]) for r in rows if _number(r.get(metric)) is not None)

    def steps(rows: Sequence[dict[str, Any]]) -> tuple[float, ...]:
        return tuple(t for r in rows if r["status"] == "ok" for t in (r.get("step_times_s") or []))

    candidates = [(REPEAT_TEST, values(baseline), values(current))]
    if metric in STEP_DERIVED:
        candidates.append((STEP_TEST, steps(baseline), steps(current)))
    for name, x, y in candidates:
        if min_attainable_p(len(x), len(y)) < alpha:
            return Samples(name, x, y)
    return Samples(NO_TEST, candidates[0][1], candidates[0][2])


def mann_whitney_p(pairs: Sequence[Samples]) -> list[float]:
    """Two-sided Mann-Whitney U p-value of each pair (scipy.stats.mannwhitneyu).

    Pairs of the same sizes go to scipy as one 2-D call: a comparison of
    10,000 cases tests thousands of pairs, and one call per pair costs
    milliseconds of argument handling each.
    """
    import numpy as np
    from scipy.stats import mannwhitneyu

    p_values = [math.nan] * len(pairs)
    groups: dict[tuple[int, int], list[int]] = {}
    for index, pair in enumerate(pairs):
        groups.setdefault((len(pair.baseline), len(pair.current)), []).append(index)
    for indices in groups.values():
        x = np.array([pairs[i].baseline for i in indices], dtype=float)
        y = np.array([pairs[i].current for i in indices], dtype=float)
        result = mannwhitneyu(x, y, axis=1, alternative="two-sided")
        for i, p in zip(indices, np.atleast_1d(result.pvalue), strict=True):
            p_values[i] = float(p)
    return p_values


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
    p_value: float | None = None
    test: str | None = None
    n_baseline: int | None = None
    n_current: int | None = None
    detail: str = ""


@dataclass
class Comparison:
    baseline_id: str | None
    current_id: str
    scenario: str
    alpha: float
    verdicts: list[Verdict] = field(default_factory=list)
    env_differences: list[str] = field(default_factory=list)
    errored: list[str] = field(default_factory=list)
    """Labels of current cases that ended in error or timeout."""
    note: str = ""
    """Why nothing was compared (no baseline), when that is the case."""

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(VERDICTS, 0)
        for v in self.verdicts:
            counts[v.verdict] += 1
        return counts

    @property
    def exit_code(self) -> int:
        if self.errored:
            return ExitCode.INVALID
        if any(v.verdict == "regression" for v in self.verdicts):
            return ExitCode.FAILED_CHECK
        return ExitCode.OK

    @property
    def headline(self) -> str:
        if self.baseline_id is None:
            return f"no baseline: {self.note}"
        counts = self.counts()
        if self.errored:
            text = f"ERRORED: {len(self.errored)} case(s) errored"
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
    if value is None or isinstance(value, str) or pd.isna(value):
        return None
    return float(value)


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


def _metric_verdict(
    case: dict[str, Any],
    metric: str,
    threshold: Threshold,
    base_rows: Sequence[dict[str, Any]],
    cur_rows: Sequence[dict[str, Any]],
    base_case: dict[str, Any],
    alpha: float,
) -> tuple[Verdict | None, Samples | None]:
    """The verdict so far, and the samples to test when the change is beyond the threshold."""
    b, c = _number(base_case.get(metric)), _number(case.get(metric))
    verdict = Verdict(case["case_id"], case["label"], metric, "unchanged", b, c)
    verdict.threshold = threshold.text()
    if b is None and c is None:
        return None, None
    if b is None or c is None:
        reasons = (base_case if c is not None else case).get("null_reasons") or {}
        verdict.verdict = "new" if b is None else "missing"
        verdict.detail = reasons.get(metric, "not measured")
        return verdict, None
    verdict.change = c - b
    verdict.change_rel = (c - b) / abs(b) if b else None
    if abs(c - b) <= threshold.limit(b):
        return verdict, None
    samples = samples_for(metric, base_rows, cur_rows, alpha)
    verdict.test = samples.test
    verdict.n_baseline, verdict.n_current = len(samples.baseline), len(samples.current)
    return verdict, samples


def _settle(verdict: Verdict, worse: int, p_value: float | None, alpha: float) -> None:
    """Beyond the threshold: a regression or improvement if significant, else noisy."""
    verdict.p_value = p_value
    if p_value is not None and p_value >= alpha:
        verdict.verdict = "noisy"
        verdict.detail = f"beyond the threshold but p = {p_value:.3g} ≥ {alpha:g}"
        return
    verdict.verdict = "regression" if (verdict.change or 0.0) * worse > 0 else "improvement"
    if p_value is None:
        verdict.detail = "too few samples to test: judged by the threshold alone"


def _rows_by_case(frame: pd.DataFrame, metrics: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
    columns = ["case_id", "status", "step_times_s", *[m for m in metrics if m in frame.columns]]
    grouped: dict[str, list[dict[str, Any]]] = {}
    for row in frame[columns].to_dict("records"):
        row["status"] = str(row["status"])
        grouped.setdefault(row["case_id"], []).append(row)
    return grouped


def _cases(frame: pd.DataFrame, metrics: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per case (median over repeats): identity, status, reasons and the judged metrics."""
    cases = per_case(frame)
    columns = ["case_id", "label", "status", "reason", "null_reasons"]
    records = cases[columns + [m for m in metrics if m in cases.columns]].to_dict("records")
    for record in records:
        record["status"] = str(record["status"])
    return {r["case_id"]: r for r in records}


def compared_metrics(
    frames: Sequence[pd.DataFrame], thresholds: Thresholds, metrics: Sequence[str] = ()
) -> list[str]:
    """The metrics to judge: those asked for (or the defaults), plus any given a threshold."""
    wanted = list(metrics or DEFAULT_METRICS)
    wanted += [m for m, t in thresholds.overrides.items() if t is not None and m not in wanted]
    present = [m for m in wanted if any(m in f.columns and f[m].notna().any() for f in frames)]
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


def compare_runs(
    baseline: Run,
    current: Run,
    thresholds: Thresholds | None = None,
    metrics: Sequence[str] = (),
    alpha: float = DEFAULT_ALPHA,
    allow_env_mismatch: bool = False,
) -> Comparison:
    """Every case of either run, judged (see the module docstring for the rules)."""
    if not 0 < alpha < 1:
        raise UserError(f"alpha must be between 0 and 1, not {alpha}", where="--alpha")
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
    base_frame, cur_frame = runs_frame([baseline]), runs_frame([current])
    if cur_frame.empty:
        raise UserError("the current run has no results", where=current.run_id)
    names = compared_metrics([base_frame, cur_frame], thresholds, metrics)
    base_cases, cur_cases = _cases(base_frame, names), _cases(cur_frame, names)
    base_rows, cur_rows = _rows_by_case(base_frame, names), _rows_by_case(cur_frame, names)
    comparison = Comparison(baseline.run_id, current.run_id, scenario, alpha)
    comparison.env_differences = differences
    pending: dict[tuple[str, str], tuple[Samples, list[tuple[Verdict, int]]]] = {}
    for case_id, case in cur_cases.items():
        if case["status"] in FAILED_STATUSES:
            comparison.errored.append(case["label"])
        base = base_cases.get(case_id)
        if base is None:
            verdict = "failed" if case["status"] in FAILED_STATUSES else "new"
            comparison.verdicts.append(
                Verdict(
                    case_id,
                    case["label"],
                    "status",
                    verdict,
                    None,
                    case["status"],
                    detail=_reason(case),
                )
            )
            continue
        status = _status_verdict(base["status"], case["status"])
        if not (base["status"] == case["status"] == "ok"):
            comparison.verdicts.append(
                Verdict(
                    case_id,
                    case["label"],
                    "status",
                    status,
                    base["status"],
                    case["status"],
                    detail=_reason(case) or _reason(base),
                )
            )
            continue
        for metric in names:
            threshold = thresholds.for_metric(metric)
            if threshold is None:
                continue
            judged, samples = _metric_verdict(
                case, metric, threshold, base_rows[case_id], cur_rows[case_id], base, alpha
            )
            if judged is not None:
                comparison.verdicts.append(judged)
            if judged is not None and samples is not None:
                # tokens/s and step time of one case share their step samples: test once
                key = (case_id, samples.test if samples.test == STEP_TEST else metric)
                pending.setdefault(key, (samples, []))[1].append((judged, threshold.worse))
    tests = list(pending.values())
    testable = [samples for samples, _ in tests if samples.testable]
    p_values = iter(mann_whitney_p(testable))
    for samples, judged in tests:
        p_value = next(p_values) if samples.testable else None
        for verdict, worse in judged:
            _settle(verdict, worse, p_value, alpha)
    for case_id, base in base_cases.items():
        if case_id not in cur_cases:
            comparison.verdicts.append(
                Verdict(
                    case_id,
                    base["label"],
                    "status",
                    "missing",
                    base["status"],
                    None,
                    detail="not in the current run",
                )
            )
    return comparison


def _reason(case: dict[str, Any]) -> str:
    reason = case.get("reason")
    return reason if isinstance(reason, str) else ""


def no_baseline(current: Run, why: str) -> Comparison:
    """The verdict when there is nothing to compare with: reported, never a failure."""
    comparison = Comparison(None, current.run_id, current.scenario_name, DEFAULT_ALPHA, note=why)
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
