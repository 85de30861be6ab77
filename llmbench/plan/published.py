"""Published large-scale training runs: the evidence the step-time model is fitted on and judged by.

``published_runs.yaml`` holds each run as its authors describe it, with the
source; this module turns every row into the planner's own inputs (a
:class:`~llmbench.plan.throughput.Shape`, one configuration, the GPU), converts
the published figure to tokens/s per GPU with that paper's own FLOPs formula,
and fits the step-time model's free constants on the ``fit`` rows only.
``holdout`` rows never touch the fit: their error is the planner's accuracy.

    python -m llmbench.plan.published            # predicted vs published, every row
    python -m llmbench.plan.published --fit      # refit and print fitted.py's numbers
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from llmbench.hardware import GPUS
from llmbench.plan.assumptions import Assumption, Assumptions
from llmbench.plan.configs import CHECKPOINTING, PRECISIONS, Configs
from llmbench.plan.fitted import FITTED
from llmbench.plan.throughput import Device, Links, Shape, Stack, step_time

TABLE = Path(__file__).with_name("published_runs.yaml")
GENERATIONS = ("a100", "h100", "v100")
FREE = ("matmul_fraction.a100", "matmul_fraction.h100", "matmul_fraction.v100",
        "elementwise_tensors", "launch_s_per_layer")  # fmt: skip
STACKS = {
    # FSDP wraps each block once and Megatron has no ZeRO-3: no per-submodule hooks;
    # both overlap the data-parallel reduction with the backward pass
    "fsdp": lambda a: Stack(zero3_hook_s=0.0, dp_overlapped=True, per_submodule_gathers=False),
    "megatron": lambda a: Stack(zero3_hook_s=0.0, dp_overlapped=True, per_submodule_gathers=False),
    "deepspeed": lambda a: Stack(zero3_hook_s=a.zero3_hook_s.value, dp_overlapped=False),
}


def generation(gpu_key: str) -> str:
    """The GPU generation whose fitted matmul fraction applies (H200: an H100 die)."""
    for g in GENERATIONS:
        if gpu_key.startswith(g):
            return g
    return "h100" if gpu_key.startswith("h200") else "a100"


def matmul_fraction(gpu_key: str, assumptions: Assumptions) -> tuple[float, str]:
    """The matmul fraction for a GPU: the user's, the fitted one, or (unfitted GPUs) the A100's."""
    given = assumptions.compute_efficiency
    if given.source == "given on the command line":
        return given.value, "given on the command line"
    gen = generation(gpu_key)
    fitted_here = any(gpu_key.startswith(g) for g in GENERATIONS) or gpu_key.startswith("h200")
    value = FITTED[f"matmul_fraction.{gen}"]
    what = f"achievable matmul fraction {value:.2f} of dense peak for {gen.upper()}"
    if not fitted_here:
        return value, what + f" (no published run on {gpu_key}: the A100's figure, assumed)"
    return value, what + ", fitted on published runs (plan/README.md)"


@dataclass(frozen=True)
class Run:
    """One published row, as the planner's inputs, and what it measured."""

    id: str
    source: str
    gpu: str
    stack: str
    split: str
    shape: Shape
    cfg: Configs
    links: Links
    host_cores: float
    tokens_per_s_per_gpu: float
    row: dict[str, Any]
    """the row as published_runs.yaml states it"""


def _published_tokens(row: dict[str, Any], peak: float) -> float:
    """The published figure as tokens/s per GPU, with the paper's own FLOPs count."""
    m, n, h, s, v = row["measured"], row["layers"], row["hidden"], row["seq"], row["vocab"]
    if "tokens_per_s_per_gpu" in m:
        return float(m["tokens_per_s_per_gpu"])
    if m.get("formula") == "korthikanti":
        per_token = 72 * n * h * h * (1 + s / (6 * h) + v / (12 * n * h))
        return m["mfu"] * peak / per_token
    if m.get("formula") == "megatron":
        per_token = 96 * n * h * h * (1 + s / (6 * h) + v / (16 * n * h))
        return m["tflops"] * 1e12 / per_token
    raise ValueError(f"{row['id']}: unknown measured figure {m}")


