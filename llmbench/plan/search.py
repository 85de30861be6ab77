"""The planner's questions: what fits and how fast, how few GPUs, how large a model.

Each question enumerates configurations (``configs.enumerate_configs``), runs
them through one ``predict`` call and reads the answer off the table.
Parameter counts are computed once per model, so the search is arithmetic.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from llmbench.define.models import FAMILIES, resolve_dims
from llmbench.errors import UserError
from llmbench.plan.assumptions import Assumptions
from llmbench.plan.calibrate import Calibration
from llmbench.plan.configs import MICRO_BATCHES, ZERO_OFFLOAD, enumerate_configs
from llmbench.plan.describe import ModelDescription, describe_model
from llmbench.plan.fitted import HELDOUT_ERROR
from llmbench.plan.memory import ZeroKnobs
from llmbench.plan.predict import Prediction, predict
from llmbench.plan.target import Target


@dataclass(frozen=True)
class Query:
    """What configurations may vary, and the training run being planned."""

    seq_len: int
    precisions: Sequence[str] = ("bf16", "fp16", "fp32")
    checkpointing: Sequence[str] = ("none", "selective", "full")
    micro_batches: Sequence[int] = MICRO_BATCHES
    global_batch: int | None = None
    grad_accum: int = 1
    offload: bool = True
    """include ZeRO-Offload configurations"""
    cpu_checkpointing: bool = False
    """also plan full recomputation with DeepSpeed's ``cpu_checkpointing``"""
    dropout: float | str = "config"
    """the model's dropout probability (``model.dropout``): masks are kept only when on"""
    accounting: str = "llmbench"
    knobs: ZeroKnobs = field(default_factory=ZeroKnobs)
    tokens: float | None = None
    """training tokens; None: tokens_per_param × parameters"""
    cost_per_gpu_hour: float | None = None


LAYOUT = ("zero_stage", "precision", "offload_optimizer", "offload_param",
          "activation_checkpointing", "tp", "pp", "dp")  # fmt: skip
TIE = HELDOUT_ERROR["median_abs"]
"""predicted speeds closer than the median held-out error are a tie: the model cannot tell them apart"""
MAX_MICRO_BATCH = 64


def _micro_batches(first: Prediction, query: Query) -> tuple[int, ...]:
    """Every micro-batch up to the largest that fits any layout (not only powers of two)."""
    if query.micro_batches != MICRO_BATCHES:
        return tuple(query.micro_batches)  # the user's own list
    largest = np.nan_to_num(first.frame["max_micro_batch"].to_numpy(dtype=float), nan=8)
    top = int(min(max(largest.max(), 1), MAX_MICRO_BATCH))
    return tuple(range(1, top + 1))


def _enumerate(model: ModelDescription, target: Target, gpus: int, query: Query, mbs):
    return enumerate_configs(
        model.dims,
        model.family,
        gpus,
        query.seq_len,
        gpus_per_node=target.gpus_per_node,
        precisions=query.precisions,
        checkpointing=query.checkpointing,
        micro_batches=mbs,
        global_batch=query.global_batch,
        grad_accum=query.grad_accum,
        zero_offload=ZERO_OFFLOAD if query.offload else [z for z in ZERO_OFFLOAD if not any(z[1:])],
        cpu_checkpointing=query.cpu_checkpointing,
    )


def simplicity(frame: pd.DataFrame) -> np.ndarray:
    """How much machinery a layout needs: model parallelism, offload, recomputation,
    parameter partitioning (ZeRO-3 gathers every layer's weights at every pass)."""
    return (
        (frame["zero_stage"] == 3).to_numpy(int)
        + (frame["tp"] > 1).to_numpy(int)
        + (frame["pp"] > 1).to_numpy(int)
        + (frame["offload_optimizer"] != "none").to_numpy(int)
        + (frame["offload_param"] != "none").to_numpy(int)
        + (frame["activation_checkpointing"] != "none").to_numpy(int)
        + frame["cpu_checkpointing"].to_numpy(int)
    )


