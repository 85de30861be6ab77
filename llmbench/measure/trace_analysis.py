"""Holistic Trace Analysis (HTA) over a case's GPU traces: where the GPUs' time went.

``run.profile: trace`` leaves one Kineto/Chrome trace per rank. On a GPU run,
Meta's HTA (``holistictraceanalysis``, the ``hta`` extra) reads them after the
case has ended — outside every timed figure — and two of its analyses are
stored with the result:

- the temporal breakdown: of each rank's GPU time span, the share spent in
  compute kernels, in non-compute kernels (communication, memory copies) and
  idle (no kernel running);
- the communication/computation overlap: the share of each rank's
  communication-kernel time during which a compute kernel ran too.

Per rank under ``profile["hta"]``; the mean over ranks as metrics
(``gpu_compute_pct``, ``gpu_non_compute_pct``, ``gpu_idle_pct``,
``comm_comp_overlap_pct``) so compare, history and the reports carry them.
A CPU trace has no GPU kernels or streams, so nothing is computed there and
each metric says why (the profiler's op table, ``profile["top_ops"]``,
stands in).
"""

from __future__ import annotations

import contextlib
import io
import logging
import statistics
import warnings
from pathlib import Path
from typing import Any

from llmbench.judge.result import CaseResult

METRICS = {
    "gpu_compute_pct": "compute_time_pctg",
    "gpu_non_compute_pct": "non_compute_time_pctg",
    "gpu_idle_pct": "idle_time_pctg",
    "comm_comp_overlap_pct": "comp_comm_overlap_pctg",
}
"""llmbench's metric → HTA's column (per rank; the metric is the mean over ranks)."""
CPU_TRACE = (
    "HTA analyses GPU kernels and streams; a CPU trace has none "
    "(profile.top_ops holds the profiler's op table instead)"
)
NOT_INSTALLED = (
    "holistictraceanalysis is not installed (pip install 'llmbench[hta]'); "
    "the traces are kept for a later analysis"
)


def analyse(result: CaseResult, traces: dict[int, Path], on_gpu: bool) -> None:
    """Add HTA's breakdown of ``traces`` (rank → trace file) to ``result``, or say why not."""
    if not on_gpu:
        _absent(result, CPU_TRACE)
        return
    try:
        from hta.trace_analysis import TraceAnalysis
    except ImportError:
        _absent(result, NOT_INSTALLED)
        return
    try:
        ranks = _per_rank(TraceAnalysis, traces)
    except Exception as exc:  # a trace HTA cannot read must not lose the case's figures
        _absent(result, f"HTA could not analyse the traces: {type(exc).__name__}: {exc}")
        return
    result.profile["hta"] = ranks
    for metric in METRICS:
        values = [r[metric] for r in ranks if r.get(metric) is not None]
        result.set_metric(
            metric,
            statistics.fmean(values) if values else None,
            None if values else "HTA found no kernels of that kind in the traces",
        )


def _per_rank(analysis_class: Any, traces: dict[int, Path]) -> list[dict[str, Any]]:
    """HTA's two tables as one row per rank, its log kept out of llmbench's console."""
    quiet = io.StringIO()
    logging.getLogger("hta").setLevel(logging.WARNING)
    with (
        contextlib.redirect_stdout(quiet),
        contextlib.redirect_stderr(quiet),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore", RuntimeWarning)  # 0/0 where a rank has no comm kernels
        analysis = analysis_class(
            trace_files={rank: str(path) for rank, path in traces.items()},
            trace_dir=str(next(iter(traces.values())).parent),
        )
        breakdown = analysis.get_temporal_breakdown(visualize=False)
        overlap = analysis.get_comm_comp_overlap(visualize=False)
    rows = breakdown.merge(overlap, on="rank", how="left").sort_values("rank")
    out = []
    for row in rows.to_dict("records"):
        entry: dict[str, Any] = {"rank": int(row["rank"])}
        entry["kernel_span_s"] = float(row["kernel_time(us)"]) / 1e6
        for metric, column in METRICS.items():
            value = row.get(column)
            entry[metric] = None if value is None or value != value else float(value)
        out.append(entry)
    return out


def _absent(result: CaseResult, why: str) -> None:
    result.profile["hta"] = None
    for metric in METRICS:
        result.set_metric(metric, None, why)
