"""``training.micro_batch: auto``: the largest micro-batch that runs, by real probes."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llmbench.define.cases import Case
from llmbench.judge.result import CaseResult


def search_micro_batch(
    case: Case,
    case_dir: Path,
    measure: Callable[[Path, int], CaseResult],
    phase: Callable[[str], None] | None = None,
) -> CaseResult:
    """The largest micro-batch that runs: double until one fails for memory, then bisect.

    Every probe is a full, real measurement in its own process group
    (``cases/<id>/mb<N>/``); the case's result is the largest size that ran,
    with every probe's outcome and throughput kept for the throughput-vs-batch curve.
    """
    tried: dict[int, CaseResult] = {}

    def probe(size: int) -> CaseResult:
        if phase:
            phase(f"probing micro_batch {size}")
        tried[size] = measure(case_dir / f"mb{size}", size)
        return tried[size]

    limit = case.spec.training.micro_batch_max
    good, bad = 0, None  # largest size that ran; smallest that ran out of memory
    size = 1
    while size <= limit and bad is None:
        outcome = probe(size).status
        if outcome == "ok":
            good, size = size, size * 2
        elif outcome == "oom":
            bad = size
        else:
            break  # an error is not a memory boundary: report it, search no further
    else:
        if bad is None and 0 < good < limit:  # doubling stepped over the cap: try the cap
            outcome = probe(limit).status
            if outcome == "ok":
                good = limit
            elif outcome == "oom":
                bad = limit
    while good and bad is not None and bad - good > 1:
        mid = (good + bad) // 2
        outcome = probe(mid).status
        if outcome == "ok":
            good = mid
        elif outcome == "oom":
            bad = mid
        else:
            break
    chosen = tried[good] if good else tried[1]
    boundary = min((m for m, r in tried.items() if r.status == "oom"), default=None)
    chosen.probes = [_probe_summary(m, r) for m, r in tried.items()]
    chosen.set_metric(
        "micro_batch_oom", boundary, f"nothing up to micro_batch_max {limit} ran out of memory"
    )
    if good:
        timeline = case_dir / f"mb{good}" / "timeline.csv"
        if timeline.exists():  # where reports look for a case's timeline
            shutil.copyfile(timeline, case_dir / "timeline.csv")
    return chosen


def _probe_summary(micro_batch: int, result: CaseResult) -> dict[str, Any]:
    keys = (
        "tokens_per_s",
        "step_time_s_median",
        "peak_memory_bytes",
        "allocator_peak_bytes",
        "device_memory_used_peak_bytes",
    )
    return {
        "micro_batch": micro_batch,
        "status": result.status,
        "reason": result.reason,
        **{k: result.metrics.get(k) for k in keys},
    }
