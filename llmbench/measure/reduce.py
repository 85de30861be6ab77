"""Rank records → a case's metrics: the slowest rank per step, memory peaks, FLOPs, losses.

The parent reads every rank's :class:`RankRecord` back as the same type the
rank wrote and reduces them here, in one place: step time is the slowest
rank's, memory peaks are maxima over ranks (never sums: each rank owns its
device), and the loss is the mean over data-parallel replicas.
"""

from __future__ import annotations

from typing import Any

from llmbench.define.schema import CaseSpec
from llmbench.flops import recompute_flops_per_token, training_flops_per_token
from llmbench.hardware import lookup
from llmbench.judge.result import CaseResult
from llmbench.judge.stats import slowest_rank_per_step, step_stats
from llmbench.measure.comm import bandwidths
from llmbench.measure.metrics import THROUGHPUT_METRICS, StepShape, flops_metrics, throughput
from llmbench.measure.record import RankRecord

NOT_TRAINING = "a communication case trains nothing"
TRAINING_ONLY = ("loss_first", "loss_last", "data_time_share", *THROUGHPUT_METRICS)


def fill_metrics(
    result: CaseResult,
    records: list[RankRecord | None],
    shape: StepShape | None,
    wall_s: float,
    device: str,
) -> None:
    """Reduce rank records to the case's metrics (step time = slowest rank per step).

    ``shape`` is None for a communication case: it has step times but trains no tokens.
    """
    present = [r for r in records if r is not None]
    result.ranks = [_rank_summary(r) for r in present]
    ok = result.status == "ok"
    executed = slowest_rank_per_step([r.step_times_s for r in present]) if ok else []
    # fp16 steps the loss scaler skipped did no optimizer update: not timed as steps
    skipped = {i for r in present for i in r.skipped_steps}
    steps = [t for i, t in enumerate(executed) if i not in skipped]
    result.step_times_s = steps
    result.losses = _dp_mean_losses(present) if ok else []
    result.metrics.update(step_stats(steps))
    why = None if ok else f"case {result.status}"
    if shape is not None:
        for name, value in throughput(shape, result.metrics["step_time_s_median"]).items():
            result.set_metric(name, value, why)
    warmup = slowest_rank_per_step([r.warmup_times_s for r in present])
    measure_s = sum(executed) if executed else None
    warmup_s = sum(warmup) if ok else None
    result.set_metric("wall_s", wall_s)
    result.set_metric(
        "init_s",
        max((r.init_s for r in present if r.init_s is not None), default=None),
        "no rank finished init",
    )
    result.set_metric("warmup_s", warmup_s, why)
    result.set_metric("measure_s", measure_s, why)
    result.set_metric("steps_skipped", len(skipped) if ok else None, why)
    result.set_metric(
        "optimizer_impl",
        next((r.optimizer_impl for r in present if r.optimizer_impl), None),
        NOT_TRAINING if shape is None else "no rank built its optimizer",
    )
    # Each rank's own warm-up and timed steps: the slowest-rank-per-step sums can add up to
    # more than any rank was busy (ranks take turns being slowest), so they would make the
    # overhead negative.
    busy_s = max((sum(r.warmup_times_s) + sum(r.step_times_s) for r in present), default=0.0)
    result.set_metric("overhead_s", wall_s - busy_s if ok else None, why)
    data = [
        sum(r.data_times_s) / sum(r.step_times_s)
        for r in present
        if r.data_times_s and sum(r.step_times_s)
    ]
    result.set_metric("data_time_share", max(data) if ok and data else None, why)
    result.set_metric("loss_first", result.losses[0] if result.losses else None, why)
    result.set_metric("loss_last", result.losses[-1] if result.losses else None, why)
    if shape is None:
        for name in TRAINING_ONLY:
            result.set_metric(name, None, NOT_TRAINING)
    _memory_metrics(result, present, device)
    _build_metrics(
        result, present, device, NOT_TRAINING if shape is None else "no rank finished building"
    )
    params = next((r.parameters for r in present if r.parameters), None)
    # a mixture of experts: total (memory) = active (compute, per token) + unrouted experts
    for key in ("total", "embedding", "non_embedding", "flops_params", "active", "expert"):
        result.set_metric(
            f"params_{key}",
            params.get(key) if params else None,
            NOT_TRAINING if shape is None else "no rank built the model",
        )