def rank(frame: pd.DataFrame) -> pd.DataFrame:
    """Fitting first; fastest first, speeds within ``TIE`` counted equal; then the
    simpler layout, the larger micro-batch, the lower ZeRO stage, the most headroom."""
    speed = frame["tokens_per_s"].to_numpy(dtype=float)
    bucket = np.floor(np.log(np.where(speed > 0, speed, np.nan)) / np.log1p(TIE))
    keys = frame.assign(
        _fit=frame["fits"].astype(bool),
        _bucket=bucket,
        _simple=simplicity(frame),
    )
    order = keys.sort_values(
        ["_fit", "_bucket", "_simple", "micro_batch", "zero_stage", "total_bytes"],
        ascending=[False, False, True, False, True, True],
        kind="stable",
        na_position="last",
    )
    return order.drop(columns=["_fit", "_bucket", "_simple"]).reset_index(drop=True)


def plan(
    model: ModelDescription,
    target: Target,
    gpus: int,
    query: Query,
    assumptions: Assumptions,
    calibration: Calibration | None = None,
) -> Prediction:
    """Every configuration on ``gpus`` GPUs, fitting ones first, fastest first.

    Micro-batches run from 1 to the largest that fits (found from one pass at
    micro-batch 1), so a largest micro-batch of 3 or 6 is ranked too.
    """
    if query.seq_len > model.dims.max_positions:
        raise UserError(
            f"{query.seq_len} exceeds {model.name}'s max_positions {model.dims.max_positions}",
            key="seq-len",
        )
    kw = {"accounting": query.accounting, "knobs": query.knobs, "dropout": query.dropout}
    mbs = query.micro_batches
    if mbs == MICRO_BATCHES and target.memory_bytes is not None:
        first = _enumerate(model, target, gpus, replace(query, global_batch=None), (1,))
        mbs = _micro_batches(predict(model, first, target, assumptions, calibration, **kw), query)
    cfg = _enumerate(model, target, gpus, query, mbs)
    if len(cfg) == 0:
        raise UserError(
            f"no configuration of {model.name} reaches a global batch of {query.global_batch} on {gpus} GPU(s)",
            key="global-batch",
        )
    result = predict(model, cfg, target, assumptions, calibration, **kw)
    frame = add_budget(result.frame, model, query, assumptions)
    low, high = HELDOUT_ERROR["min"], HELDOUT_ERROR["max"]
    frame = frame.assign(
        tokens_per_s_low=frame["tokens_per_s"] / (1 + high),
        tokens_per_s_high=frame["tokens_per_s"] / (1 + low),
    )
    result.frame = rank(frame)
    return result


def reasons(frame: pd.DataFrame) -> list[str]:
    """Why the first fitting configuration beats the best of each other ZeRO stage."""
    fitting = frame[frame["fits"].astype(bool)]
    if fitting.empty:
        return []
    best = fitting.iloc[0]
    lines = []
    for stage in sorted(set(fitting["zero_stage"]) - {best["zero_stage"]}):
        other = fitting[fitting["zero_stage"] == stage].iloc[0]
        ratio = float(best["tokens_per_s"] / other["tokens_per_s"] - 1)
        parts = {
            name: float(best[col] - other[col])
            for name, col in (
                ("compute", "compute_s"),
                ("data-parallel communication", "dp_comm_s"),
                ("optimizer step", "optimizer_s"),
                ("offload", "offload_s"),
                ("checkpoint copies to the host", "checkpoint_transfer_s"),
                ("tensor/pipeline communication", "tp_comm_s"),
                ("bubble", "bubble_s"),
            )
        }
        term = min(parts, key=lambda k: parts[k] / float(other["step_s"]))
        why = (
            f"within {TIE:.0%} (the median held-out error): a tie, broken towards the simpler "
            "layout and larger micro-batch"
            if abs(ratio) < TIE
            else f"{ratio:+.0%} tokens/s, mostly {term}"
        )
        lines.append(
            f"why {describe_row(best)} over ZeRO-{int(stage)} ({describe_row(other)}, "
            f"{other['tokens_per_s']:,.0f} tokens/s): {why}"
        )
    return lines


