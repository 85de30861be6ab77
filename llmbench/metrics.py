"""Raw timings → statistics, throughput, FLOPs and MFU, in one place.

Throughput is defined from the per-step time: tokens per optimizer step ÷ the
median step time. (Dividing total samples by a mean, as some tools do, hides
stragglers and was measured 10× off on small cases.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

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


@dataclass(frozen=True)
class StepShape:
    """How much work one optimizer step does."""

    micro_batch: int
    grad_accum: int
    seq_len: int
    dp: int
    world_size: int

    @property
    def samples(self) -> int:
        return self.micro_batch * self.grad_accum * self.dp

    @property
    def tokens(self) -> int:
        return self.samples * self.seq_len


THROUGHPUT_METRICS = (
    "tokens_per_step",
    "samples_per_step",
    "tokens_per_s",
    "samples_per_s",
    "tokens_per_s_per_device",
)


def throughput(shape: StepShape, median_step_s: float | None) -> dict[str, float | int | None]:
    """Global and per-device rates from the median step time."""
    rates: dict[str, float | int | None] = {
        "tokens_per_step": shape.tokens,
        "samples_per_step": shape.samples,
    }
    if not median_step_s:
        return rates | {
            "tokens_per_s": None,
            "samples_per_s": None,
            "tokens_per_s_per_device": None,
        }
    return rates | {
        "tokens_per_s": shape.tokens / median_step_s,
        "samples_per_s": shape.samples / median_step_s,
        "tokens_per_s_per_device": shape.tokens / median_step_s / shape.world_size,
    }


def training_flops_per_token(
    flops_params: int, num_layers: int, hidden_size: int, seq_len: int
) -> float:
    """Model FLOPs per token of a training step: 6·N + 12·L·H·Q·T.

    PaLM (Chowdhery et al. 2022), appendix B: 6N for the forward and backward
    matmuls over N weights, plus 12·L·H·Q·T for attention scores and values
    (H heads of size Q, so H·Q = hidden size, over sequence length T).
    """
    return 6.0 * flops_params + 12.0 * num_layers * hidden_size * seq_len


def recompute_flops_per_token(
    flops_params: int, num_layers: int, hidden_size: int, seq_len: int, checkpointing: str
) -> float:
    """Extra FLOPs per token that activation recomputation adds (hardware, not model, FLOPs).

    Full checkpointing reruns the whole forward: 2·N + 4·L·H·Q·T. Selective
    recomputation (Korthikanti et al. 2022) reruns only the attention core:
    4·L·H·Q·T.
    """
    attention_forward = 4.0 * num_layers * hidden_size * seq_len
    if checkpointing == "full":
        return 2.0 * flops_params + attention_forward
    if checkpointing == "selective":
        return attention_forward
    return 0.0


def flops_metrics(
    tokens_per_s: float | None,
    world_size: int,
    model_flops_per_token: float,
    hardware_flops_per_token: float,
    peak_flops_per_device: float | None,
    no_peak_reason: str | None,
) -> tuple[dict[str, float | None], dict[str, str]]:
    """Achieved TFLOP/s per device and MFU/HFU (model vs hardware FLOPs, PaLM's definitions).

    MFU counts only the FLOPs the model needs (6·N + attention); HFU also
    counts what activation recomputation re-executes, so HFU ≥ MFU.
    """
    values: dict[str, float | None] = {
        "flops_per_token": model_flops_per_token,
        "hardware_flops_per_token": hardware_flops_per_token,
    }
    reasons: dict[str, str] = {}
    if tokens_per_s is None:
        for key in ("tflops_per_s_per_device", "hardware_tflops_per_s_per_device", "mfu", "hfu"):
            values[key] = None
            reasons[key] = "no throughput measured"
        return values, reasons
    per_device = tokens_per_s / world_size
    values["tflops_per_s_per_device"] = per_device * model_flops_per_token / 1e12
    values["hardware_tflops_per_s_per_device"] = per_device * hardware_flops_per_token / 1e12
    if peak_flops_per_device:
        values["mfu"] = per_device * model_flops_per_token / peak_flops_per_device
        values["hfu"] = per_device * hardware_flops_per_token / peak_flops_per_device
    else:
        values["mfu"] = values["hfu"] = None
        reasons["mfu"] = reasons["hfu"] = no_peak_reason or "unknown peak FLOP/s"
    return values, reasons
