"""Step time, tokens/s and their parts, for every configuration at once.

compute  = hardware FLOPs per token (``metrics.training_flops_per_token`` plus
           ``recompute_flops_per_token``: the formulas measured MFU uses) × tokens
           of one replica ÷ (tp · pp · sustained FLOP/s per GPU)
bubble   = compute × (pp − 1) / micro-batches per step (1F1B schedule,
           Narayanan et al. 2021)
dp comm  = bytes each GPU sends in the data-parallel collectives ÷ link bandwidth:
           ring all-reduce of the gradients 2(N−1)/N·Ψ (ZeRO-0), reduce-scatter
           plus all-gather (ZeRO-1, and ZeRO-2 which reduces every micro-batch),
           and ZeRO-3's gather for forward and for backward plus the
           reduce-scatter, every micro-batch: 3(N−1)/N·Ψ (Rajbhandari et al.
           2020, section 7)
tp comm  = Megatron-style tensor parallelism: two all-reduces of the activations
           in forward and two in backward per layer (Shoeybi et al. 2019), two
           more when the layer is recomputed
pp comm  = activations sent forward and gradients backward between stages
offload  = gradients down and weights up over the host link plus CPU Adam
           (ZeRO-Offload); with parameter offload, weights come up for forward
           and for backward
step     = compute + bubble + every communication, except ZeRO-3's gathers,
           which DeepSpeed overlaps with compute by default (overlap_comm)

Bandwidths come from the GPU table (per-GPU NVLink/PCIe peer bandwidth, both
directions, halved to one direction) and the stated assumptions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from llmbench.flops import recompute_flops_per_token, training_flops_per_token
from llmbench.plan.assumptions import Assumptions
from llmbench.plan.configs import CHECKPOINTING, Configs
from llmbench.plan.describe import ModelDescription
from llmbench.plan.memory import stage_params


@dataclass(frozen=True)
class Links:
    """Bytes per second, one direction, as collectives achieve them."""

    intra_node_bytes_s: float
    inter_node_bytes_s: float
    host_bytes_s: float
    gpus_per_node: int

    @classmethod
    def for_gpu(
        cls, interconnect_bytes_s: float, assumptions: Assumptions, gpus_per_node: int
    ) -> Links:
        eff = assumptions.link_efficiency.value
        return cls(
            intra_node_bytes_s=interconnect_bytes_s / 2 * eff,
            inter_node_bytes_s=assumptions.inter_node_bytes_s.value * eff,
            host_bytes_s=assumptions.host_link_bytes_s.value,
            gpus_per_node=gpus_per_node,
        )


def flops_per_token(model: ModelDescription, cfg: Configs) -> tuple[np.ndarray, np.ndarray]:
    """(model FLOPs, hardware FLOPs) per token: MFU counts the first, the GPU does the second."""
    c = model.counts
    h, layers = model.dims.hidden_size, c.num_layers
    seqs = np.unique(cfg.seq_len)
    model_flops = np.zeros(len(cfg))
    hw_flops = np.zeros(len(cfg))
    for seq in seqs:
        at = cfg.seq_len == seq
        base = training_flops_per_token(c.flops_params, layers, h, int(seq))
        extra = [
            recompute_flops_per_token(c.flops_params, layers, h, int(seq), name)
            for name in CHECKPOINTING
        ]
        model_flops[at] = base
        hw_flops[at] = base + np.choose(cfg.checkpointing[at], extra)
    return model_flops, hw_flops


@dataclass(frozen=True)
class StepTime:
    """Seconds per optimizer step and its parts, one entry per configuration."""

    compute_s: np.ndarray
    bubble_s: np.ndarray
    dp_comm_s: np.ndarray
    tp_comm_s: np.ndarray
    pp_comm_s: np.ndarray
    offload_s: np.ndarray
    dp_overlapped: np.ndarray
    """the data-parallel communication runs under the compute (ZeRO-3's overlap_comm)"""
    step_s: np.ndarray
    tokens_per_step: np.ndarray
    model_flops_per_token: np.ndarray
    hw_flops_per_token: np.ndarray

    @property
    def tokens_per_s(self) -> np.ndarray:
        return self.tokens_per_step / self.step_s


def step_time(
    model: ModelDescription,
    cfg: Configs,
    sustained_flops: np.ndarray,
    links: Links,
    assumptions: Assumptions,
) -> StepTime:
    """Predicted step time; ``sustained_flops``: FLOP/s one GPU sustains while computing."""
    model_flops, hw_flops = flops_per_token(model, cfg)
    n, lp, ga = cfg.dp, cfg.lp_bytes, cfg.grad_accum
    replica_tokens = cfg.micro_batch * ga * cfg.seq_len
    compute = hw_flops * replica_tokens / (cfg.tp * cfg.pp * sustained_flops)
    bubble = compute * (cfg.pp - 1) / ga
    psi = np.maximum(stage_params(model, cfg, last=False), stage_params(model, cfg, last=True))
    spans_nodes = cfg.world_size > links.gpus_per_node
    dp_link = np.where(spans_nodes, links.inter_node_bytes_s, links.intra_node_bytes_s)
    ring = (n - 1) / n * psi * lp
    passes = np.select([cfg.zero <= 1, cfg.zero == 2], [2, ga + 1], 3 * ga)
    dp_comm = passes * ring / dp_link
    act_msg = cfg.micro_batch * cfg.seq_len * model.dims.hidden_size * lp
    allreduces = np.where(cfg.checkpointing == CHECKPOINTING.index("full"), 6, 4)
    tp_comm = np.where(
        cfg.tp > 1,
        allreduces
        * 2
        * (cfg.tp - 1)
        / cfg.tp
        * act_msg
        / links.intra_node_bytes_s
        * (model.counts.num_layers / cfg.pp)
        * ga,
        0.0,
    )
    pp_comm = np.where(cfg.pp > 1, 2 * ga * act_msg / dp_link, 0.0)
    partition = psi / n
    offload = np.where(
        cfg.offload_optimizer.astype(bool),
        2 * lp * partition / links.host_bytes_s
        + partition / assumptions.cpu_adam_params_per_s.value,
        0.0,
    ) + np.where(cfg.offload_param.astype(bool), 2 * ga * lp * partition / links.host_bytes_s, 0.0)
    overlapped = cfg.zero == 3
    step = (
        np.where(overlapped, np.maximum(compute, dp_comm), compute + dp_comm)
        + bubble
        + tp_comm
        + pp_comm
        + offload
    )
    return StepTime(
        compute_s=compute,
        bubble_s=bubble,
        dp_comm_s=dp_comm,
        tp_comm_s=tp_comm,
        pp_comm_s=pp_comm,
        offload_s=offload,
        dp_overlapped=overlapped,
        step_s=step,
        tokens_per_step=replica_tokens * n,
        model_flops_per_token=model_flops,
        hw_flops_per_token=hw_flops,
    )


def implied_sustained_flops(
    unit: StepTime, measured_step_s: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The FLOP/s per GPU that makes the model reproduce a measured step time.

    ``unit``: the prediction at 1 FLOP/s, so ``unit.compute_s`` is the hardware
    FLOPs one GPU does per step. The modelled communication is taken out of the
    measured time; when it leaves less than 10 % of it (the communication model
    overshoots), the whole step counts as compute instead. Returns (FLOP/s,
    whether communication was taken out).
    """
    flops = unit.compute_s
    stretch = 1 + unit.bubble_s / unit.compute_s
    rest = unit.tp_comm_s + unit.pp_comm_s + unit.offload_s
    compute = (measured_step_s - rest - np.where(unit.dp_overlapped, 0, unit.dp_comm_s)) / stretch
    usable = compute > 0.1 * measured_step_s
    compute = np.where(usable, compute, measured_step_s / stretch)
    return flops / compute, usable
