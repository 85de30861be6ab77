"""The planner's questions: what fits and how fast, how few GPUs, how large a model.

Each question enumerates configurations (``configs.enumerate_configs``), runs
them through one ``predict`` call and reads the answer off the table.
Parameter counts are computed once per model, so the search is arithmetic.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from llmbench.define.models import FAMILIES, resolve_dims
from llmbench.errors import UserError
from llmbench.plan.assumptions import Assumptions
from llmbench.plan.calibrate import Calibration
from llmbench.plan.configs import MICRO_BATCHES, ZERO_OFFLOAD, enumerate_configs
from llmbench.plan.describe import ModelDescription, describe_model
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
    accounting: str = "llmbench"
    knobs: ZeroKnobs = field(default_factory=ZeroKnobs)
    tokens: float | None = None
    """training tokens; None: tokens_per_param × parameters"""
    cost_per_gpu_hour: float | None = None


def plan(
    model: ModelDescription,
    target: Target,
    gpus: int,
    query: Query,
    assumptions: Assumptions,
    calibration: Calibration | None = None,
) -> Prediction:
    """Every configuration on ``gpus`` GPUs, fitting ones first, fastest first."""
    if query.seq_len > model.dims.max_positions:
        raise UserError(
            f"{query.seq_len} exceeds {model.name}'s max_positions {model.dims.max_positions}",
            key="seq-len",
        )
    cfg = enumerate_configs(
        model.dims,
        model.family,
        gpus,
        query.seq_len,
        gpus_per_node=target.gpus_per_node,
        precisions=query.precisions,
        checkpointing=query.checkpointing,
        micro_batches=query.micro_batches,
        global_batch=query.global_batch,
        grad_accum=query.grad_accum,
        zero_offload=ZERO_OFFLOAD if query.offload else [z for z in ZERO_OFFLOAD if not any(z[1:])],
    )
    if len(cfg) == 0:
        raise UserError(
            f"no configuration of {model.name} reaches a global batch of {query.global_batch} on {gpus} GPU(s)",
            key="global-batch",
        )
    result = predict(
        model, cfg, target, assumptions, calibration, accounting=query.accounting, knobs=query.knobs
    )
    frame = add_budget(result.frame, model, query, assumptions)
    # fastest first; among equally fast, the one with the most headroom
    order = frame.assign(_fit=frame["fits"].astype(bool)).sort_values(
        ["_fit", "tokens_per_s", "total_bytes"],
        ascending=[False, False, True],
        kind="stable",
        na_position="last",
    )
    result.frame = order.drop(columns="_fit").reset_index(drop=True)
    return result


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
    narrow = Query(**{**query.__dict__, "micro_batches": (1,), "global_batch": None})
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
        parts.append(f"ckpt {row['activation_checkpointing']}")
    parts.append(f"tp{int(row['tp'])} pp{int(row['pp'])} dp{int(row['dp'])}")
    parts.append(f"mb{int(row['micro_batch'])}×ga{int(row['grad_accum'])}")
    return " ".join(parts)
