"""Rank records of a profiled case → phase metrics, communication figures and profile artefacts.

A step's phases are taken from the rank that was slowest in that step — the
rank whose time *is* the case's step time — so for every step

    data + forward + backward + optimizer_step + other = step time

holds exactly. ``other`` is what neither llmbench's data clock nor DeepSpeed's
timers covered (Python between the engine calls, the closing synchronise) and
is always stored, never dropped. ``backward_inner`` (autograd, with the
gradient-reduction hooks DeepSpeed runs inside it) and ``backward_reduce``
(the reduction DeepSpeed runs after it) are parts of ``backward``, reported
beside it. Collective time is not a phase of its own: a collective runs inside
backward or the optimizer step, so its seconds are reported next to the
phases, not added to them.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from llmbench.judge.result import CaseResult
from llmbench.measure import trace_analysis
from llmbench.measure.metrics import StepShape
from llmbench.measure.profile import DS_TIMERS, PIPELINE_NO_TIMERS
from llmbench.measure.record import RankRecord

ADDITIVE = ("data", "forward", "backward", "optimizer_step")
"""Phases that, with ``other``, add up to the step time."""
PARTS = ("backward_inner", "backward_reduce")
"""Parts of ``backward``."""
STEP_PHASES = (*ADDITIVE, "other")
NO_TIMERS = "DeepSpeed's engine timers were not filled (no timed steps)"
NOT_TRAINING = "a communication case has no training phases"
FLOPS_FACTOR = 3
"""Backward ≈ 2× forward FLOPs: DeepSpeed's own training estimate from the profiler's forward count."""


def fill_profile(
    result: CaseResult,
    records: list[RankRecord | None],
    shape: StepShape | None,
    mode: str,
    run_dir: Path,
) -> None:
    """Add what ``run.profile`` collected to the result; nothing at all for ``none``."""
    present = [r for r in records if r is not None]
    if mode == "breakdown":
        _breakdown(result, present, shape)
    elif mode == "trace":
        _trace(result, present, run_dir)
    elif mode == "flops":
        _flops(result, present, shape, run_dir)


def step_phases(records: list[RankRecord]) -> dict[str, list[float]] | None:
    """Per timed step, the slowest rank's seconds in each phase (``other`` the remainder)."""
    steps = min((len(r.step_times_s) for r in records), default=0)
    needed = [*DS_TIMERS.values()]
    if not steps or any(
        len(r.phase_times_s.get(name, ())) < steps or len(r.data_times_s) < steps
        for r in records
        for name in needed
    ):
        return None
    phases: dict[str, list[float]] = {name: [] for name in (*STEP_PHASES, *PARTS)}
    for i in range(steps):
        slowest = max(records, key=lambda r: r.step_times_s[i])
        values = {"data": slowest.data_times_s[i]}
        values |= {name: slowest.phase_times_s[name][i] for name in needed}
        values["other"] = slowest.step_times_s[i] - sum(values[name] for name in ADDITIVE)
        for name in phases:
            phases[name].append(values[name])
    return phases


def _breakdown(result: CaseResult, records: list[RankRecord], shape: StepShape | None) -> None:
    phases = step_phases(records) if result.status == "ok" and shape is not None else None
    if shape is None:
        why = NOT_TRAINING
    elif result.status != "ok":
        why = f"case {result.status}"
    else:
        why = PIPELINE_NO_TIMERS if result.params.get("parallel.pp", 1) > 1 else NO_TIMERS
    names = (*STEP_PHASES, *PARTS)
    if phases is None:
        for name in names:
            result.set_metric(f"phase_{name}_s_median", None, why)
        for name in STEP_PHASES:
            result.set_metric(f"phase_share_{name}", None, why)
        result.set_metric("comm_bytes_per_step", None, why)
        return
    result.phase_times_s = phases
    total = sum(sum(phases[name]) for name in STEP_PHASES)
    for name in names:
        result.set_metric(f"phase_{name}_s_median", statistics.median(phases[name]))
    # shares of the summed time (not medians of per-step shares) so a stacked bar adds up to 1
    for name in STEP_PHASES:
        result.set_metric(f"phase_share_{name}", sum(phases[name]) / total if total else None)
    _comm(result, records)


