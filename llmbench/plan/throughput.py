"""Step time, tokens/s and their parts, for every configuration at once.

Every term is a physical cost with its own figure (defaults in ``assumptions``
and ``fitted``; the three fitted constants come from published runs, see
``published.py`` and the README's held-out table):

matmuls   = hardware matmul FLOPs ÷ (achievable matmul fraction of the GPU × dense
            peak), plus the GEMMs' own memory traffic: a (T × h) · (h × h/tp)
            product moves lp·(1/T + 1/h + tp/h)/2 bytes per FLOP, so small
            micro-batches (T = micro-batch × sequence tokens) and narrow layers
            run below peak (arithmetic intensity, roofline without overlap)
attention = the attention core's FLOPs (12·L·h·s per token, PaLM appendix B) at the
            same matmul rate (fused flash attention moves little memory)
memory    = norms, residuals, activation functions: ``elementwise_tensors``
            hidden-sized tensors read or written per token and layer, over HBM
launch    = a fixed host-side cost per layer and pass (kernel launches, Python)
bubble    = compute × (pp − 1) / micro-batches per step (1F1B, Narayanan et al. 2021)
optimizer = Adam on the GPU: bytes per parameter of the local partition over HBM
dp comm   = ZeRO-0 all-reduce, ZeRO-1 reduce-scatter + all-gather once per step,
            ZeRO-2 reduce-scatter every micro-batch, ZeRO-3 all-gather for forward,
            backward and each recompute plus reduce-scatter, every micro-batch;
            each collective costs latency + bytes / bandwidth, hierarchically
            (inside a node over NVLink, between nodes over the NIC), ring or tree
            whichever is faster. ZeRO-0/1/2 in DeepSpeed reduce in the backward
            hooks without overlap (``overlap_comm`` off by default): exposed.
            ZeRO-3 prefetches: only what exceeds the compute is exposed, plus
            every collective's latency and DeepSpeed's per-submodule hook cost
tp comm   = Megatron-style: 4 all-reduces of the activations per layer and
            micro-batch (6 with full recomputation), exposed
pp comm   = activations forward and gradients backward between stages
offload   = gradient partition down (hidden under backward where it fits), CPU
            Adam at a rate that scales with the host cores each GPU gets, and
            the updated low-precision partition back up, serially (ZeRO-Offload)
cpu ckpt  = with ``cpu_checkpointing``, every checkpointed layer input goes to the
            host in forward and back in backward over the host link, exposed:
            DeepSpeed copies with blocking ``.cpu()`` / ``.to(device)`` calls
            (runtime/activation_checkpointing/checkpointing.py)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from llmbench.flops import recompute_flops_per_token, training_flops_per_token
from llmbench.plan.assumptions import Assumptions
from llmbench.plan.configs import CHECKPOINTING, Configs
from llmbench.plan.describe import ModelDescription
from llmbench.plan.memory import stage_params

FULL = CHECKPOINTING.index("full")


@dataclass(frozen=True)
class Links:
    """Bytes per second (one direction, as collectives achieve them) and latencies."""

    intra_node_bytes_s: float
    inter_node_bytes_s: float
    host_bytes_s: float
    gpus_per_node: int
    intra_node_latency_s: float = 0.0
    inter_node_latency_s: float = 0.0

    @classmethod
    def for_gpu(
        cls,
        interconnect_bytes_s: float,
        assumptions: Assumptions,
        gpus_per_node: int,
        host_bytes_s: float | None = None,
        inter_node_bytes_s: float | None = None,
    ) -> Links:
        eff = assumptions.link_efficiency.value
        inter = inter_node_bytes_s or assumptions.inter_node_bytes_s.value
        return cls(
            intra_node_bytes_s=interconnect_bytes_s / 2 * eff,
            inter_node_bytes_s=inter * eff,
            host_bytes_s=(host_bytes_s or assumptions.host_link_bytes_s.value) * eff,
            gpus_per_node=gpus_per_node,
            intra_node_latency_s=assumptions.intra_node_latency_s.value,
            inter_node_latency_s=assumptions.inter_node_latency_s.value,
        )


@dataclass(frozen=True)
class Device:
    """What one GPU (or, for measured CPU runs, one rank) brings to the step time."""

    peak_flops: np.ndarray
    """dense FLOP/s per configuration (its precision); for CPUs the measured FLOP/s"""
    memory_bytes_s: float
    links: Links
    host_cores_per_node: float = 0.0
    pure_compute: bool = False
    """a CPU rank: only FLOPs at the measured rate, no GPU-specific term"""


@dataclass(frozen=True)
class Shape:
    """The model as the step-time model sees it: scalars or one entry per configuration."""

    layers: int
    hidden: int
    vocab: int
    flops_params: float
    """N of the 6·N rule: weights in matmuls, a tied head once"""
    stage_params: np.ndarray
    """parameters one GPU holds before ZeRO partitioning (its pipeline stage / tp)"""
    modules_per_layer: int
    """parametrised submodules of a block: DeepSpeed ZeRO-3 runs hooks on each"""

    @classmethod
    def of(cls, model: ModelDescription, cfg: Configs) -> Shape:
        psi = np.maximum(stage_params(model, cfg, last=False), stage_params(model, cfg, last=True))
        modules = 9 if model.family == "llama" else 6 if model.family == "gpt2" else 8
        return cls(
            layers=model.counts.num_layers,
            hidden=model.dims.hidden_size,
            vocab=model.dims.vocab_size,
            flops_params=model.counts.flops_params,
            stage_params=psi,
            modules_per_layer=modules,
        )


@dataclass(frozen=True)
class Stack:
    """How the training code runs: what the published runs differ in from llmbench's own."""

    zero3_hook_s: float
    """host time per ZeRO-3 submodule and pass (DeepSpeed's fetch/release hooks)"""
    dp_overlapped: bool
    """the data-parallel reduction runs under the backward pass"""
    per_submodule_gathers: bool = True
    """ZeRO-3 gathers each parametrised submodule on its own (DeepSpeed), not each block (FSDP)"""