def _memory_metrics(result: CaseResult, records: list[RankRecord], device: str) -> None:
    """Per-rank peaks reduced by max (never summed: each rank owns its own device)."""

    def peak(key: str) -> int | None:
        values = [r.memory.get(key) for r in records if r.memory and r.memory.get(key) is not None]
        return max(values) if values else None

    host = peak("rss_peak_bytes")
    result.set_metric("host_rss_peak_bytes", host, "no rank reported memory")
    if device == "cuda":
        result.set_metric(
            "allocator_peak_bytes", peak("max_allocated_bytes"), "no rank reported memory"
        )
        result.set_metric(
            "allocator_reserved_peak_bytes", peak("max_reserved_bytes"), "no rank reported memory"
        )
        result.set_metric("alloc_retries", peak("num_alloc_retries"), "no rank reported memory")
        result.set_metric(
            "peak_memory_bytes", result.metrics["allocator_peak_bytes"], "no rank reported memory"
        )
    else:
        for key in ("allocator_peak_bytes", "allocator_reserved_peak_bytes", "alloc_retries"):
            result.set_metric(key, None, "no CUDA allocator on a CPU run")
        result.set_metric("peak_memory_bytes", host, "no rank reported memory")


def _build_metrics(result: CaseResult, records: list[RankRecord], device: str, why: str) -> None:
    """What the largest rank held while building the model, before DeepSpeed added its state.

    This is the figure that shows whether ZeRO-3 construction is sharded: it
    grows by the whole model when each rank builds it, by about 1/N when the
    model is built partitioned.
    """
    host = [r.build_host_rss_growth_bytes for r in records]
    device_peaks = [r.build_device_allocated_bytes for r in records]
    host_known = [v for v in host if v is not None]
    device_known = [v for v in device_peaks if v is not None]
    result.set_metric("build_host_rss_growth_bytes", max(host_known, default=None), why)
    result.set_metric(
        "build_device_allocated_bytes",
        max(device_known, default=None),
        why if device == "cuda" else "no CUDA allocator on a CPU run",
    )


def _dp_mean_losses(records: list[RankRecord]) -> list[float]:
    """Loss of the global batch: the mean over data-parallel replicas.

    Tensor-parallel peers see the same batch and pipeline stages share one loss,
    so each replica is represented by its tp-rank-0 rank of the last stage.
    """
    topo = [r.topology or {"tp_rank": 0, "pp_stage": 0} for r in records]
    last = max(t["pp_stage"] for t in topo)
    trajectories = [
        r.losses
        for r, t in zip(records, topo, strict=False)
        if t["tp_rank"] == 0 and t["pp_stage"] == last and r.losses
    ]
    if not trajectories:
        return []
    n = min(len(t) for t in trajectories)
    return [sum(t[i] for t in trajectories) / len(trajectories) for i in range(n)]


def _rank_summary(r: dict[str, Any]) -> dict[str, Any]:
    steps = r.step_times_s or []
    return {
        "rank": r.rank,
        "pid": r.pid,
        "status": r.status,
        "device_name": r.device_name,
        "torch_threads": r.torch_threads,
        "init_s": r.init_s,
        "step_time_s_median": step_stats(steps)["step_time_s_median"],
        "memory": r.memory or {},
        "build_host_rss_growth_bytes": r.build_host_rss_growth_bytes,
        "malloc_mmap_threshold_bytes": r.malloc_mmap_threshold_bytes,
        "error": r.error,
    }


def fill_comm(result: CaseResult, spec: CaseSpec) -> None:
    """Bandwidths from the median call time; training rates do not apply to a collective."""
    c = spec.comm
    result.set_metric("message_bytes", c.size_bytes)
    values = bandwidths(
        c.op, c.size_bytes, spec.parallel.world_size, result.metrics.get("step_time_s_median")
    )
    for name, value in values.items():
        result.set_metric(name, value, f"case {result.status}")


def fill_flops(result: CaseResult, spec: CaseSpec, records: list[RankRecord | None]) -> None:
    """FLOPs per token from the exact parameter count; TFLOP/s, MFU and HFU from the throughput."""
    n = result.metrics.get("params_flops_params")
    if n is None:
        return
    dims = spec.dims()
    seq = spec.training.seq_len
    model = training_flops_per_token(n, dims.num_layers, dims.hidden_size, seq)
    extra = recompute_flops_per_token(
        n,
        dims.num_layers,
        dims.hidden_size,
        seq,
        spec.deepspeed.activation_checkpointing,
    )
    device = next((r.device_name for r in records if r and r.device_name), None) or "unknown device"
    peak, why = peak_flops(device, spec.deepspeed.precision)
    values, reasons = flops_metrics(
        result.metrics.get("tokens_per_s"),
        spec.parallel.world_size,
        model,
        model + extra,
        peak,
        why,
    )
    for name, value in values.items():
        result.set_metric(name, value, reasons.get(name))


def peak_flops(device_name: str, precision: str) -> tuple[float | None, str | None]:
    """Dense peak FLOP/s of one device in the case's matmul precision, or why it is unknown."""
    if device_name == "cpu":
        return None, "no peak FLOP/s figure for CPUs"
    gpu, why = lookup(device_name)
    if gpu is None:
        return None, why
    peak = gpu.peak(precision)
    return (peak, None) if peak else (None, f"{gpu.name} has no {precision} peak")
