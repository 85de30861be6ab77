"""One prediction table: memory terms, fit, largest micro-batch and speed for every configuration.

Everything the planner prints - ranked configurations, validation against
measured runs, the capacity report - is a view of this one DataFrame.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from llmbench.plan.activations import Recipe
from llmbench.plan.assumptions import Assumption, Assumptions
from llmbench.plan.calibrate import Calibration
from llmbench.plan.configs import CHECKPOINTING, PRECISIONS, Configs
from llmbench.plan.describe import ModelDescription
from llmbench.plan.memory import MemoryTerms, ZeroKnobs, memory_terms
from llmbench.plan.published import matmul_fraction
from llmbench.plan.target import Target
from llmbench.plan.throughput import Device, Shape, step_time


@dataclass
class Prediction:
    """The table plus what it rests on."""

    frame: pd.DataFrame
    model: ModelDescription
    target: Target
    accounting: str
    fixed_overhead: Assumption
    allocator_margin: Assumption
    rate_sources: list[str]
    calibration_runs: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


OFFLOAD = ("none", "cpu")


def _labels(codes: np.ndarray, names: tuple[str, ...]) -> pd.Categorical:
    """A text column from integer codes: thousands of rows without a Python string each."""
    return pd.Categorical.from_codes(np.asarray(codes, dtype=np.int8), categories=names)


def _memory(model, cfg, target, resident, **kw) -> MemoryTerms:
    return memory_terms(
        model, cfg, device=target.kind, gpus_per_node=target.gpus_per_node, resident=resident, **kw
    )


def predict(
    model: ModelDescription,
    cfg: Configs,
    target: Target,
    assumptions: Assumptions,
    calibration: Calibration | None = None,
    *,
    accounting: str = "llmbench",
    knobs: ZeroKnobs | None = None,
    attention: str = "sdpa",
    world_size: int | None = None,
    dropout: float | str = "config",
    recipe: Recipe | None = None,
) -> Prediction:
    """Predict every configuration of ``cfg`` on ``target``.

    ``world_size``: only for CPU targets, whose measured rates hold for one
    rank count (ranks share the cores). ``dropout`` and ``recipe``: see
    :func:`~llmbench.plan.memory.memory_terms`.
    """
    calibration = calibration or Calibration([])
    resident = target.kind == "cpu"
    kw = {
        "accounting": accounting,
        "knobs": knobs,
        "attention": attention,
        "dropout": dropout,
        "recipe": recipe,
    }
    mem = _memory(model, cfg, target, resident, **kw)
    fixed, margin = calibration.overhead(target, assumptions, world_size)
    overhead = fixed.value + margin.value * mem.predicted
    total = mem.predicted + overhead

    # memory is affine in the micro-batch: two evaluations give base and slope
    one = _memory(model, cfg.replace(micro_batch=1), target, resident, **kw)
    two = _memory(model, cfg.replace(micro_batch=2), target, resident, **kw)
    per_sample = (two.predicted - one.predicted) * (1 + margin.value)
    base = one.predicted * (1 + margin.value) + fixed.value - per_sample
    capacity = target.memory_bytes
    # offload needs host memory: the GPUs of one node share the node's
    host_per_node = mem.host_per_gpu * np.minimum(cfg.world_size, target.gpus_per_node)
    host_fits = host_per_node <= assumptions.host_memory_bytes_per_node.value
    if capacity is None:
        fits = np.full(len(cfg), np.nan)
        max_mb = np.full(len(cfg), np.nan)
    else:
        fits = (total <= capacity) & host_fits
        max_mb = np.where(host_fits, np.floor(np.maximum(capacity - base, 0) / per_sample), 0)

    shape = Shape.of(model, cfg)
    if target.kind == "cpu":
        rates, source_of, sources = calibration.rates(
            target,
            model,
            cfg,
            None,
            "no measured rate: a CPU has no peak FLOP/s to assume a fraction of",
        )
        sustained = rates
        efficiency = np.full(len(cfg), np.nan)
        device = Device(
            peak_flops=rates, memory_bytes_s=np.inf, links=target.links, pure_compute=True
        )
        timing = step_time(shape, cfg, device, 1.0, assumptions)
        peak_all = np.full(len(cfg), np.nan)
    else:
        default, default_source = matmul_fraction(target.device, assumptions)
        rates, source_of, sources = calibration.rates(target, model, cfg, default, default_source)
        peak_all = np.array([target.peak(p) or np.nan for p in PRECISIONS])[cfg.precision]
        sustained = rates * peak_all
        efficiency = rates
        device = Device(
            peak_flops=peak_all,
            memory_bytes_s=target.memory_bytes_s,
            links=target.links,
            host_cores_per_node=target.host_cores_per_node,
        )
        timing = step_time(shape, cfg, device, rates, assumptions)
    tokens_per_s = timing.tokens_per_s
    mfu = timing.model_flops_per_token * tokens_per_s / (cfg.world_size * peak_all)

    frame = pd.DataFrame(
        {
            "zero_stage": cfg.zero,
            "precision": _labels(cfg.precision, PRECISIONS),
            "offload_optimizer": _labels(cfg.offload_optimizer, OFFLOAD),
            "offload_param": _labels(cfg.offload_param, OFFLOAD),
            "activation_checkpointing": _labels(cfg.checkpointing, CHECKPOINTING),
            "cpu_checkpointing": cfg.cpu_checkpointing.astype(bool),
            "tp": cfg.tp,
            "pp": cfg.pp,
            "dp": cfg.dp,
            "gpus": cfg.world_size,
            "micro_batch": cfg.micro_batch,
            "grad_accum": cfg.grad_accum,
            "seq_len": cfg.seq_len,
            **mem.as_columns(),
            "host_offload_bytes_per_node": host_per_node,
            "fullest_stage": _labels(mem.stage, ("first", "last")),
            "overhead_bytes": overhead,
            "predicted_bytes": mem.predicted,
            "total_bytes": total,
            "capacity_bytes": np.full(len(cfg), np.nan if capacity is None else capacity),
            "fits": fits,
            "max_micro_batch": max_mb,
            "compute_s": timing.compute_s,
            "bubble_s": timing.bubble_s,
            "optimizer_s": timing.optimizer_s,
            "dp_comm_s": timing.dp_comm_s,
            "tp_comm_s": timing.tp_comm_s,
            "pp_comm_s": timing.pp_comm_s,
            "offload_s": timing.offload_s,
            "checkpoint_transfer_s": timing.checkpoint_transfer_s,
            "step_s": timing.step_s,
            "tokens_per_step": timing.tokens_per_step,
            "tokens_per_s": tokens_per_s,
            "mfu": mfu,
            "efficiency": efficiency,
            "sustained_flops": sustained,
            "rate_source": np.asarray(source_of),
        }
    )
    notes = []
    if accounting == "deepspeed" and (cfg.zero <= 1).any():
        notes.append(
            "DeepSpeed has estimators for ZeRO-2 and ZeRO-3 only: stage 0/1 memory is unknown (NaN) in this accounting"
        )
    missing = [
        p
        for p in PRECISIONS
        if target.kind != "cpu"
        and target.peak(p) is None
        and (np.array(PRECISIONS)[cfg.precision] == p).any()
    ]
    if missing:
        notes.append(
            f"{target.name} has no {', '.join(missing)} support: those configurations get no speed"
        )
    return Prediction(
        frame,
        model,
        target,
        accounting,
        fixed,
        margin,
        sources,
        calibration.runs_on(target, world_size),
        notes,
    )