def flops_per_token(shape: Shape, cfg: Configs) -> tuple[np.ndarray, np.ndarray]:
    """(model FLOPs, hardware FLOPs) per token: MFU counts the first, the GPU does the second."""
    model_flops = np.zeros(len(cfg))
    hw_flops = np.zeros(len(cfg))
    for seq in np.unique(cfg.seq_len):
        at = cfg.seq_len == seq
        args = (shape.flops_params, shape.layers, shape.hidden, int(seq))
        base = training_flops_per_token(*args)
        extra = [recompute_flops_per_token(*args, name) for name in CHECKPOINTING]
        model_flops[at] = base
        hw_flops[at] = base + np.choose(cfg.checkpointing[at], extra)
    return model_flops, hw_flops


def _collective(bytes_, n, bw, latency, all_reduce: bool):
    """One ring (or, for all-reduce, tree where faster) collective over n ranks of one link."""
    n = np.maximum(n, 1)
    steps = n - 1
    ring = steps * latency + steps / n * bytes_ / bw
    if not all_reduce:
        return np.where(n > 1, ring, 0.0)
    ring = 2 * ring
    tree = 2 * np.ceil(np.log2(n)) * latency + 2 * bytes_ / bw
    return np.where(n > 1, np.minimum(ring, tree), 0.0)


def collective_s(bytes_, n, local, links: Links, all_reduce: bool = False):
    """Hierarchical collective: inside each node over NVLink, then between nodes over the NIC.

    ``bytes_``: the full buffer (an all-gather's output, a reduce-scatter's input);
    ``local``: ranks of the group on one node.
    """
    nodes = n / local
    inner = _collective(
        bytes_, local, links.intra_node_bytes_s, links.intra_node_latency_s, all_reduce
    )
    outer = _collective(
        bytes_ / local, nodes, links.inter_node_bytes_s, links.inter_node_latency_s, all_reduce
    )
    return inner + outer


