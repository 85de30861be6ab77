"""Noise bands: how far a metric moves between runs of unchanged code, measured.

The regression gate (compare.py) and the history's trend (history.py) judge a
value against these bands rather than against the scatter of one run's steps
(see compare.py for why). Each band is a plain interval in the metric's unit,
with the source it was measured from, so every output can show it.

Bands of positive figures are computed on their logarithms: timing noise is
multiplicative (a busier machine stretches every step by a factor), so the
band is a ratio around the centre — never a negative step time — and the
bands of step time and of throughput (its reciprocal, times a constant) say
the same thing. Figures that can be zero or negative use the values as they are.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

NOISE_Z = 4.0
"""Half-width of the noise band in (robust) standard deviations: the change-point detector's Z."""
MIN_HISTORY = 5
"""Good earlier runs of a case needed before its history gives a band."""
HISTORY_RUNS = 10
"""How many of the latest good runs make the history band (a window: old levels age out)."""
MIN_REPEATS = 2
"""Processes per run needed, on both sides, before repeats give a band."""
SCATTER_FACTOR = 2.0
"""A run whose steps scatter this many times more than the baseline's is flagged as disturbed."""


@dataclass(frozen=True)
class Band:
    """Where a metric's value falls between runs of unchanged code."""

    low: float
    high: float
    source: str
    """How it was measured, e.g. ``history of 8 runs`` or ``repeats 3+3``."""


def robust_sd(values: Sequence[float]) -> float:
    """1.4826 × the median absolute deviation: a standard deviation one wild value cannot inflate."""
    centre = statistics.median(values)
    return 1.4826 * statistics.median([abs(v - centre) for v in values])


def _scale(*groups: Sequence[float]) -> tuple[list[list[float]], bool]:
    """The groups on the scale bands are computed on: logarithms when every value is positive."""
    log = all(v > 0 for group in groups for v in group)
    return [[math.log(v) if log else float(v) for v in group] for group in groups], log


def _band(centre: float, half: float, log: bool, source: str) -> Band:
    if log:
        return Band(math.exp(centre - half), math.exp(centre + half), source)
    return Band(centre - half, centre + half, source)


def history_band(values: Sequence[float]) -> Band | None:
    """The band of a metric's earlier good runs (one value per run), or None with too few:
    their median ± NOISE_Z robust standard deviations."""
    if len(values) < MIN_HISTORY:
        return None
    (scaled,), log = _scale(values)
    half = NOISE_Z * robust_sd(scaled)
    return _band(statistics.median(scaled), half, log, f"history of {len(scaled)} runs")


def best(values: Sequence[float], worse: int) -> float:
    """A run's figure for a verdict: its best process (fastest, leanest).

    Interference from other work only ever slows a process down, and on a
    shared machine it hits whole processes (one of three runs during a burst
    of someone else's tests, its steps all slow together), so the best of a
    run's processes is the figure least touched by it — Python's ``timeit``
    documentation makes the same argument for its minimum. A slower code path
    slows every process, the best one included.
    """
    return min(values) if worse > 0 else max(values)


def repeats_band(baseline: Sequence[float], current: Sequence[float], worse: int) -> Band | None:
    """The band of per-process values: the baseline's best ± NOISE_Z pooled standard
    deviations of both runs' processes around their own means."""
    if min(len(baseline), len(current)) < MIN_REPEATS:
        return None
    (b, c), log = _scale(baseline, current)
    residuals = [v - statistics.fmean(group) for group in (b, c) for v in group]
    sd = math.sqrt(sum(r * r for r in residuals) / (len(residuals) - 2))
    centre = best(b, worse)  # log is monotonic: the best of the logs
    return _band(centre, NOISE_Z * sd, log, f"repeats {len(b)}+{len(c)}")


def noise_band(
    history: Sequence[float], baseline: Sequence[float], current: Sequence[float], worse: int
) -> Band | None:
    """The band a change must clear: the history's when it has enough runs, else the repeats'.

    The history band measures exactly what a verdict needs — how the run-level
    figure (the best of a run's processes) moves between runs of unchanged
    code — and includes the process-to-process scatter behind it. The repeats
    band stands in until the history is long enough; it sees only the scatter
    within two runs, and one process of three stalled by a neighbour inflates it.
    """
    return history_band(history) or repeats_band(baseline, current, worse)


RECORDED_DECILES = ("step_time_s_p10", "step_time_s_median", "step_time_s_p90", "step_time_s_n")
"""The step-time figures a result records, from which its step spread is read (below)."""


def process_spread(
    steps: Sequence[float], metrics: Mapping[str, Any] | None = None
) -> float | None:
    """(p90 − p10) / median of one process's step times; None with fewer than 3 steps.

    A result carries those deciles among its metrics, computed from the same
    step times when it was recorded (judge/stats.py, numpy's linear rule):
    reading them is what lets ``compare`` on 10k cases skip 20k quantile
    computations. Results without them (older, or ingested) get them computed.
    """
    recorded = [(metrics or {}).get(k) for k in RECORDED_DECILES]
    if all(isinstance(v, (int, float)) for v in recorded):
        p10, p50, p90, n = recorded
    elif len(steps) >= 3:
        (p10, p50, p90), n = deciles_10_50_90(steps), len(steps)
    else:
        return None
    return (p90 - p10) / p50 if n >= 3 and p50 > 0 else None


def step_scatter(spreads: Iterable[float | None]) -> float | None:
    """A run's own step scatter: the median over its processes of each one's spread."""
    known = [s for s in spreads if s is not None]
    return float(statistics.median(known)) if known else None


def deciles_10_50_90(steps: Sequence[float]) -> tuple[float, float, float]:
    """numpy.percentile's default (linear) p10, p50, p90. ``statistics.quantiles``'
    inclusive method is the same rule and ~10x faster on a case's few dozen steps
    (compare on 10k cases calls this 20k times); a missing step (null) goes to numpy,
    imported only then: the judge commands do not otherwise need it (~50 ms)."""
    try:
        deciles = statistics.quantiles(steps, n=10, method="inclusive")
    except TypeError:
        import numpy as np

        return tuple(np.percentile(np.asarray(steps, dtype=float), [10, 50, 90]))
    return deciles[0], deciles[4], deciles[8]
