"""A case's rates from its shape and median step time: throughput, TFLOP/s, MFU.

Throughput is defined from the per-step time: tokens per optimizer step ÷ the
median step time. (Dividing total samples by a mean, as some tools do, hides
stragglers and was measured 10× off on small cases.)
"""

from __future__ import annotations

from dataclasses import dataclass


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