def _comm(result: CaseResult, records: list[RankRecord]) -> None:
    """Bytes, calls and seconds per step in each collective, as DeepSpeed's comms logger saw them.

    Bytes are the logger's message sizes (the tensor handed to the collective)
    on the slowest rank of each step.
    """
    steps = min(len(r.comm_steps) for r in records)
    if not steps:
        result.set_metric("comm_bytes_per_step", None, "DeepSpeed's comms logger saw no step")
        return
    per_step = [max(records, key=lambda r: r.step_times_s[i]).comm_steps[i] for i in range(steps)]
    ops = sorted({op for step in per_step for op in step})
    empty = {"calls": 0, "bytes": 0, "s": 0.0}

    def median(op: str | None, field: str) -> float:
        return statistics.median(
            sum(s[field] for name, s in step.items() if op in (None, name)) for step in per_step
        )

    result.set_metric("comm_bytes_per_step", median(None, "bytes"))
    result.set_metric("comm_calls_per_step", median(None, "calls"))
    result.set_metric("comm_s_median", median(None, "s"))
    for op in ops:
        for step in per_step:
            step.setdefault(op, empty)
        result.set_metric(f"comm_{op}_bytes_per_step", median(op, "bytes"))
        result.set_metric(f"comm_{op}_calls_per_step", median(op, "calls"))
        result.set_metric(f"comm_{op}_s_median", median(op, "s"))


def _trace(result: CaseResult, records: list[RankRecord], run_dir: Path) -> None:
    traced = {r.rank: Path(r.profile["trace"]) for r in records if r.profile.get("trace")}
    if not traced:
        return
    result.profile["trace_files"] = [_relative(str(f), run_dir) for f in traced.values()]
    result.profile["trace_steps"] = records[0].profile.get("trace_steps")
    result.profile["top_ops"] = next((r.profile["top_ops"] for r in records if r.rank == 0), [])
    trace_analysis.analyse(
        result, traced, on_gpu=any(r.device_name not in (None, "cpu") for r in records)
    )


def _flops(
    result: CaseResult, records: list[RankRecord], shape: StepShape | None, run_dir: Path
) -> None:
    """Training FLOPs per token by DeepSpeed's flops profiler, and its ratio to llmbench's count."""
    rank0 = next((r for r in records if r.rank == 0 and "forward_flops" in r.profile), None)
    if rank0 is None or shape is None:
        why = NOT_TRAINING if shape is None else "the flops profiler did not finish on rank 0"
        result.set_metric("profiler_flops_per_token", None, why)
        result.set_metric("profiler_flops_ratio", None, why)
        return
    if rank0.profile.get("flops_table"):
        result.profile["flops_table"] = _relative(rank0.profile["flops_table"], run_dir)
    split = result.params.get("parallel.tp", 1) * result.params.get("parallel.pp", 1)
    if split > 1:
        why = "rank 0 holds a tensor/pipeline slice of the model; per-rank counts are not summed"
        result.set_metric("profiler_flops_per_token", None, why)
        result.set_metric("profiler_flops_ratio", None, why)
        return
    tokens = shape.micro_batch * shape.grad_accum * shape.seq_len
    measured = FLOPS_FACTOR * rank0.profile["forward_flops"] / tokens
    analytic = result.metrics.get("flops_per_token")
    result.set_metric("profiler_flops_per_token", measured)
    result.set_metric(
        "profiler_flops_ratio",
        measured / analytic if analytic else None,
        "no analytic FLOPs per token for this case",
    )


def _relative(path: str, run_dir: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(run_dir.resolve()))
    except ValueError:
        return path