def add_budget(
    frame: pd.DataFrame, model: ModelDescription, query: Query, assumptions: Assumptions
) -> pd.DataFrame:
    """Training time, GPU-hours and (when a price is given) cost of the token budget."""
    tokens = query.tokens or assumptions.tokens_per_param.value * model.total_params
    time_s = tokens / frame["tokens_per_s"]
    gpu_hours = time_s * frame["gpus"] / 3600
    cost = gpu_hours * query.cost_per_gpu_hour if query.cost_per_gpu_hour is not None else np.nan
    return frame.assign(train_tokens=tokens, train_time_s=time_s, gpu_hours=gpu_hours, cost=cost)


def gpu_counts(limit: int, gpus_per_node: int) -> list[int]:
    """Counts tried for the minimum: 1 … one node, then whole nodes."""
    small = list(range(1, min(gpus_per_node, limit) + 1))
    return small + list(range(2 * gpus_per_node, limit + 1, gpus_per_node))


def min_gpus(
    model: ModelDescription,
    target: Target,
    query: Query,
    assumptions: Assumptions,
    calibration: Calibration | None = None,
    limit: int = 4096,
) -> tuple[int | None, Prediction | None]:
    """The fewest GPUs on which some configuration fits, and that plan (micro-batch 1 is enough)."""
    narrow = replace(query, micro_batches=(1,), global_batch=None)
    for n in gpu_counts(limit, target.gpus_per_node):
        result = plan(model, target, n, narrow, assumptions, calibration)
        if result.frame["fits"].astype(bool).any():
            return n, plan(model, target, n, query, assumptions, calibration)
    return None, None


def largest_model(
    family: str,
    target: Target,
    gpus: int,
    query: Query,
    assumptions: Assumptions,
    calibration: Calibration | None = None,
) -> list[dict[str, Any]]:
    """For each preset of ``family``, smallest first: whether it fits ``gpus`` GPUs and how fast."""
    fam = FAMILIES[family]
    rows = []
    for size in sorted(fam.presets, key=lambda s: _total(family, s)):
        model = describe_model(f"{family}-{size}")
        seq = min(query.seq_len, model.dims.max_positions)
        result = plan(
            model,
            target,
            gpus,
            Query(**{**query.__dict__, "seq_len": seq}),
            assumptions,
            calibration,
        )
        best = result.frame.iloc[0]
        fits = bool(best["fits"])
        rows.append(
            {
                "model": model.name,
                "total_params": model.total_params,
                "seq_len": seq,
                "fits": fits,
                "best_tokens_per_s": float(best["tokens_per_s"]) if fits else None,
                "best_configuration": describe_row(best) if fits else None,
                "smallest_total_bytes": float(result.frame["total_bytes"].min()),
            }
        )
    return rows


def _total(family: str, size: str) -> int:
    """Rough size, for ordering presets without building each one."""
    dims = resolve_dims(family, size)
    return dims.num_layers * dims.hidden_size**2 + dims.vocab_size * dims.hidden_size


def describe_row(row: pd.Series) -> str:
    parts = [f"ZeRO-{int(row['zero_stage'])}", str(row["precision"])]
    if row["offload_optimizer"] != "none":
        parts.append("offload opt")
    if row["offload_param"] != "none":
        parts.append("offload params")
    if row["activation_checkpointing"] != "none":
        on_cpu = " (checkpoints in host memory)" if row["cpu_checkpointing"] else ""
        parts.append(f"ckpt {row['activation_checkpointing']}{on_cpu}")
    parts.append(f"tp{int(row['tp'])} pp{int(row['pp'])} dp{int(row['dp'])}")
    parts.append(f"mb{int(row['micro_batch'])}×ga{int(row['grad_accum'])}")
    return " ".join(parts)
