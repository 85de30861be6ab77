"""Statistics of raw per-step times, computed in one place.

Measure keeps every step's time raw; this turns them into the median and
spread that results carry (warm-up already excluded by the worker).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def step_stats(
    times_s: Sequence[float], prefix: str = "step_time_s"
) -> dict[str, float | int | None]:
    """Median and spread of raw step times; every key is present, null when empty."""
    keys = ("median", "mean", "p10", "p90", "min", "max", "std", "iqr")
    if len(times_s) == 0:
        return {f"{prefix}_{k}": None for k in keys} | {f"{prefix}_n": 0}
    arr = np.asarray(times_s, dtype=float)
    p10, p25, p50, p75, p90 = np.percentile(arr, [10, 25, 50, 75, 90])
    return {
        f"{prefix}_median": float(p50),
        f"{prefix}_mean": float(arr.mean()),
        f"{prefix}_p10": float(p10),
        f"{prefix}_p90": float(p90),
        f"{prefix}_min": float(arr.min()),
        f"{prefix}_max": float(arr.max()),
        f"{prefix}_std": float(arr.std(ddof=1)) if len(arr) > 1 else 0.0,
        f"{prefix}_iqr": float(p75 - p25),
        f"{prefix}_n": len(arr),
    }


def slowest_rank_per_step(per_rank: Sequence[Sequence[float]]) -> list[float]:
    """A step is done when its slowest rank is: element-wise max over ranks."""
    per_rank = [r for r in per_rank if len(r)]
    if not per_rank:
        return []
    n = min(len(r) for r in per_rank)
    return [max(r[i] for r in per_rank) for i in range(n)]