@dataclass(frozen=True)
class StepTime:
    """Seconds per optimizer step and its parts, one entry per configuration."""

    compute_s: np.ndarray
    bubble_s: np.ndarray
    optimizer_s: np.ndarray
    dp_comm_s: np.ndarray
    """exposed data-parallel communication (after overlap)"""
    tp_comm_s: np.ndarray
    pp_comm_s: np.ndarray
    offload_s: np.ndarray
    checkpoint_transfer_s: np.ndarray
    step_s: np.ndarray
    tokens_per_step: np.ndarray
    model_flops_per_token: np.ndarray
    hw_flops_per_token: np.ndarray

    @property
    def tokens_per_s(self) -> np.ndarray:
        return self.tokens_per_step / self.step_s


def step_time(
    shape: Shape,
    cfg: Configs,
    device: Device,
    matmul_fraction,
    assumptions: Assumptions,
    stack: Stack | None = None,
) -> StepTime:
    """Predicted step time of every configuration; ``matmul_fraction``: of the dense peak."""
    stack = stack or Stack(assumptions.zero3_hook_s.value, dp_overlapped=False)
    links = device.links
    model_flops, hw_flops = flops_per_token(shape, cfg)
    n, lp, ga, mb, tp, pp = cfg.dp, cfg.lp_bytes, cfg.grad_accum, cfg.micro_batch, cfg.tp, cfg.pp
    full = cfg.checkpointing == FULL
    tokens = mb * cfg.seq_len
    local_layers = shape.layers / pp
    rate = matmul_fraction * device.peak_flops
    attention = hw_flops - np.where(full, 8.0, 6.0) * shape.flops_params
    matmul = (hw_flops - attention) * tokens / (tp * pp)
    if device.pure_compute:
        compute = hw_flops * tokens / (tp * pp) / rate * ga
    else:
        bw = device.memory_bytes_s
        per_flop = lp / 2 * (1 / tokens + 1 / shape.hidden + tp / shape.hidden) / bw
        passes = np.where(full, 4 / 3, 1.0)  # recompute reruns the forward: a third more
        elementwise = (
            assumptions.elementwise_tensors.value
            * passes
            * local_layers
            * tokens
            * shape.hidden
            * lp
            / tp
            / bw
        )
        launch = assumptions.launch_s_per_layer.value * local_layers * passes
        compute = ga * (
            matmul * (1 / rate + per_flop)
            + attention * tokens / (tp * pp) / rate
            + elementwise
            + launch
        )
    bubble = compute * (pp - 1) / ga
    psi = shape.stage_params
    partition = psi / np.where(cfg.zero >= 1, n, 1)
    off_opt = cfg.offload_optimizer.astype(bool)
    optimizer = np.where(
        off_opt | device.pure_compute,
        0.0,
        assumptions.optimizer_bytes_per_param.value * partition / device.memory_bytes_s,
    )
    # data parallel: ranks of one group on a node (tp innermost, then dp)
    local = np.clip(links.gpus_per_node // tp, 1, n)
    local = np.where(n % local == 0, local, 1)
    buffer = psi * lp

    def coll(all_reduce: bool = False):
        return collective_s(buffer, n, local, links, all_reduce)

    rs, ag, ar = coll(), coll(), coll(all_reduce=True)
    gathers = np.where(full, 3, 2)  # ZeRO-3 re-gathers for each recompute
    dp_total = np.select(
        [cfg.zero == 0, cfg.zero == 1, cfg.zero == 2],
        [ar, rs + ag, ga * rs + ag],
        ga * (gathers * ag + rs),
    )
    z3 = cfg.zero == 3
    latency_only = collective_s(0.0, n, local, links)
    per_layer = shape.modules_per_layer if stack.per_submodule_gathers else 1
    calls = per_layer * local_layers * (gathers + 1) * ga
    hooks = stack.zero3_hook_s * shape.modules_per_layer * local_layers * gathers * ga
    # communication under compute still slows it: NCCL kernels take SMs and HBM bandwidth
    contention = assumptions.overlap_contention.value
    hidden = np.minimum(dp_total, compute)
    z3_exposed = (
        np.maximum(dp_total - compute, 0) + contention * hidden + calls * latency_only + hooks
    )
    overlapped = (
        np.maximum(dp_total - compute, 0) + contention * hidden if stack.dp_overlapped else dp_total
    )
    dp_comm = np.where(z3, z3_exposed, overlapped)
    dp_comm = np.where(n > 1, dp_comm, np.where(z3, hooks, 0.0))
    act_bytes = tokens * shape.hidden * lp
    tp_link = _collective(
        act_bytes, tp, links.intra_node_bytes_s, links.intra_node_latency_s, all_reduce=True
    )
    tp_comm = np.where(full, 6, 4) * tp_link * local_layers * ga
    stage_link_bw = np.where(
        tp * pp > links.gpus_per_node, links.inter_node_bytes_s, links.intra_node_bytes_s
    )
    pp_comm = np.where(pp > 1, 2 * ga * act_bytes / tp / stage_link_bw, 0.0)
    cores = device.host_cores_per_node / np.minimum(cfg.world_size, links.gpus_per_node)
    # a CPU rank's own measured rate already holds its optimizer: no host cores to add
    adam_rate = np.where(
        cores > 0, assumptions.cpu_adam_params_per_s_per_core.value * cores, np.inf
    )
    down = partition * lp / links.host_bytes_s
    offload = np.where(
        off_opt,
        np.maximum(down - compute / 2, 0)
        + partition / adam_rate
        + partition * lp / links.host_bytes_s,
        0.0,
    ) + np.where(
        cfg.offload_param.astype(bool), gathers * ga * psi * lp / n / links.host_bytes_s, 0.0
    )
    # layer inputs (whole under TP, split with sequence parallelism) down and up once
    # per micro-batch; the first stage's in-flight micro-batches each make the trip once
    checkpoint_bytes = act_bytes / np.where(cfg.sequence_parallel.astype(bool), tp, 1)
    on_host = cfg.cpu_checkpointing.astype(bool) & full
    ckpt_transfer = np.where(
        on_host, 2 * ga * local_layers * checkpoint_bytes / links.host_bytes_s, 0.0
    )
    step = compute + bubble + optimizer + dp_comm + tp_comm + pp_comm + offload + ckpt_transfer
    return StepTime(
        compute_s=compute,
        bubble_s=bubble,
        optimizer_s=optimizer,
        dp_comm_s=dp_comm,
        tp_comm_s=tp_comm,
        pp_comm_s=pp_comm,
        offload_s=offload,
        checkpoint_transfer_s=ckpt_transfer,
        step_s=step,
        tokens_per_step=tokens * ga * n,
        model_flops_per_token=model_flops,
        hw_flops_per_token=hw_flops,
    )


def implied_fraction(
    shape: Shape,
    cfg: Configs,
    device: Device,
    assumptions: Assumptions,
    measured_step_s: np.ndarray,
    stack: Stack | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The matmul fraction that makes the model reproduce a measured step time.

    The step time falls monotonically as the fraction grows, so bisection in
    log space finds it (for a CPU rank, whose ``peak_flops`` is 1, the
    fraction is the FLOP/s itself). Returns (fraction, whether it was found
    inside the search range: a step slower than everything else modelled
    leaves no room for compute and returns the lower bound).
    """
    lo = np.full(len(cfg), np.log(1e-6))
    hi = np.full(len(cfg), np.log(1e18))
    for _ in range(60):
        mid = (lo + hi) / 2
        slow = (
            step_time(shape, cfg, device, np.exp(mid), assumptions, stack).step_s > measured_step_s
        )
        lo = np.where(slow, mid, lo)
        hi = np.where(slow, hi, mid)
    found = (lo > np.log(1e-6) + 1e-9) & (hi < np.log(1e18) - 1e-9)
    return np.exp((lo + hi) / 2), found