def _row(row: dict[str, Any], sources: dict[str, str], assumptions: Assumptions) -> Run:
    spec = GPUS[row["gpu"]]
    n, h, f, v = row["layers"], row["hidden"], row["ffn"], row["vocab"]
    # GPT-style blocks: QKV and output projections 4h², two MLP matrices 2hf; tied head once
    flops_params = n * (4 * h * h + 2 * h * f) + v * h
    tp, pp, gpus = row["tp"], row["pp"], row["gpus"]
    dp = gpus // (tp * pp)
    cfg = Configs(
        **{
            k: np.array([x])
            for k, x in {
                "zero": row["zero"],
                "precision": PRECISIONS.index(row["precision"]),
                "offload_optimizer": int(row.get("offload_optimizer", False)),
                "offload_param": 0,
                "checkpointing": CHECKPOINTING.index(row["recompute"]),
                "tp": tp,
                "pp": pp,
                "dp": dp,
                "micro_batch": row["micro_batch"],
                "grad_accum": row["grad_accum"],
                "sequence_parallel": int(row["recompute"] == "selective"),
                "seq_len": row["seq"],
                "cpu_checkpointing": int(row.get("cpu_checkpointing", False)),
            }.items()
        }
    )
    per_node = min(gpus, 16 if row["gpu"].startswith("v100") else 8)
    links = Links.for_gpu(
        spec.interconnect_bytes_s,
        assumptions,
        per_node,
        host_bytes_s=host_link_bytes_s(row["gpu"])[0],
        inter_node_bytes_s=float(row["inter_node_bytes_s"]),
    )
    shape = Shape(
        layers=n,
        hidden=h,
        vocab=v,
        flops_params=flops_params,
        stage_params=np.array([(n * (4 * h * h + 2 * h * f) / pp + v * h) / tp]),
        modules_per_layer=6,
    )
    peak = spec.peak_flops[row["precision"]]
    return Run(
        id=row["id"],
        source=sources[row["source"]],
        gpu=row["gpu"],
        stack=row["stack"],
        split=row["split"],
        shape=shape,
        cfg=cfg,
        links=links,
        host_cores=float(row.get("host_cores", assumptions.host_cores_per_node.value)),
        tokens_per_s_per_gpu=_published_tokens(row, peak),
        row=row,
    )


# PCIe per direction (PCI-SIG): 3.0 x16 15.75 GB/s, 4.0 x16 31.5 GB/s, 5.0 x16 63 GB/s
_PCIE = (("v100", 15.75e9, "3.0"), ("a100", 31.5e9, "4.0"), ("h100", 63e9, "5.0"),
         ("h200", 63e9, "5.0"), ("mi300x", 63e9, "5.0"))  # fmt: skip


def host_link_bytes_s(gpu_key: str) -> tuple[float, str]:
    """Per-direction PCIe bandwidth of the GPU's host link, from its PCIe generation."""
    for prefix, bw, gen in _PCIE:
        if gpu_key.startswith(prefix):
            return bw, f"PCIe {gen} x16, {bw / 1e9:g} GB/s per direction (PCI-SIG)"
    return 31.5e9, "PCIe 4.0 x16, 31.5 GB/s per direction (PCI-SIG); assumed for this GPU"


@cache
def load() -> tuple[Run, ...]:
    doc = yaml.safe_load(TABLE.read_text())
    assumptions = Assumptions()
    return tuple(_row(r, doc["sources"], assumptions) for r in doc["runs"])


def predict_run(run: Run, constants: dict[str, float]) -> float:
    """Predicted tokens/s per GPU of a published run under the given constants."""
    assumptions = Assumptions()
    assumptions = replace(
        assumptions,
        elementwise_tensors=Assumption(constants["elementwise_tensors"], "fit"),
        launch_s_per_layer=Assumption(constants["launch_s_per_layer"], "fit"),
    )
    spec = GPUS[run.gpu]
    device = Device(
        peak_flops=np.array([spec.peak_flops[PRECISIONS[int(run.cfg.precision[0])]]]),
        memory_bytes_s=spec.memory_bandwidth_bytes_s,
        links=run.links,
        host_cores_per_node=run.host_cores,
    )
    fraction = constants[f"matmul_fraction.{generation(run.gpu)}"]
    t = step_time(run.shape, run.cfg, device, fraction, assumptions, STACKS[run.stack](assumptions))
    return float(t.tokens_per_s[0] / run.cfg.world_size[0])


def errors(constants: dict[str, float], split: str | None = None) -> dict[str, float]:
    """(predicted − published) / published per run id."""
    return {
        r.id: predict_run(r, constants) / r.tokens_per_s_per_gpu - 1
        for r in load()
        if split is None or r.split == split
    }


def fit() -> dict[str, float]:
    """Least squares on log(predicted / published) over the fit rows only."""
    from scipy.optimize import least_squares

    fit_rows = [r for r in load() if r.split == "fit"]
    start = np.array([0.7, 0.6, 0.6, 20.0, 1e-4])
    scale = np.array([1, 1, 1, 10, 1e-4])

    def residuals(x: np.ndarray) -> np.ndarray:
        c = dict(zip(FREE, x * scale, strict=True))
        return np.array([np.log(predict_run(r, c) / r.tokens_per_s_per_gpu) for r in fit_rows])

    lower, upper = np.array([0.2, 0.2, 0.2, 0, 0]), np.array([1, 1, 1, 50, 100])
    result = least_squares(residuals, start / scale, bounds=(lower, upper))
    return {k: float(f"{v:.4g}") for k, v in zip(FREE, result.x * scale, strict=True)}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    constants = fit() if "--fit" in args else dict(FITTED)
    print({k: constants[k] for k in FREE})
    for run in load():
        pred = predict_run(run, constants)
        err = pred / run.tokens_per_s_per_gpu - 1
        print(
            f"{run.split:8} {run.id:28} published {run.tokens_per_s_per_gpu:10.0f}  predicted {pred:10.0f}  {err:+6.1%}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
