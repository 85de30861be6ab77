"""Case → DeepSpeed config dict.

Only what the case asks for is set; DeepSpeed's own defaults apply to the rest,
so a result measures DeepSpeed as users run it. ``deepspeed.config`` from the
scenario is merged last and wins.
"""

from __future__ import annotations

import copy
from typing import Any

from llmbench.define.schema import CaseSpec

# Printing every N steps would put host work inside the timed loop.
_QUIET = {"steps_per_print": 2**31 - 1, "wall_clock_breakdown": False}

_ZERO_KNOBS = (
    "overlap_comm",
    "contiguous_gradients",
    "reduce_bucket_size",
    "allgather_bucket_size",
    "stage3_prefetch_bucket_size",
    "stage3_max_live_parameters",
    "stage3_param_persistence_threshold",
)


def deepspeed_config(spec: CaseSpec, micro_batch: int, torch_adam: bool = False) -> dict[str, Any]:
    """The DeepSpeed config for one case at a given micro-batch size.

    ``torch_adam``: DeepSpeed's Adam ops could not be built here
    (ops.optimizer_fallback), so torch's AdamW updates the weights, also under
    ZeRO-Offload (where DeepSpeed otherwise insists on its CPU Adam).
    """
    ds, par, tr = spec.deepspeed, spec.parallel, spec.training
    cfg: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": micro_batch,
        "gradient_accumulation_steps": tr.grad_accum,
        # train_batch_size is left for DeepSpeed to derive: with AutoTP its batch
        # check runs before the TP groups exist and counts every rank as data parallel.
        "optimizer": {
            "type": "AdamW",
            "params": {"lr": tr.lr, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0},
        },
        "gradient_clipping": 1.0,
        "zero_optimization": _zero(spec),
        **_QUIET,
    }
    if ds.precision == "bf16":
        cfg["bf16"] = {"enabled": True}
    elif ds.precision == "fp16":
        cfg["fp16"] = {"enabled": True, "loss_scale": 0, "initial_scale_power": 16}
    if par.tp > 1:
        cfg["tensor_parallel"] = {"autotp_size": par.tp}
    if torch_adam:
        cfg["optimizer"]["params"]["torch_adam"] = True
        if ds.offload_optimizer != "none":
            cfg["zero_force_ds_cpu_optimizer"] = False
    return deep_merge(cfg, ds.config)


def _zero(spec: CaseSpec) -> dict[str, Any]:
    ds = spec.deepspeed
    zero: dict[str, Any] = {"stage": ds.zero_stage}
    for knob in _ZERO_KNOBS:
        value = getattr(ds, knob)
        if value is not None:
            zero[knob] = value
    if ds.offload_optimizer != "none":
        zero["offload_optimizer"] = _offload(ds.offload_optimizer, ds.nvme_path)
    if ds.offload_param != "none":
        zero["offload_param"] = _offload(ds.offload_param, ds.nvme_path)
    return zero


def _offload(device: str, nvme_path: str | None) -> dict[str, Any]:
    target: dict[str, Any] = {"device": device, "pin_memory": device == "cpu"}
    if device == "nvme":
        target["nvme_path"] = nvme_path
    return target


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` merged into a copy of ``base``, nested mappings merged key by key."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out
